//! One relay process's capacity: how many reservations it holds, what
//! each costs it in memory, and how many relayed 1 KiB messages per
//! second it forwards.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin relay_capacity -- --help
//! ```
//!
//! The bench starts itself again as the relay (a process of its own, a
//! `shoal-relay` server on TCP loopback), then opens light clients from
//! this process: each a real connection (TCP, secio, yamux, negotiation)
//! that reserves with a real `Reserve`. Every client comes from 127.0.0.1,
//! so the relay's per-network limits are raised for the run. Then pairs
//! of clients talk through circuits: one reserved client echoes, a fresh
//! client asks for a circuit to it and sends 1 KiB messages, one at a time
//! per circuit, for the measured time. The two ends exchange raw bytes
//! (the relay forwards what it gets; end-to-end secio would only add the
//! clients' own cost). For comparison, the same echo runs over direct
//! connections, in the same run.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Parser;
use shoal::{ProtocolId, ServiceBuilder, negotiation};
use shoal_identity::{Keypair, PeerId};
use shoal_relay::protocol::{HopMessage, StatusCode, StopMessage};
use shoal_relay::{Config, Limits, Relay};
use shoal_transport::{Multiaddr, TcpTransport, Transport};
use shoal_yamux::{Control, Driver, Mode, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug)]
#[command(about = "Reservations and relayed 1 KiB messages per second of one relay process")]
struct Args {
    /// Reservations to make.
    #[arg(long, default_value_t = 5_000)]
    reservations: usize,
    /// Circuits carrying messages at once.
    #[arg(long, default_value_t = 64)]
    circuits: usize,
    /// Seconds of messages.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Size of each message.
    #[arg(long, default_value_t = 1024)]
    message: usize,
    /// Internal: run as the relay process.
    #[arg(long, hide = true)]
    relay: bool,
}

const HOP: ProtocolId = ProtocolId(20);
const STOP: ProtocolId = ProtocolId(21);
/// Reservations being made at once.
const CONCURRENT_SETUPS: usize = 64;

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if args.relay {
        runtime.block_on(relay_process(&args));
    } else {
        runtime.block_on(bench(&args));
    }
}

/// The relay: prints its address and peer id, serves until stdin closes.
async fn relay_process(args: &Args) {
    let limits = Limits {
        max_reservations: args.reservations + 1_000,
        // Every client of the bench comes from 127.0.0.1.
        max_reservations_per_network: args.reservations + 1_000,
        max_circuits: args.circuits * 2 + 16,
        max_circuits_per_network: args.circuits * 2 + 16,
        circuit_bytes: u64::MAX,
        ..Limits::default()
    };
    let mut relay = Relay::new(
        HOP,
        STOP,
        Config {
            serve: Some(limits),
            ..Config::default()
        },
    );
    let config = shoal::config::Config {
        max_inbound_sessions: args.reservations + args.circuits * 2 + 100,
        max_inbound_per_ip: usize::MAX,
        max_inbound_per_subnet: usize::MAX,
        max_handshakes_per_ip: 1_000,
        handshake_rate_per_ip: 100_000,
        ..shoal::config::Config::default()
    };
    let service = relay
        .install(ServiceBuilder::new(Keypair::generate()).transport(TcpTransport::default()))
        .config(config)
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    let addr = control
        .listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    let _handle = relay.start(control.clone()).await;
    println!("{addr} {}", control.local_peer_id());
    // Until the parent closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    })
    .await
    .unwrap();
}

/// A client connection to the relay: secure, multiplexed.
struct Client {
    key: PeerId,
    control: Control,
    _driver: tokio::task::JoinHandle<()>,
}

