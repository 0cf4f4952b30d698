//! Sessions through the service layer (`shoal`): setup latency, sessions
//! per second, memory per idle session, and message round trips and rate,
//! all from one run, with one echo protocol (length-delimited frames)
//! registered on a server and a client service in this process.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin sessions -- --help
//! ```
//!
//! Order matters for the memory figures, so the run starts with them, on a
//! fresh heap: N idle sessions over the in-memory transport, then (on top,
//! nothing freed in between) M over TCP loopback. Each figure is the growth
//! of the process's resident set (`VmRSS` in `/proc/self/status`) divided
//! by the number of sessions. Both ends of every session live in this
//! process, so the figure is reported per session *pair* (dialer end +
//! listener end) and per session *end* (half of that). An idle session has
//! the echo protocol open and has echoed one message.

#![allow(clippy::unwrap_used)]

use shoal_benches::latency::quantile;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use shoal::{
    DialOptions, HandlerResult, Multiaddr, ProtocolContextMut, ProtocolEvent, ProtocolEvents,
    ProtocolId, ProtocolMeta, ServiceBuilder, ServiceControl, ServiceProtocol, SessionInfo,
    config::Config,
};
use shoal_identity::Keypair;
use shoal_transport::{MemoryNetwork, MemoryTransport, TcpTransport};
use tokio::sync::{mpsc, watch};

const ECHO: ProtocolId = ProtocolId(1);

/// Messages in flight in the pipelined phase: below the per-stream send
/// queue ([`shoal::config::MAX_QUEUED_FRAMES_PER_STREAM`]).
const IN_FLIGHT: usize = 128;

#[derive(Parser, Debug)]
#[command(
    about = "Session setup, session rate, memory per idle session and messages through the shoal service layer"
)]
struct Args {
    /// Idle sessions over the in-memory transport for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    memory_sessions: usize,
    /// Idle sessions over TCP loopback for the memory figure.
    #[arg(long, default_value_t = 1_000)]
    tcp_sessions: usize,
    /// Dials in flight at once while opening many sessions.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Sequential sessions for the setup-latency figure (TCP loopback).
    #[arg(long, default_value_t = 300)]
    setups: usize,
    /// Sequential round trips of one message (TCP loopback).
    #[arg(long, default_value_t = 2_000)]
    round_trips: usize,
    /// Pipelined messages for the message rate (TCP loopback).
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Payload bytes of each message.
    #[arg(long, default_value_t = 64)]
    message_bytes: usize,
}

/// Echoes every frame back on the same session.
struct Echo;

impl ServiceProtocol for Echo {
    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: Bytes) -> HandlerResult {
        ctx.reply(data)?;
        Ok(())
    }
}

/// Limits raised far enough for the bench, and every dial its own session
/// (one client opens them all to one server); everything else default.
fn config() -> Config {
    Config {
        max_inbound_sessions: 100_000,
        max_outbound_sessions: 100_000,
        idle_timeout: Duration::from_secs(3600),
        allow_duplicate_sessions: true,
        ..Config::default()
    }
}

/// The client side: its control, how many `Connected` events its echo
/// protocol has seen, and the echoed payloads.
struct Client {
    control: ServiceControl,
    connected: watch::Receiver<usize>,
    echoes: mpsc::Receiver<Bytes>,
}

impl Client {
    /// Waits until `target` protocol openings have been seen in total.
    async fn wait_connected(&mut self, target: usize) {
        self.connected.wait_for(|&c| c >= target).await.unwrap();
    }

    fn connected_so_far(&self) -> usize {
        *self.connected.borrow()
    }

    /// The next echoed payload (panics after 10 s: an echo was lost).
    async fn echo(&mut self) -> Bytes {
        tokio::time::timeout(Duration::from_secs(10), self.echoes.recv())
            .await
            .expect("echo timed out")
            .unwrap()
    }
}

