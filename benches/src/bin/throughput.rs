//! Whole-process throughput on loopback, all figures from one run (the
//! transfers as the median, minimum and maximum of interleaved rounds):
//! raw TCP, TCP+secio, TCP+secio+yamux with 1 and N streams, the one-core
//! throughput of the AEAD in use, the resulting bound
//! `B = 1 / (1/T + 1/C)`, CPU seconds per GiB, and the time to set up a
//! secure multiplexed connection.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin throughput -- --help
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use shoal_benches::{
    GIB, MIB,
    aead::{self, AeadThroughput, Backend},
    pump::{self, Transfer},
};
use shoal_identity::Keypair;
use shoal_secio::CipherSuite;
use shoal_transport::{Listener, ListenerExt, TcpTransport, Transport};
use shoal_yamux::{Control, Driver, Mode};
use snow::params::CipherChoice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug)]
#[command(about = "Loopback throughput of raw TCP, secio and secio+yamux")]
struct Args {
    /// MiB transferred per scenario.
    #[arg(long, default_value_t = 2048)]
    mib: usize,
    /// Application write (and read) size in KiB.
    #[arg(long, default_value_t = 64)]
    write_kib: usize,
    /// Number of concurrent streams in the multi-stream scenario.
    #[arg(long, default_value_t = 64)]
    streams: usize,
    /// Cipher suite: aes (AES-256-GCM), chacha (ChaCha20-Poly1305) or auto
    /// (the default preference: AES-GCM where the CPU has AES instructions).
    #[arg(long, default_value = "auto")]
    cipher: String,
    /// Connections set up for the setup-latency figure.
    #[arg(long, default_value_t = 200)]
    setups: usize,
    /// Rounds of the transfers: each round runs every scenario once, so
    /// the scenarios' runs are interleaved; the median, minimum and
    /// maximum over the rounds are reported.
    #[arg(long, default_value_t = 8)]
    runs: usize,
    /// Run only this transfer scenario (for profiling): tcp, secio, yamux1
    /// or yamuxN. Skips the AEAD, bound and setup sections.
    #[arg(long)]
    only: Option<String>,
}

/// Runs a single scenario and prints its row.
async fn run_only(args: &Args, suite: CipherSuite, which: &str) -> std::io::Result<()> {
    let (total, io_size) = (args.mib * MIB, args.write_kib * 1024);
    let mut runs = Runs::default();
    for _ in 0..args.runs.max(1) {
        runs.0.push(match which {
            "tcp" => raw_tcp(total, io_size).await?,
            "secio" => secio(total, io_size, suite).await?,
            "yamux1" => yamux(total, io_size, 1, suite).await?,
            "yamuxN" => yamux(total, io_size, args.streams, suite).await?,
            other => return Err(std::io::Error::other(format!("unknown scenario {other}"))),
        });
    }
    // Per run: the rate, and how many cores the process kept busy (CPU
    // time over wall time), which tells a run whose two ends shared one
    // core from one where they ran side by side.
    for (i, t) in runs.0.iter().enumerate() {
        println!(
            "run {:>2}: {:>6.0} MiB/s, {:.2} cores busy",
            i + 1,
            t.mib_per_sec(),
            t.cpu.as_secs_f64() / t.elapsed.as_secs_f64()
        );
    }
    header();
    row(which, &runs);
    Ok(())
}

fn suite_from(name: &str) -> Result<CipherSuite, String> {
    match name {
        "aes" => Ok(CipherSuite::AesGcm),
        "chacha" => Ok(CipherSuite::ChaChaPoly),
        "auto" => CipherSuite::default_preference()
            .first()
            .copied()
            .ok_or_else(|| "no cipher suite available".to_string()),
        other => Err(format!("unknown cipher '{other}' (aes, chacha, auto)")),
    }
}

fn cipher_choice(suite: CipherSuite) -> CipherChoice {
    match suite {
        CipherSuite::AesGcm => CipherChoice::AESGCM,
        CipherSuite::ChaChaPoly => CipherChoice::ChaChaPoly,
    }
}

