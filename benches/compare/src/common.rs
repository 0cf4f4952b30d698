//! What every compared stack implements, and the helpers they share:
//! errors, time limits, the sink/echo bookkeeping and the statistics.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use crate::cpu::process_cpu_time;
use futures::future::BoxFuture;

/// Any error of the benchmark; it ends the run with a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Result of a benchmark step.
pub type Result<T> = std::result::Result<T, BoxError>;

/// Time limit of one step of a session (dial, protocol open, echo, close):
/// on loopback every one of them takes a few milliseconds, so a step that
/// needs this long has hung.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Protocol name of the bulk protocol (the receiver counts and discards).
pub const SINK_PROTOCOL: &str = "/bench/sink/1";

/// Protocol name of the echo protocol (the receiver sends back what it got).
pub const ECHO_PROTOCOL: &str = "/bench/echo/1";

/// Awaits `fut` for at most `limit`; `what` names the step in the error.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| format!("{what}: no answer within {limit:?}").into())
}

/// Time limit of one bulk transfer of `bytes`: generous (10 MiB/s, every
/// stack does well over 100 MiB/s on loopback) but finite.
pub fn transfer_timeout(bytes: u64) -> Duration {
    Duration::from_secs(30) + Duration::from_secs_f64(bytes as f64 / (10.0 * 1024.0 * 1024.0))
}

/// How a stack is presented in the report.
#[derive(Debug, Clone)]
pub struct Description {
    /// Short name used in the tables.
    pub name: String,
    /// Crate versions, as built.
    pub version: String,
    /// The cipher the secure channel negotiates between two default nodes.
    pub cipher: String,
    /// How the application moves bulk data (which public API).
    pub bulk_api: String,
}

/// One bulk transfer: wall-clock time, and CPU time of the whole process
/// (both nodes) over the same span.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    /// From the first write until the server application had every byte.
    pub elapsed: Duration,
    /// User + system CPU time of this process over that span, when
    /// `/proc/self/stat` can be read.
    pub cpu: Option<Duration>,
}

/// Measures a [`Transfer`]: start it right before the first write.
#[derive(Debug)]
pub struct Meter {
    start: Instant,
    cpu_start: Option<Duration>,
}

impl Meter {
    /// Starts the clocks.
    pub fn start() -> Meter {
        Meter {
            cpu_start: process_cpu_time(),
            start: Instant::now(),
        }
    }

    /// Stops the clocks.
    pub fn stop(self) -> Transfer {
        let elapsed = self.start.elapsed();
        let cpu = match (self.cpu_start, process_cpu_time()) {
            (Some(start), Some(end)) => Some(end.saturating_sub(start)),
            _ => None,
        };
        Transfer { elapsed, cpu }
    }
}

/// One sequential session setup; every phase is measured from the moment
/// the dial was requested.
#[derive(Debug, Clone, Copy)]
pub struct SetupSample {
    /// The secure, multiplexed connection is established, as the dialing
    /// application first learns it.
    pub connected: Duration,
    /// The protocol substream is negotiated, as the dialing application
    /// first learns it.
    pub protocol_open: Duration,
    /// One 1-byte message went out on the protocol and came back: the
    /// common definition of "first protocol usable".
    pub first_echo: Duration,
}

/// One of the compared stacks, with a server and a client node in this
/// process. Methods return boxed futures so that stacks can be kept side
/// by side as `Box<dyn Stack>` and their runs interleaved.
pub trait Stack: Send {
    /// Name, versions, cipher and bulk API of the stack.
    fn describe(&self) -> Description;

    /// Opens a session, moves `chunks` writes (or messages) of `chunk`
    /// bytes from client to server through one protocol stream, and returns
    /// the [`Transfer`] from the first write until the server application
    /// had every byte. The session is closed again before returning.
    fn bulk_once(&mut self, chunks: u64, chunk: usize) -> BoxFuture<'_, Result<Transfer>>;

    /// Opens one session, opens the echo protocol and echoes one byte, then
    /// closes the session and waits until both nodes have dropped it.
    fn setup_once(&mut self) -> BoxFuture<'_, Result<SetupSample>>;
}

/// Waits, polling every millisecond, until `done` holds (bounded by
/// [`STEP_TIMEOUT`]). For state that the stack exposes only by query, such
/// as a node's list of sessions; never on a timed path.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    within(STEP_TIMEOUT, what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
}

/// `sorted[q]` for a fraction `q` of a sorted sample (nearest rank).
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Median and 99th percentile of a sample, in that order.
pub fn median_p99(samples: &[Duration]) -> (Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    (quantile(&sorted, 0.5), quantile(&sorted, 0.99))
}