/// Forwards the client's protocol events: counts openings, passes payloads.
fn spawn_events(mut events: ProtocolEvents) -> (watch::Receiver<usize>, mpsc::Receiver<Bytes>) {
    let (count_tx, count_rx) = watch::channel(0usize);
    let (data_tx, data_rx) = mpsc::channel(4096);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let ProtocolEvent::Connected { .. } = event {
                count_tx.send_modify(|c| *c += 1);
            } else if let ProtocolEvent::Received { data, .. } = event
                && data_tx.send(data).await.is_err()
            {
                return;
            }
        }
    });
    (count_rx, data_rx)
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Raises the soft open-file limit towards `need` (as far as the hard
/// limit allows) and returns the limit now in force.
fn raise_open_files_limit(need: u64) -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(need)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Opens `n` sessions to `addr` with `concurrency` dials in flight and waits
/// until the echo protocol is open on all of them, then sends one message on
/// each and waits for every echo. Returns the sessions and the time from the
/// first dial to the last protocol opening.
async fn open_many(
    client: &mut Client,
    addr: &Multiaddr,
    n: usize,
    concurrency: usize,
) -> (Vec<Arc<SessionInfo>>, Duration) {
    let target = client.connected_so_far() + n;
    let control = client.control.clone();
    let t0 = Instant::now();
    let sessions: Vec<Arc<SessionInfo>> = futures::stream::iter(0..n)
        .map(|_| control.dial(addr.clone(), DialOptions::default()))
        .buffer_unordered(concurrency)
        .map_ok(|connected| connected.session)
        .try_collect()
        .await
        .unwrap();
    client.wait_connected(target).await;
    let elapsed = t0.elapsed();
    for s in &sessions {
        control
            .send(s.id, ECHO, Bytes::from_static(b"hi"))
            .await
            .unwrap();
    }
    for _ in 0..n {
        client.echo().await;
    }
    (sessions, elapsed)
}

/// Disconnects `sessions` and waits until the client has none left.
async fn close_all(control: &ServiceControl, sessions: Vec<Arc<SessionInfo>>) {
    for s in sessions {
        let _ = control.try_disconnect(s.id);
    }
    for _ in 0..500 {
        if control.sessions().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "close_all: {} sessions still open",
        control.sessions().len()
    );
}

/// Lets background work finish (e.g. server-side substream tasks) before
/// resident memory is read.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn memory_row(transport: &str, n: usize, before: u64, after: u64, open: Duration) {
    let pair = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "| {transport} | {n} | {:.1} | {:.1} | {:.0} | {:.0} |",
        pair / 1024.0,
        pair / 2048.0,
        n as f64 / open.as_secs_f64(),
        (after.saturating_sub(before)) as f64 / 1024.0,
    );
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
    let need = 2 * args.tcp_sessions as u64 + 64;
    let limit = raise_open_files_limit(need)?;
    if limit < need {
        return Err(format!(
            "open-file limit {limit} (the hard limit) is below the {need} the TCP phase needs: raise the hard limit or pass a smaller --tcp-sessions"
        )
        .into());
    }
    let network = MemoryNetwork::new();
    let server = ServiceBuilder::new(Keypair::generate())
        .transport(TcpTransport::default())
        .transport(MemoryTransport::new(&network))
        .protocol(ProtocolMeta::builder(ECHO, "/echo").service_handle(Echo))
        .config(config())
        .build()?;
    let server_control = server.control();
    tokio::spawn(server);
    let tcp_addr = server_control
        .listen("/ip4/127.0.0.1/tcp/0".parse()?)
        .await?;
    let mem_addr = server_control.listen("/memory/0".parse()?).await?;

    let (meta, events) = ProtocolMeta::builder(ECHO, "/echo")
        .queue(4096)
        .event_stream();
    let client_service = ServiceBuilder::new(Keypair::generate())
        .transport(TcpTransport::default())
        .transport(MemoryTransport::new(&network))
        .protocol(meta)
        .config(config())
        .build()?;
    let control = client_service.control();
    tokio::spawn(client_service);
    let (connected, echoes) = spawn_events(events);
    let mut client = Client {
        control: control.clone(),
        connected,
        echoes,
    };

    // Warm-up: one session each way, so one-time allocations (runtime,
    // listeners, tracing callsites) are not counted as per-session memory.
    let (warm, _) = open_many(&mut client, &tcp_addr, 1, 1).await;
    close_all(&control, warm).await;
    let (warm, _) = open_many(&mut client, &mem_addr, 1, 1).await;
    close_all(&control, warm).await;
    settle().await;

    println!("## Sessions through the service layer (shoal), one echo protocol\n");
    println!("### Idle sessions: memory and opening rate\n");
    println!(
        "Memory = growth of VmRSS / sessions. Both ends are in this process: \"per pair\" = dialer end + listener end, \"per end\" = half. Sessions/s = sessions opened (protocol negotiated) per second with {} dials in flight.\n",
        args.concurrency
    );
    println!("| transport | sessions | KiB per pair | KiB per end | sessions/s | RSS growth MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    let rss0 = vm_rss_kib();
    let (mem_sessions, open) = open_many(
        &mut client,
        &mem_addr,
        args.memory_sessions,
        args.concurrency,
    )
    .await;
    settle().await;
    let rss1 = vm_rss_kib();
    memory_row("memory", args.memory_sessions, rss0, rss1, open);
    let (tcp_sessions, open) =
        open_many(&mut client, &tcp_addr, args.tcp_sessions, args.concurrency).await;
    settle().await;
    let rss2 = vm_rss_kib();
    memory_row("TCP loopback", args.tcp_sessions, rss1, rss2, open);
    close_all(
        &control,
        mem_sessions.into_iter().chain(tcp_sessions).collect(),
    )
    .await;
    settle().await;

    // Setup latency, sequential, TCP loopback.
    let mut to_session = Vec::with_capacity(args.setups);
    let mut to_protocol = Vec::with_capacity(args.setups);
    let mut to_echo = Vec::with_capacity(args.setups);
    for _ in 0..args.setups {
        let target = client.connected_so_far() + 1;
        let t0 = Instant::now();
        let s = control
            .dial(tcp_addr.clone(), DialOptions::default())
            .await?;
        to_session.push(t0.elapsed());
        client.wait_connected(target).await;
        to_protocol.push(t0.elapsed());
        control.send(s.id, ECHO, Bytes::from_static(b"x")).await?;
        client.echo().await;
        to_echo.push(t0.elapsed());
        control.disconnect(s.id).await?;
    }
    println!(
        "\n### Session setup, TCP loopback ({} sequential sessions)\n",
        args.setups
    );
    println!("| phase | median | p90 | p99 |");
    println!("|---|---:|---:|---:|");
    for (name, mut v) in [
        ("dial → session open (secio + yamux)", to_session),
        ("dial → echo protocol negotiated", to_protocol),
        ("dial → first echo received", to_echo),
    ] {
        v.sort();
        println!(
            "| {name} | {} | {} | {} |",
            ms(quantile(&v, 0.5)),
            ms(quantile(&v, 0.9)),
            ms(quantile(&v, 0.99))
        );
    }

    // Messages on one TCP session.
    let target = client.connected_so_far() + 1;
    let s = control
        .dial(tcp_addr.clone(), DialOptions::default())
        .await?;
    client.wait_connected(target).await;
    let payload = Bytes::from(vec![0x5a; args.message_bytes]);
    let mut rtts = Vec::with_capacity(args.round_trips);
    for _ in 0..args.round_trips {
        let t0 = Instant::now();
        control.send(s.id, ECHO, payload.clone()).await?;
        client.echo().await;
        rtts.push(t0.elapsed());
    }
    rtts.sort();
    // The echo handler replies with `try_send` semantics, so keep fewer
    // messages in flight than a stream's send queue holds.
    let window = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let sender = {
        let control = control.clone();
        let payload = payload.clone();
        let window = window.clone();
        let n = args.messages;
        let id = s.id;
        tokio::spawn(async move {
            for _ in 0..n {
                window.acquire().await.unwrap().forget();
                control.send(id, ECHO, payload.clone()).await?;
            }
            Ok::<_, shoal::SendError>(())
        })
    };
    let t0 = Instant::now();
    for _ in 0..args.messages {
        client.echo().await;
        window.add_permits(1);
    }
    let pipelined = t0.elapsed();
    sender.await??;
    println!(
        "\n### Messages on one session, TCP loopback, {}-byte payloads\n",
        args.message_bytes
    );
    println!("| figure | value |");
    println!("|---|---:|");
    println!(
        "| round trip ({} sequential), median | {} |",
        args.round_trips,
        us(quantile(&rtts, 0.5))
    );
    println!("| round trip, p99 | {} |", us(quantile(&rtts, 0.99)));
    println!(
        "| echoed messages/s ({} pipelined, {IN_FLIGHT} in flight, each sent and echoed back) | {:.0} |",
        args.messages,
        args.messages as f64 / pipelined.as_secs_f64()
    );
    control.shutdown().await;
    server_control.shutdown().await;
    Ok(())
}