type Conn = tokio::net::TcpStream;

/// A TCP transport and a listener on a free loopback port.
async fn loopback_listener() -> std::io::Result<(TcpTransport, shoal_transport::TcpListener)> {
    let transport = TcpTransport::default();
    let listen = "/ip4/127.0.0.1/tcp/0"
        .parse()
        .map_err(std::io::Error::other)?;
    let listener = transport
        .listen(&listen)
        .await
        .map_err(std::io::Error::other)?;
    Ok((transport, listener))
}

/// A connected TCP pair on loopback: (dialer side, listener side).
async fn tcp_pair() -> std::io::Result<(Conn, Conn)> {
    let (transport, mut listener) = loopback_listener().await?;
    let addr = listener.local_addr().clone();
    let (dialed, accepted) = tokio::join!(transport.dial(&addr), listener.accept());
    Ok((
        dialed.map_err(std::io::Error::other)?,
        accepted.map_err(std::io::Error::other)?.connection,
    ))
}

fn secio_configs(suite: CipherSuite) -> (shoal_secio::Config, shoal_secio::Config) {
    (
        shoal_secio::Config::new(Keypair::generate()).with_suites([suite]),
        shoal_secio::Config::new(Keypair::generate()).with_suites([suite]),
    )
}

async fn secure_pair(
    suite: CipherSuite,
) -> std::io::Result<(
    shoal_secio::SecureStream<Conn>,
    shoal_secio::SecureStream<Conn>,
)> {
    let (a, b) = tcp_pair().await?;
    let (ca, cb) = secio_configs(suite);
    let (sa, sb) = tokio::join!(
        shoal_secio::handshake_outbound(a, &ca, Some(cb.local_peer_id())),
        shoal_secio::handshake_inbound(b, &cb)
    );
    Ok((
        sa.map_err(std::io::Error::other)?,
        sb.map_err(std::io::Error::other)?,
    ))
}

/// Sends `total` bytes from `a` to `b` and times it.
async fn one_way<A, B>(a: A, b: B, total: usize, io_size: usize) -> std::io::Result<Transfer>
where
    A: tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: tokio::io::AsyncRead + Unpin,
{
    pump::timed(total, async move {
        let sender = tokio::spawn(pump::send(a, total, io_size));
        let received = pump::receive(b, io_size).await?;
        sender.await.map_err(std::io::Error::other)??;
        Ok(received)
    })
    .await
}

async fn raw_tcp(total: usize, io_size: usize) -> std::io::Result<Transfer> {
    let (a, b) = tcp_pair().await?;
    one_way(a, b, total, io_size).await
}

async fn secio(total: usize, io_size: usize, suite: CipherSuite) -> std::io::Result<Transfer> {
    let (a, b) = secure_pair(suite).await?;
    one_way(a, b, total, io_size).await
}

/// A secure multiplexed connection pair: (client control, server control).
async fn muxed_pair(suite: CipherSuite) -> std::io::Result<(Control, Control)> {
    let (a, b) = secure_pair(suite).await?;
    let config = shoal_yamux::Config::default();
    let (da, ca) = Driver::new(a, config.clone(), Mode::Client);
    let (db, cb) = Driver::new(b, config, Mode::Server);
    tokio::spawn(da);
    tokio::spawn(db);
    Ok((ca, cb))
}

/// `streams` concurrent streams over one connection, `total` bytes in all.
async fn yamux(
    total: usize,
    io_size: usize,
    streams: usize,
    suite: CipherSuite,
) -> std::io::Result<Transfer> {
    let (client, server) = muxed_pair(suite).await?;
    let per_stream = total / streams;
    let total = per_stream * streams;
    pump::timed(total, async move {
        let receiver = tokio::spawn(async move {
            let mut readers = Vec::with_capacity(streams);
            for _ in 0..streams {
                let stream = server
                    .accept_stream()
                    .await
                    .map_err(std::io::Error::other)?;
                readers.push(tokio::spawn(pump::receive(stream, io_size)));
            }
            let mut received = 0;
            for r in readers {
                received += r.await.map_err(std::io::Error::other)??;
            }
            Ok::<usize, std::io::Error>(received)
        });
        let mut writers = Vec::with_capacity(streams);
        for _ in 0..streams {
            let stream = client.open_stream().await.map_err(std::io::Error::other)?;
            writers.push(tokio::spawn(pump::send(stream, per_stream, io_size)));
        }
        for w in writers {
            w.await.map_err(std::io::Error::other)??;
        }
        receiver.await.map_err(std::io::Error::other)?
    })
    .await
}