async fn connect(addr: &Multiaddr, relay: PeerId) -> std::io::Result<Client> {
    let keypair = Keypair::generate();
    let key = keypair.peer_id();
    let conn = TcpTransport::default()
        .dial(addr)
        .await
        .map_err(std::io::Error::other)?;
    let secure =
        shoal_secio::handshake_outbound(conn, &shoal_secio::Config::new(keypair), Some(relay))
            .await
            .map_err(std::io::Error::other)?;
    let (driver, control) = Driver::new(secure, shoal_yamux::Config::default(), Mode::Client);
    let driver = tokio::spawn(async move {
        let _ = driver.await;
    });
    Ok(Client {
        key,
        control,
        _driver: driver,
    })
}

/// Sends one negotiation message.
async fn send_negotiation(
    stream: &mut Stream,
    message: &negotiation::Message,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    message.encode(&mut out);
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Reads one negotiation message, byte by byte (it is short): nothing past
/// it is taken from the stream.
async fn read_negotiation(stream: &mut Stream) -> std::io::Result<negotiation::Message> {
    let mut buf = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        buf.push(byte[0]);
        match negotiation::decode_frame(&buf) {
            Ok(Some((message, _))) => return Ok(message),
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::other(e)),
        }
        if buf.len() > 2048 {
            return Err(std::io::Error::other("negotiation message too long"));
        }
    }
}

/// Opens a hop stream on `client`.
async fn hop_stream(client: &Client) -> std::io::Result<Stream> {
    let mut stream = client
        .control
        .open_stream()
        .await
        .map_err(std::io::Error::other)?;
    let propose = negotiation::Message::Propose {
        name: shoal_relay::HOP_PROTOCOL.to_owned(),
        versions: vec![1],
    };
    send_negotiation(&mut stream, &propose).await?;
    match read_negotiation(&mut stream).await? {
        negotiation::Message::Accept { .. } => Ok(stream),
        other => Err(std::io::Error::other(format!("hop refused: {other:?}"))),
    }
}

/// Reserves; the stream stays open with the client, as a reservation does.
async fn reserve(addr: &Multiaddr, relay: PeerId) -> std::io::Result<(Client, Stream)> {
    let client = connect(addr, relay).await?;
    let mut stream = hop_stream(&client).await?;
    HopMessage::Reserve.write(&mut stream).await?;
    match HopMessage::read(&mut stream).await {
        Ok(HopMessage::Status(s)) if s.code == StatusCode::Ok => Ok((client, stream)),
        other => Err(std::io::Error::other(format!("reservation: {other:?}"))),
    }
}

/// Accepts the relay's stop streams on `client` and echoes each circuit.
fn echo_circuits(client: &Client) {
    let control = client.control.clone();
    tokio::spawn(async move {
        while let Ok(mut stream) = control.accept_stream().await {
            tokio::spawn(async move {
                let Ok(negotiation::Message::Propose { .. }) = read_negotiation(&mut stream).await
                else {
                    return;
                };
                let accept = negotiation::Message::Accept { version: 1 };
                if send_negotiation(&mut stream, &accept).await.is_err() {
                    return;
                }
                if !matches!(
                    StopMessage::read(&mut stream).await,
                    Ok(StopMessage::Incoming { .. })
                ) {
                    return;
                }
                let ok = StopMessage::Status(shoal_relay::protocol::Status::new(StatusCode::Ok));
                if ok.write(&mut stream).await.is_err() {
                    return;
                }
                echo(stream).await;
            });
        }
    });
}

async fn echo(mut stream: impl AsyncReadExt + AsyncWriteExt + Unpin) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 || stream.write_all(&buf[..n]).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

