//! Shoal's main demo: two nodes on loopback complete a secure handshake and
//! echo data over many multiplexed streams, printing what happens.
//!
//! ```sh
//! cargo run --release -p shoal-examples --bin demo
//! cargo run --release -p shoal-examples --bin demo -- --streams 64 --kib 4096
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use shoal_identity::{Keypair, PeerId};
use shoal_transport::{Listener, ListenerExt, Multiaddr, TcpTransport, Transport};
use shoal_yamux::{Control, Driver, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug)]
#[command(about = "Two Shoal nodes on loopback: secure handshake, then many echoed streams")]
struct Args {
    /// Number of concurrent streams.
    #[arg(long, default_value_t = 32)]
    streams: usize,
    /// KiB echoed on each stream.
    #[arg(long, default_value_t = 1024)]
    kib: usize,
    /// Address node A listens on.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Multiaddr,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let transport = TcpTransport::default();

    // Node A: an identity, a listener, and an accept loop that echoes every
    // stream of every connection.
    let a_key = Keypair::generate();
    let a_id = a_key.peer_id();
    let mut listener = transport.listen(&args.listen).await?;
    let a_addr = listener.local_addr().with_peer_id(a_id);
    println!("node A  {a_id}");
    println!("        listening on {a_addr}");
    let a_secio = shoal_secio::Config::new(a_key);
    tokio::spawn(async move {
        while let Ok(inbound) = listener.accept().await {
            let secio = a_secio.clone();
            tokio::spawn(async move {
                match shoal_secio::handshake_inbound(inbound.connection, &secio).await {
                    Ok(secure) => {
                        println!(
                            "node A  accepted {} from {}",
                            secure.remote_peer(),
                            inbound.remote_addr
                        );
                        serve_echo(secure).await;
                    }
                    Err(e) => println!(
                        "node A  refused a connection from {}: {e}",
                        inbound.remote_addr
                    ),
                }
            });
        }
    });

    // Node B dials A, insisting on A's peer id.
    let b_key = Keypair::generate();
    println!("node B  {}", b_key.peer_id());
    let b_secio = shoal_secio::Config::new(b_key);
    let started = Instant::now();
    let connection = transport.dial(&a_addr).await?;
    let secure = shoal_secio::handshake_outbound(connection, &b_secio, a_addr.peer_id()).await?;
    println!(
        "node B  secure channel to {} in {:.2} ms ({})",
        secure.remote_peer(),
        ms(started.elapsed()),
        secure.cipher_suite().noise_name()
    );
    let (driver, control) = Driver::new(secure, shoal_yamux::Config::default(), Mode::Client);
    let driver = tokio::spawn(driver);

    // Many streams at once, every byte checked on the way back.
    let bytes = args.kib * 1024;
    println!(
        "node B  opening {} streams, echoing {} KiB on each",
        args.streams, args.kib
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..args.streams {
        let control = control.clone();
        tasks.push(tokio::spawn(async move {
            echo_stream(&control, n as u8, bytes).await
        }));
    }
    for (n, task) in tasks.into_iter().enumerate() {
        let took = task.await??;
        if n < 4 || n + 1 == args.streams {
            println!(
                "        stream {n:>3}: {} KiB echoed and verified in {:.1} ms",
                args.kib,
                ms(took)
            );
        } else if n == 4 {
            println!("        ...");
        }
    }
    let elapsed = started.elapsed();
    let total_mib = (bytes * args.streams) as f64 / (1024.0 * 1024.0);
    println!(
        "node B  {} streams, {total_mib:.0} MiB each way, all verified in {:.0} ms ({:.0} MiB/s each way)",
        args.streams,
        ms(elapsed),
        total_mib / elapsed.as_secs_f64()
    );
    println!("        live streams now: {}", control.num_streams());

    // Whoever dials a known peer id and meets another key aborts.
    let wrong: PeerId = Keypair::generate().peer_id();
    let connection = transport.dial(&a_addr).await?;
    match shoal_secio::handshake_outbound(connection, &b_secio, Some(wrong)).await {
        Ok(_) => return Err("a dial expecting the wrong peer id succeeded".into()),
        Err(e) => println!("node B  dial expecting the wrong peer id was refused: {e}"),
    }

    control.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    println!("done");
    Ok(())
}

/// Echoes every inbound stream of one connection until it closes.
async fn serve_echo<T>(secure: T)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (driver, control) = Driver::new(secure, shoal_yamux::Config::default(), Mode::Server);
    tokio::spawn(driver);
    while let Ok(stream) = control.accept_stream().await {
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(stream);
            if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                let _ = w.shutdown().await;
            }
        });
    }
}

/// Writes `len` bytes derived from `seed` on a new stream while reading the
/// echo, and checks every byte.
async fn echo_stream(control: &Control, seed: u8, len: usize) -> Result<Duration, Error> {
    let started = Instant::now();
    let stream = control.open_stream().await?;
    let (mut r, mut w) = tokio::io::split(stream);
    let byte = move |i: usize| (i as u8).wrapping_mul(31).wrapping_add(seed);
    let writer = async move {
        let chunk: Vec<u8> = (0..64 * 1024).map(byte).collect();
        let mut sent = 0;
        while sent < len {
            let n = (len - sent).min(chunk.len());
            w.write_all(&chunk[..n]).await?;
            sent += n;
        }
        w.shutdown().await?;
        Ok::<_, Error>(())
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            // The pattern repeats every 64 KiB and chunk boundaries line up
            // with it, so offsets modulo 64 KiB index the expected bytes.
            for (k, b) in buf[..n].iter().enumerate() {
                if *b != byte((got + k) % (64 * 1024)) {
                    return Err(format!("stream {seed}: wrong byte at offset {}", got + k).into());
                }
            }
            got += n;
        }
        if got != len {
            return Err(format!("stream {seed}: {got} bytes back, expected {len}").into());
        }
        Ok::<_, Error>(())
    };
    let (w, r) = tokio::join!(writer, reader);
    w?;
    r?;
    Ok(started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
