//! Connection configuration: every bound has a named default.

use std::time::Duration;

/// Initial receive and send window of every stream, fixed by the
/// [specification](https://github.com/hashicorp/yamux/blob/master/spec.md#flow-control).
///
/// Both sides assume it without negotiation; a peer may only send this much
/// before its first WindowUpdate.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// Default for [`Config::max_stream_window`]: 16 MiB.
///
/// Protects memory: the most unread bytes one stream may buffer once
/// auto-tuning has grown its window.
pub const DEFAULT_MAX_STREAM_WINDOW: u32 = 16 * 1024 * 1024;

/// Default for [`Config::max_connection_window`]: 256 MiB.
///
/// Protects memory: auto-tuning stops growing stream windows once the sum of
/// all stream windows of a connection reaches this (initial windows always fit).
pub const DEFAULT_MAX_CONNECTION_WINDOW: u64 = 256 * 1024 * 1024;

/// Default for [`Config::max_frame_size`]: 256 KiB.
///
/// Protects interop: the largest Data payload we send; tokio-yamux rejects
/// larger frames by default. Inbound frames are bounded by the window instead.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 256 * 1024;

/// Default for [`Config::max_concurrent_streams`]: 1024.
///
/// Protects memory and CPU: live streams (both directions, including those
/// waiting to be accepted). An inbound SYN above it is refused with RST.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: usize = 1024;

/// Default for [`Config::max_pending_accept`]: 1024, as many as
/// [`DEFAULT_MAX_CONCURRENT_STREAMS`].
///
/// Protects memory: inbound streams the application has not accepted yet.
/// Above it, a new SYN is refused with RST. A peer may open many streams in
/// one burst, all arriving in one read before the application had a chance
/// to accept any; by default only the stream limit refuses them.
pub const DEFAULT_MAX_PENDING_ACCEPT: usize = DEFAULT_MAX_CONCURRENT_STREAMS;

/// Default for [`Config::keepalive_interval`]: 30 s between keep-alive pings.
///
/// Protects liveness: a dead peer is noticed within interval + timeout.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// Default for [`Config::keepalive_timeout`]: 10 s to answer a ping.
///
/// Protects liveness: an unanswered ping closes the connection after this.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for [`Config::max_control_frames_per_sec`]: 1000.
///
/// Protects CPU and the outbound queue: pings, empty frames and GoAways the
/// peer may make us handle per second before the connection is closed.
/// Streams we refuse are not counted: a refusal is our own decision (a limit
/// of ours), and opening streams is what a peer is for.
pub const DEFAULT_MAX_CONTROL_FRAMES_PER_SEC: u32 = 1000;

/// Default for [`Config::max_pending_control_frames`]: 256.
///
/// Protects memory: answers queued but not yet taken by
/// [`Connection::poll_transmit`](crate::Connection::poll_transmit). A peer
/// that pings but never reads its pongs hits this and is disconnected. RSTs
/// for refused streams beyond it do not close the connection: the core asks
/// its driver to stop reading ([`Connection::wants_input`](crate::Connection::wants_input))
/// until they went out.
pub const DEFAULT_MAX_PENDING_CONTROL_FRAMES: usize = 256;

/// Default for [`Config::close_timeout`]: 5 s.
///
/// Protects liveness of a closing connection: after our GoAway, streams still
/// open this long are reset and the connection ends.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default for [`Config::max_send_buffer`]: 1 MiB.
///
/// Protects memory: encoded bytes waiting for `poll_transmit`. Above it,
/// `write` takes nothing and the stream is told when there is room again.
pub const DEFAULT_MAX_SEND_BUFFER: usize = 1024 * 1024;

/// Smallest round-trip time receive-window auto-tuning assumes. A ping
/// measures the wire round trip of an idle connection; under load the credit
/// loop also includes both ends' scheduling (reader task, driver, encryption),
/// which on loopback or a LAN is far longer than the wire. Without this floor
/// a single fast stream on such a link would never grow past its first window.
pub const AUTOTUNE_MIN_RTT: std::time::Duration = std::time::Duration::from_millis(1);

/// Auto-tuning factor: a stream's window doubles when half of it was read
/// within this many round-trip times since its previous window update.
pub const AUTOTUNE_RTT_FACTOR: u32 = 2;

/// How many closed stream ids are remembered, so late frames for them are
/// ignored and a SYN reusing them is caught. Bounds memory.
pub const RECENTLY_CLOSED_CAPACITY: usize = 4096;

