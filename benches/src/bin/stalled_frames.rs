//! Memory held by secio sessions whose peer stalls in the middle of a frame.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin stalled_frames -- --help
//! ```
//!
//! One process, 2-worker runtime, one secio listener on TCP loopback. Each
//! accepted connection runs the responder handshake, then one task reads the
//! `SecureStream` until it ends. The dialers are the "attackers": each runs
//! the initiator handshake, throws its secure stream away (`into_inner`) and
//! keeps only the raw socket, so the dialing side of the process holds
//! nothing but sockets.
//!
//! Two phases in one run, on the same heap:
//!
//! 1. **idle**: N sessions open, handshake done, nothing sent (the
//!    baseline); then all closed.
//! 2. **stalled**: N sessions open; each dialer sends a transport frame
//!    header declaring a maximal body (65,535 bytes) and then the body
//!    short of `--missing` bytes (default 1), and stops. Once the listener
//!    has read every byte sent (or reading stops making progress), the
//!    figures are taken; then all closed.
//!
//! Figures are `VmRSS` (resident now) and `VmHWM` (resident peak) from
//! `/proc/self/status`, after letting background work settle, and how much
//! of the listener's secio receive budget (`--budget-mib`) the stalled
//! sessions hold. Sessions the budget has no room for wait for it and, after
//! `MAX_RECEIVE_BUDGET_WAIT`, fail; the stall figures are taken as soon as
//! reading stops making progress, before that.

#![allow(clippy::unwrap_used)]

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use clap::Parser;
use futures::StreamExt;
use shoal_identity::Keypair;
use shoal_secio::{Config, ReceiveBudget, frame::MAX_FRAME_LEN};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
};

#[derive(Parser, Debug)]
#[command(about = "Process memory of secio sessions stalled one byte short of a maximal frame")]
struct Args {
    /// Sessions opened in each phase.
    #[arg(long, default_value_t = 500)]
    sessions: usize,
    /// Bytes of the declared frame body the stalling peer never sends.
    #[arg(long, default_value_t = 1)]
    missing: usize,
    /// Dials (handshakes) in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The listener's secio receive budget in MiB (default: the secio
    /// default, `DEFAULT_RECEIVE_BUDGET`).
    #[arg(long)]
    budget_mib: Option<usize>,
}

/// What the listener side reports: bytes read from the sockets, sessions
/// whose handshake completed, sessions still open.
#[derive(Default)]
struct Counters {
    received: AtomicU64,
    secured: AtomicUsize,
    open: AtomicUsize,
}