/// Connection setup timings, each sorted.
struct Setup {
    /// Dial to secure channel (TCP connect + secio handshake).
    secure: Vec<Duration>,
    /// Dial to first usable stream: the above, then yamux, one stream opened
    /// and a byte echoed through it.
    total: Vec<Duration>,
}

/// Measures `count` connection setups to a fresh server.
async fn setup_latency(count: usize, suite: CipherSuite) -> std::io::Result<Setup> {
    let (transport, mut listener) = loopback_listener().await?;
    let addr = listener.local_addr().clone();
    let server_config = shoal_secio::Config::new(Keypair::generate()).with_suites([suite]);
    let server_id = server_config.local_peer_id();
    tokio::spawn(async move {
        while let Ok(inbound) = listener.accept().await {
            let config = server_config.clone();
            tokio::spawn(async move {
                let Ok(secure) = shoal_secio::handshake_inbound(inbound.connection, &config).await
                else {
                    return;
                };
                let (driver, control) =
                    Driver::new(secure, shoal_yamux::Config::default(), Mode::Server);
                tokio::spawn(driver);
                while let Ok(mut stream) = control.accept_stream().await {
                    tokio::spawn(async move {
                        let mut byte = [0u8; 1];
                        if stream.read_exact(&mut byte).await.is_ok() {
                            let _ = stream.write_all(&byte).await;
                            let _ = stream.flush().await;
                        }
                    });
                }
            });
        }
    });
    let client_config = shoal_secio::Config::new(Keypair::generate()).with_suites([suite]);
    let mut times = Vec::with_capacity(count);
    let mut secure_times = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        let conn = transport.dial(&addr).await.map_err(std::io::Error::other)?;
        let secure = shoal_secio::handshake_outbound(conn, &client_config, Some(server_id))
            .await
            .map_err(std::io::Error::other)?;
        secure_times.push(start.elapsed());
        let (driver, control) = Driver::new(secure, shoal_yamux::Config::default(), Mode::Client);
        let driver = tokio::spawn(driver);
        let mut stream = control.open_stream().await.map_err(std::io::Error::other)?;
        stream.write_all(b"x").await?;
        stream.flush().await?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await?;
        times.push(start.elapsed());
        control.close();
        driver.abort();
    }
    times.sort();
    secure_times.sort();
    Ok(Setup {
        secure: secure_times,
        total: times,
    })
}

/// The runs of one scenario.
#[derive(Default)]
struct Runs(Vec<Transfer>);