/// Configuration of a [`Connection`](crate::Connection).
///
/// Build with [`Config::default`] and the builder-style setters:
///
/// ```
/// use std::time::Duration;
/// let config = shoal_yamux::Config::default()
///     .with_max_concurrent_streams(64)
///     .with_keepalive_interval(Some(Duration::from_secs(15)));
/// assert_eq!(config.max_concurrent_streams(), 64);
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    max_stream_window: u32,
    max_connection_window: u64,
    max_frame_size: u32,
    max_concurrent_streams: usize,
    max_pending_accept: usize,
    keepalive_interval: Option<Duration>,
    keepalive_timeout: Duration,
    max_control_frames_per_sec: u32,
    max_pending_control_frames: usize,
    max_send_buffer: usize,
    close_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_stream_window: DEFAULT_MAX_STREAM_WINDOW,
            max_connection_window: DEFAULT_MAX_CONNECTION_WINDOW,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_pending_accept: DEFAULT_MAX_PENDING_ACCEPT,
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_control_frames_per_sec: DEFAULT_MAX_CONTROL_FRAMES_PER_SEC,
            max_pending_control_frames: DEFAULT_MAX_PENDING_CONTROL_FRAMES,
            max_send_buffer: DEFAULT_MAX_SEND_BUFFER,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
        }
    }
}

impl Config {
    /// Largest receive window auto-tuning may grow a stream to; clamped to at
    /// least [`INITIAL_WINDOW`]. Set it to [`INITIAL_WINDOW`] to disable auto-tuning.
    pub fn with_max_stream_window(mut self, bytes: u32) -> Self {
        self.max_stream_window = bytes.max(INITIAL_WINDOW);
        self
    }

    /// Cap on the sum of all stream windows for auto-tuning.
    pub fn with_max_connection_window(mut self, bytes: u64) -> Self {
        self.max_connection_window = bytes;
        self
    }

    /// Largest Data payload we send; clamped to `1..=`[`INITIAL_WINDOW`].
    pub fn with_max_frame_size(mut self, bytes: u32) -> Self {
        self.max_frame_size = bytes.clamp(1, INITIAL_WINDOW);
        self
    }

    /// Limit of live streams (both directions); at least 1.
    pub fn with_max_concurrent_streams(mut self, n: usize) -> Self {
        self.max_concurrent_streams = n.max(1);
        self
    }

    /// Limit of inbound streams waiting for `accept_stream`.
    pub fn with_max_pending_accept(mut self, n: usize) -> Self {
        self.max_pending_accept = n;
        self
    }

    /// Keep-alive ping interval; `None` disables keep-alive (one ping is
    /// still sent at start to measure the round-trip time).
    pub fn with_keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// How long a keep-alive ping may stay unanswered.
    pub fn with_keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalive_timeout = timeout;
        self
    }

    /// Peer-triggered control frames allowed per second.
    pub fn with_max_control_frames_per_sec(mut self, n: u32) -> Self {
        self.max_control_frames_per_sec = n;
        self
    }

    /// Answers (pongs, RSTs) allowed to wait for `poll_transmit`.
    pub fn with_max_pending_control_frames(mut self, n: usize) -> Self {
        self.max_pending_control_frames = n;
        self
    }

    /// Encoded bytes allowed to wait for `poll_transmit` before writes stall.
    pub fn with_max_send_buffer(mut self, bytes: usize) -> Self {
        self.max_send_buffer = bytes.max(1);
        self
    }

    /// How long streams may go on after our GoAway before they are reset
    /// and the connection ends.
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// See [`Config::with_max_stream_window`].
    pub fn max_stream_window(&self) -> u32 {
        self.max_stream_window
    }

    /// See [`Config::with_max_connection_window`].
    pub fn max_connection_window(&self) -> u64 {
        self.max_connection_window
    }

    /// See [`Config::with_max_frame_size`].
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// See [`Config::with_max_concurrent_streams`].
    pub fn max_concurrent_streams(&self) -> usize {
        self.max_concurrent_streams
    }

    /// See [`Config::with_max_pending_accept`].
    pub fn max_pending_accept(&self) -> usize {
        self.max_pending_accept
    }

    /// See [`Config::with_keepalive_interval`].
    pub fn keepalive_interval(&self) -> Option<Duration> {
        self.keepalive_interval
    }

    /// See [`Config::with_keepalive_timeout`].
    pub fn keepalive_timeout(&self) -> Duration {
        self.keepalive_timeout
    }

    /// See [`Config::with_max_control_frames_per_sec`].
    pub fn max_control_frames_per_sec(&self) -> u32 {
        self.max_control_frames_per_sec
    }

    /// See [`Config::with_max_pending_control_frames`].
    pub fn max_pending_control_frames(&self) -> usize {
        self.max_pending_control_frames
    }

    /// See [`Config::with_max_send_buffer`].
    pub fn max_send_buffer(&self) -> usize {
        self.max_send_buffer
    }

    /// See [`Config::with_close_timeout`].
    pub fn close_timeout(&self) -> Duration {
        self.close_timeout
    }
}
