//! Test support for whole-stack scenarios: an echo node that serves
//! transport → secio → yamux connections, a client that dials it, byte-exact
//! stream echo checks, and a tampering proxy for hostile-network tests.
//!
//! The tests live in `tests/`; this library holds only what they share.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod proxy;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use shoal_identity::{Keypair, PeerId};
use shoal_transport::{Listener, ListenerExt, Multiaddr, Transport};
use shoal_yamux::{Control, Driver, Mode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    task::JoinHandle,
};

/// Upper bound for any single step of a test.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Counters kept by an [`EchoNode`].
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Handshakes that completed.
    pub handshakes_ok: AtomicUsize,
    /// Handshakes that failed (bad peer, timeout, garbage...).
    pub handshakes_failed: AtomicUsize,
    /// Connections whose yamux session ended with an error.
    pub connections_failed: AtomicUsize,
    /// Streams echoed to completion.
    pub streams_echoed: AtomicUsize,
}

impl NodeStats {
    /// Reads a counter.
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

/// A node that accepts secure multiplexed connections and echoes every
/// stream until the remote finishes it.
#[derive(Debug)]
pub struct EchoNode {
    /// Where it listens.
    pub addr: Multiaddr,
    /// Its identity.
    pub peer_id: PeerId,
    /// What it has seen.
    pub stats: Arc<NodeStats>,
    task: JoinHandle<()>,
}

impl Drop for EchoNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoNode {
    /// The address with `/p2p/<peer id>` appended.
    pub fn full_addr(&self) -> Multiaddr {
        self.addr.with_peer_id(self.peer_id)
    }
}

/// Starts an [`EchoNode`] listening on `listen` over `transport`.
pub async fn start_echo_node<T: Transport>(
    transport: &T,
    listen: &str,
    secio: shoal_secio::Config,
    yamux: shoal_yamux::Config,
) -> EchoNode {
    let mut listener = transport
        .listen(&listen.parse().expect("valid listen address"))
        .await
        .expect("listen");
    let addr = listener.local_addr().clone();
    let peer_id = secio.local_peer_id();
    let stats = Arc::new(NodeStats::default());
    let task_stats = stats.clone();
    let task = tokio::spawn(async move {
        let secio = Arc::new(secio);
        while let Ok(inbound) = listener.accept().await {
            let secio = secio.clone();
            let yamux = yamux.clone();
            let stats = task_stats.clone();
            tokio::spawn(serve_connection(inbound.connection, secio, yamux, stats));
        }
    });
    EchoNode {
        addr,
        peer_id,
        stats,
        task,
    }
}

async fn serve_connection<C>(
    connection: C,
    secio: Arc<shoal_secio::Config>,
    yamux: shoal_yamux::Config,
    stats: Arc<NodeStats>,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let secure = match shoal_secio::handshake_inbound(connection, &secio).await {
        Ok(s) => s,
        Err(_) => {
            stats.handshakes_failed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    stats.handshakes_ok.fetch_add(1, Ordering::SeqCst);
    let (driver, control) = Driver::new(secure, yamux, Mode::Server);
    let driver_stats = stats.clone();
    tokio::spawn(async move {
        if driver.await.is_err() {
            driver_stats
                .connections_failed
                .fetch_add(1, Ordering::SeqCst);
        }
    });
    while let Ok(stream) = control.accept_stream().await {
        let stats = stats.clone();
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(stream);
            if tokio::io::copy(&mut r, &mut w).await.is_ok() && w.shutdown().await.is_ok() {
                stats.streams_echoed.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
}

/// A client connection: the yamux control and the driver task.
#[derive(Debug)]
pub struct Client {
    /// Opens streams.
    pub control: Control,
    /// The authenticated remote.
    pub remote: PeerId,
    /// The connection driver; completes when the connection ends.
    pub driver: JoinHandle<Result<(), shoal_yamux::ConnectionError>>,
}

/// Why a client could not connect.
#[derive(Debug)]
pub enum ConnectError {
    /// The transport dial failed.
    Dial(shoal_transport::TransportError),
    /// The secure handshake failed.
    Handshake(shoal_secio::HandshakeError),
}

/// Dials `addr` and runs secio (expecting `expected`, if given) and yamux.
pub async fn connect<T: Transport>(
    transport: &T,
    addr: &Multiaddr,
    identity: Keypair,
    expected: Option<PeerId>,
    yamux: shoal_yamux::Config,
) -> Result<Client, ConnectError> {
    let connection = transport.dial(addr).await.map_err(ConnectError::Dial)?;
    let secio = shoal_secio::Config::new(identity);
    let secure = shoal_secio::handshake_outbound(connection, &secio, expected)
        .await
        .map_err(ConnectError::Handshake)?;
    let remote = secure.remote_peer();
    let (driver, control) = Driver::new(secure, yamux, Mode::Client);
    Ok(Client {
        control,
        remote,
        driver: tokio::spawn(driver),
    })
}

/// Deterministic test data: byte `i` of stream `seed`.
pub fn pattern_byte(seed: u64, i: u64) -> u8 {
    let mut x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i / 8)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    (x >> ((i % 8) * 8)) as u8
}

/// Fills `buf` with the pattern of stream `seed` starting at offset `start`.
pub fn fill_pattern(seed: u64, start: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(seed, start + k as u64);
    }
}

/// Opens a stream, writes `len` pattern bytes while reading the echo back
/// concurrently, and checks every byte. Returns an error message on any
/// mismatch, short read or failure.
pub async fn echo_one(control: &Control, seed: u64, len: usize) -> Result<(), String> {
    let stream = control
        .open_stream()
        .await
        .map_err(|e| format!("open: {e}"))?;
    let (mut r, mut w) = tokio::io::split(stream);
    let writer = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut off = 0usize;
        while off < len {
            let n = (len - off).min(buf.len());
            fill_pattern(seed, off as u64, &mut buf[..n]);
            w.write_all(&buf[..n])
                .await
                .map_err(|e| format!("write: {e}"))?;
            off += n;
        }
        w.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
        Ok::<_, String>(())
    };
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut off = 0usize;
        loop {
            let n = r
                .read(&mut buf)
                .await
                .map_err(|e| format!("read at {off}: {e}"))?;
            if n == 0 {
                break;
            }
            for (k, &b) in buf[..n].iter().enumerate() {
                let at = (off + k) as u64;
                if b != pattern_byte(seed, at) {
                    return Err(format!("stream {seed}: wrong byte at offset {at}"));
                }
            }
            off += n;
        }
        if off != len {
            return Err(format!("stream {seed}: got {off} bytes, expected {len}"));
        }
        Ok(())
    };
    let (w, r) = tokio::join!(writer, reader);
    w?;
    r
}

/// Runs [`echo_one`] on `streams` streams concurrently.
pub async fn echo_many(control: &Control, streams: usize, len: usize) -> Result<(), String> {
    let mut tasks = Vec::with_capacity(streams);
    for seed in 0..streams as u64 {
        let control = control.clone();
        tasks.push(tokio::spawn(
            async move { echo_one(&control, seed, len).await },
        ));
    }
    for task in tasks {
        task.await.map_err(|e| format!("task: {e}"))??;
    }
    Ok(())
}