impl Runs {
    /// MiB/s of every run, sorted.
    fn rates(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.0.iter().map(Transfer::mib_per_sec).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn median(&self) -> f64 {
        median(&self.rates())
    }

    fn cpu_median(&self) -> f64 {
        let mut v: Vec<f64> = self.0.iter().map(Transfer::cpu_secs_per_gib).collect();
        v.sort_by(f64::total_cmp);
        median(&v)
    }
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn header() {
    println!("| scenario                           | MiB/s median |    min |    max | CPU s/GiB |");
    println!("|------------------------------------|-------------:|-------:|-------:|----------:|");
}

fn row(name: &str, runs: &Runs) {
    let rates = runs.rates();
    println!(
        "| {name:<34} | {:>12.0} | {:>6.0} | {:>6.0} | {:>9.2} |",
        runs.median(),
        rates.first().copied().unwrap_or_default(),
        rates.last().copied().unwrap_or_default(),
        runs.cpu_median()
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let suite = suite_from(&args.cipher)?;
    let total = args.mib * MIB;
    let io_size = args.write_kib * 1024;

    if let Some(which) = args.only.clone() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(run_only(&args, suite, &which))?;
        return Ok(());
    }

    println!("# Shoal loopback throughput");
    println!(
        "{} MiB per scenario, {} KiB writes, {} interleaved rounds, suite {}",
        args.mib,
        args.write_kib,
        args.runs,
        suite.noise_name()
    );

    println!();
    println!("## One-core AEAD throughput (65519-byte frames, GiB/s)");
    println!("| cipher | backend | encrypt | decrypt |");
    println!("|---|---|---:|---:|");
    let mut in_use: Option<AeadThroughput> = None;
    for (cipher, cname) in [
        (CipherChoice::ChaChaPoly, "ChaCha20-Poly1305"),
        (CipherChoice::AESGCM, "AES-256-GCM"),
    ] {
        for (backend, bname) in [(Backend::Ring, "ring"), (Backend::RustCrypto, "RustCrypto")] {
            if let Some(t) = aead::measure(backend, cipher, Duration::from_millis(700)) {
                println!(
                    "| {cname} | {bname} | {:.2} | {:.2} |",
                    t.encrypt / GIB,
                    t.decrypt / GIB
                );
                // secio uses snow's ring-accelerated resolver: ring first.
                if backend == Backend::Ring && cipher == cipher_choice(suite) {
                    in_use = Some(t);
                }
            }
        }
    }
    let aead_in_use = in_use.ok_or("the suite's cipher is unavailable")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        println!();
        println!("## Bulk transfer, one direction");
        let (mut tcp, mut sec, mut one, mut many) = (
            Runs::default(),
            Runs::default(),
            Runs::default(),
            Runs::default(),
        );
        // Round by round, so a change of machine load hits every scenario.
        for _ in 0..args.runs.max(1) {
            tcp.0.push(raw_tcp(total, io_size).await?);
            sec.0.push(secio(total, io_size, suite).await?);
            one.0.push(yamux(total, io_size, 1, suite).await?);
            many.0
                .push(yamux(total, io_size, args.streams, suite).await?);
        }
        header();
        row("raw TCP", &tcp);
        row("TCP+secio", &sec);
        row("TCP+secio+yamux, 1 stream", &one);
        row(&format!("TCP+secio+yamux, {} streams", args.streams), &many);

        let t = tcp.median();
        let c = aead_in_use.bound() / MIB as f64;
        let bound = 1.0 / (1.0 / t + 1.0 / c);
        println!();
        println!("## Bound");
        println!("T (raw TCP) = {t:.0} MiB/s, C (AEAD, slower direction) = {c:.0} MiB/s");
        println!("B = 1 / (1/T + 1/C) = {bound:.0} MiB/s");
        println!();
        println!("## Targets");
        let pct = |x: f64, of: f64| 100.0 * x / of;
        println!(
            "TCP+secio+yamux (1 stream) / B           = {:5.1}%  (target >= 80%)",
            pct(one.median(), bound)
        );
        println!(
            "yamux cost over TCP+secio (1 stream)     = {:5.1}%  (target <= 10%)",
            100.0 - pct(one.median(), sec.median())
        );
        println!(
            "{} streams / 1 stream                     = {:5.1}%  (target >= 90%)",
            args.streams,
            pct(many.median(), one.median())
        );
        println!(
            "TCP+secio / B                            = {:5.1}%",
            pct(sec.median(), bound)
        );

        let setup = setup_latency(args.setups, suite).await?;
        println!();
        println!(
            "## Connection setup on loopback, {} connections",
            args.setups
        );
        let line = |name: &str, times: &[Duration]| {
            let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
            println!(
                "{name}: median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
                at(0.5).as_secs_f64() * 1e3,
                at(0.9).as_secs_f64() * 1e3,
                at(0.99).as_secs_f64() * 1e3
            );
        };
        line("dial to secure channel (TCP + secio)   ", &setup.secure);
        line("dial to first stream echo (target < 1 ms)", &setup.total);
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