/// Sends `size`-byte messages one at a time and counts the echoes, until
/// `end`.
async fn ping_pong(
    mut stream: impl AsyncReadExt + AsyncWriteExt + Unpin,
    size: usize,
    end: Instant,
    count: Arc<AtomicU64>,
) {
    let message = vec![0x5a; size];
    let mut back = vec![0u8; size];
    while Instant::now() < end {
        if stream.write_all(&message).await.is_err()
            || stream.flush().await.is_err()
            || stream.read_exact(&mut back).await.is_err()
        {
            return;
        }
        count.fetch_add(1, Ordering::Relaxed);
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn bench(args: &Args) {
    let want = (args.reservations + args.circuits * 2 + 1_000) as u64;
    if let Ok((soft, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        && soft < want
    {
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, want.min(hard), hard);
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--relay", "--reservations", &args.reservations.to_string()])
        .args(["--circuits", &args.circuits.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut parts = line.split_whitespace();
    let addr: Multiaddr = parts.next().unwrap().parse().unwrap();
    let relay: PeerId = parts.next().unwrap().parse().unwrap();
    let pid = child.id();
    let rss_before = rss_kib(pid);

    // Reservations.
    let started = Instant::now();
    let mut held = Vec::with_capacity(args.reservations);
    let mut failures = 0usize;
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut next = 0;
    while held.len() + failures < args.reservations {
        while next < args.reservations && pending.len() < CONCURRENT_SETUPS {
            let addr = addr.clone();
            pending.push(tokio::spawn(async move { reserve(&addr, relay).await }));
            next += 1;
        }
        match futures::StreamExt::next(&mut pending).await {
            Some(Ok(Ok(reserved))) => held.push(reserved),
            Some(_) => failures += 1,
            None => break,
        }
    }
    let setup = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib(pid);
    println!(
        "reservations: {} held, {} failed, in {:.1} s ({:.0}/s); relay RSS {} MiB -> {} MiB ({:.1} KiB per reservation)",
        held.len(),
        failures,
        setup.as_secs_f64(),
        held.len() as f64 / setup.as_secs_f64(),
        rss_before / 1024,
        rss_after / 1024,
        (rss_after.saturating_sub(rss_before)) as f64 / held.len().max(1) as f64,
    );

    // Relayed messages.
    let seconds = Duration::from_secs_f64(args.seconds);
    let circuits = args.circuits.min(held.len());
    for (client, _) in &held[..circuits] {
        echo_circuits(client);
    }
    let relayed = Arc::new(AtomicU64::new(0));
    let mut dialers = Vec::new();
    for (target, _) in &held[..circuits] {
        let client = connect(&addr, relay).await.unwrap();
        let mut stream = hop_stream(&client).await.unwrap();
        HopMessage::Connect(target.key)
            .write(&mut stream)
            .await
            .unwrap();
        match HopMessage::read(&mut stream).await {
            Ok(HopMessage::Status(s)) if s.code == StatusCode::Ok => {}
            other => panic!("circuit refused: {other:?}"),
        }
        dialers.push((client, stream));
    }
    let end = Instant::now() + seconds;
    let tasks: Vec<_> = dialers
        .into_iter()
        .map(|(client, stream)| {
            let count = relayed.clone();
            let size = args.message;
            tokio::spawn(async move {
                let _client = client;
                ping_pong(stream, size, end, count).await;
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let round_trips = relayed.load(Ordering::Relaxed);
    let relayed_rate = (round_trips * 2) as f64 / seconds.as_secs_f64();

    // The same over direct connections, for comparison.
    let direct = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let _ = sock.set_nodelay(true);
            tokio::spawn(echo(sock));
        }
    });
    let end = Instant::now() + seconds;
    let tasks: Vec<_> = (0..circuits)
        .map(|_| {
            let count = direct.clone();
            let size = args.message;
            tokio::spawn(async move {
                let sock = tokio::net::TcpStream::connect(local).await.unwrap();
                let _ = sock.set_nodelay(true);
                ping_pong(sock, size, end, count).await;
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let direct_rate = (direct.load(Ordering::Relaxed) * 2) as f64 / seconds.as_secs_f64();
    println!(
        "relayed {} B messages: {:.0}/s over {circuits} circuits (each round trip is two); \
         raw TCP echo in this process: {:.0}/s; ratio {:.2}",
        args.message,
        relayed_rate,
        direct_rate,
        relayed_rate / direct_rate.max(1.0)
    );
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::io::stdout().flush();
}
