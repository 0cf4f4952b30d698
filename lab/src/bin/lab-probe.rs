//! A tiny TCP probe for the lab's own tests.
//!
//! ```text
//! lab-probe serve <port>
//!     prints "listening <addr>", then answers every connection with the
//!     remote address it sees, one line, and reads until the client is done.
//! lab-probe connect <ip:port> [--local-port P] [--timeout-ms T] [--send BYTES]
//!     connects (from local port P with SO_REUSEADDR, if given), sends BYTES
//!     zero bytes, and prints "observed=<addr> connect_ms=<ms> total_ms=<ms>";
//!     on failure prints why on stderr and exits 1 (2 for bad usage).
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// Connections a server handles at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 64;
/// How long a server waits on a silent client.
const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound on connecting and on each read or write of a client.
const DEFAULT_TIMEOUT_MS: u64 = 3000;
/// Longest answer line a client accepts.
const MAX_LINE: u64 = 256;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("connect") => connect(&args[1..]),
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("lab-probe: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Net(msg)) => {
            eprintln!("lab-probe: {msg}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(String),
    Net(String),
}

fn usage() -> Failure {
    Failure::Usage(
        "usage: lab-probe serve <port> | connect <ip:port> [--local-port P] [--timeout-ms T] [--send BYTES]"
            .into(),
    )
}

fn parse<T: std::str::FromStr>(value: Option<&String>, what: &str) -> Result<T, Failure> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Failure::Usage(format!("bad or missing {what}")))
}

fn serve(args: &[String]) -> Result<(), Failure> {
    let port: u16 = parse(args.first(), "port")?;
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
        .map_err(|e| Failure::Net(format!("bind port {port}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::Net(e.to_string()))?;
    println!("listening {addr}");
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::Relaxed);
            continue;
        }
        let active = active.clone();
        std::thread::spawn(move || {
            let _ = answer(stream);
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
    Ok(())
}

/// Writes the peer's address, then drains what the client sends.
fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    stream.set_read_timeout(Some(SERVER_READ_TIMEOUT))?;
    stream.write_all(format!("{peer}\n").as_bytes())?;
    std::io::copy(&mut stream, &mut std::io::sink())?;
    Ok(())
}

fn connect(args: &[String]) -> Result<(), Failure> {
    let target: SocketAddrV4 = parse(args.first(), "ip:port")?;
    let (mut local_port, mut timeout_ms, mut send) = (None, DEFAULT_TIMEOUT_MS, 0u64);
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--local-port" => local_port = Some(parse::<u16>(rest.next(), "local port")?),
            "--timeout-ms" => timeout_ms = parse(rest.next(), "timeout")?,
            "--send" => send = parse(rest.next(), "byte count")?,
            _ => return Err(usage()),
        }
    }
    let timeout = Duration::from_millis(timeout_ms.max(1));
    let net =
        |what: &'static str| move |e: std::io::Error| Failure::Net(format!("{what} {target}: {e}"));
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(net("socket for"))?;
    if let Some(port) = local_port {
        socket
            .set_reuse_address(true)
            .map_err(net("SO_REUSEADDR for"))?;
        let local = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        socket
            .bind(&local.into())
            .map_err(net("bind local port for"))?;
    }
    let start = Instant::now();
    socket
        .connect_timeout(&SocketAddr::V4(target).into(), timeout)
        .map_err(net("connect to"))?;
    let connect_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut stream = TcpStream::from(socket);
    stream
        .set_read_timeout(Some(timeout))
        .map_err(net("set timeout for"))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(net("set timeout for"))?;
    let chunk = [0u8; 64 * 1024];
    let mut left = send;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        stream.write_all(&chunk[..n]).map_err(net("send to"))?;
        left -= n as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(net("shutdown to"))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_LINE))
        .read_line(&mut line)
        .map_err(net("read from"))?;
    // Wait for the server's close, so total_ms covers the whole transfer.
    std::io::copy(&mut stream, &mut std::io::sink()).map_err(net("read from"))?;
    let observed = line.trim();
    if observed.is_empty() {
        return Err(Failure::Net(format!("{target} closed without answering")));
    }
    let total_ms = start.elapsed().as_secs_f64() * 1e3;
    println!("observed={observed} connect_ms={connect_ms:.2} total_ms={total_ms:.2}");
    Ok(())
}