/// A socket that counts the bytes read from it.
struct Counted {
    inner: TcpStream,
    counters: Arc<Counters>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.counters
            .received
            .fetch_add(n as u64, Ordering::Relaxed);
        result
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts connections forever: handshake, then read until the stream ends.
async fn serve(listener: TcpListener, config: Config, counters: Arc<Counters>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let config = config.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            counters.open.fetch_add(1, Ordering::SeqCst);
            let io = Counted {
                inner: socket,
                counters: counters.clone(),
            };
            if let Ok(mut secure) = shoal_secio::handshake_inbound(io, &config).await {
                counters.secured.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = secure.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            }
            counters.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Dials `n` sessions and returns their raw sockets once the listener has
/// completed every handshake.
async fn open(
    addr: std::net::SocketAddr,
    config: &Config,
    server: shoal_identity::PeerId,
    n: usize,
    concurrency: usize,
    counters: &Counters,
) -> Vec<TcpStream> {
    let target = counters.secured.load(Ordering::SeqCst) + n;
    let sockets: Vec<TcpStream> = futures::stream::iter(0..n)
        .map(|_| async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            shoal_secio::handshake_outbound(tcp, config, Some(server))
                .await
                .unwrap()
                .into_inner()
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    wait_until(|| counters.secured.load(Ordering::SeqCst) >= target).await;
    sockets
}

/// Closes the sockets and waits until the listener has dropped every session.
async fn close(sockets: Vec<TcpStream>, counters: &Counters) {
    drop(sockets);
    wait_until(|| counters.open.load(Ordering::SeqCst) == 0).await;
}

async fn wait_until(mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `received` reaches `target` or stops moving for a second;
/// returns the bytes received.
async fn wait_received(counters: &Counters, target: u64) -> u64 {
    let mut last = (counters.received.load(Ordering::SeqCst), Instant::now());
    loop {
        let now = counters.received.load(Ordering::SeqCst);
        if now >= target {
            return now;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(1) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lets freed memory and background tasks settle before reading the figures.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// `VmRSS` and `VmHWM` in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mb(kib: u64) -> String {
    format!("{:.1}", kib as f64 * 1024.0 / 1e6)
}

fn row(label: &str, (rss, hwm): (u64, u64)) {
    println!("| {label} | {} | {} |", mb(rss), mb(hwm));
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let need = 2 * args.sessions as u64 + 64;
    let limit = rlimit::increase_nofile_limit(need)?;
    if limit < need {
        return Err(format!(
            "open-file limit {limit} (the hard limit) is below the {need} this run needs: pass fewer --sessions"
        )
        .into());
    }
    let missing = args.missing.clamp(1, MAX_FRAME_LEN);
    let n = args.sessions;

    let mut server_config = Config::new(Keypair::generate());
    if let Some(mib) = args.budget_mib {
        server_config = server_config.with_receive_budget(ReceiveBudget::new(mib << 20));
    }
    let budget = server_config.receive_budget().clone();
    let server = server_config.local_peer_id();
    let client_config = Config::new(Keypair::generate());
    let counters = Arc::new(Counters::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, server_config, counters.clone()));

    // Warm-up: one session of each kind, so one-time allocations are not
    // counted against the phases.
    let mut warm = open(addr, &client_config, server, 1, 1, &counters).await;
    warm[0].write_all(&[0xff, 0xff, 0]).await?;
    close(warm, &counters).await;
    settle().await;

    println!(
        "## secio sessions stalled {missing} byte(s) short of a maximal frame ({n} sessions)\n"
    );
    println!(
        "listener receive budget: {:.1} MiB\n",
        budget.total() as f64 / (1024.0 * 1024.0)
    );
    println!("| phase | VmRSS MB | VmHWM MB |");
    println!("|---|---:|---:|");
    let start = memory_kib();
    row("start (after warm-up)", start);

    let idle = open(addr, &client_config, server, n, args.concurrency, &counters).await;
    settle().await;
    let idle_open = memory_kib();
    row(&format!("{n} idle sessions open"), idle_open);
    close(idle, &counters).await;
    settle().await;
    let idle_closed = memory_kib();
    row("idle sessions closed", idle_closed);

    let mut stalled = open(addr, &client_config, server, n, args.concurrency, &counters).await;
    let before = counters.received.load(Ordering::SeqCst);
    let mut frame = vec![0x5au8; 2 + MAX_FRAME_LEN - missing];
    frame[..2].copy_from_slice(&(MAX_FRAME_LEN as u16).to_be_bytes());
    for socket in &mut stalled {
        socket.write_all(&frame).await?;
    }
    let target = before + (n * frame.len()) as u64;
    let received = wait_received(&counters, target).await - before;
    settle().await;
    let stall_open = memory_kib();
    let budget_in_use = budget.in_use();
    row(&format!("{n} stalled sessions open"), stall_open);
    close(stalled, &counters).await;
    settle().await;
    let stall_closed = memory_kib();
    row("stalled sessions closed", stall_closed);

    let per_session = |a: u64, b: u64| (a as f64 - b as f64) / n as f64;
    println!();
    println!(
        "bytes sent by the stalling peers: {} per session; read by the listener: {:.0} per session",
        frame.len(),
        received as f64 / n as f64
    );
    println!(
        "idle session: {:.1} KiB RSS each; stalled session: {:.1} KiB RSS each, {:.1} KiB more than idle",
        per_session(idle_open.0, start.0),
        per_session(stall_open.0, idle_closed.0),
        per_session(stall_open.0, idle_closed.0) - per_session(idle_open.0, start.0),
    );
    println!(
        "receive budget in use during the stall: {:.1} MiB of {:.1} MiB; after all closed: {} bytes",
        budget_in_use as f64 / (1024.0 * 1024.0),
        budget.total() as f64 / (1024.0 * 1024.0),
        budget.in_use()
    );
    println!(
        "after all closed: VmRSS {} MB ({} MB over the start); peak VmHWM {} MB",
        mb(stall_closed.0),
        mb(stall_closed.0.saturating_sub(start.0)),
        mb(stall_closed.1)
    );
    Ok(())
}
