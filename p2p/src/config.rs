//! Limits and timeouts of a service, each with a named, documented default.
//!
//! Every bound here protects something (memory, CPU, liveness) from a peer
//! or from a slow local component; the doc line of each constant says what.

use std::time::Duration;

/// Default for [`Config::max_inbound_sessions`]: 1024.
///
/// Protects memory and CPU from connection floods. Counts established inbound
/// sessions *and* inbound handshakes still in progress: a connection takes its
/// slot when it is accepted, before any handshake byte is read, so half-open
/// handshakes are not free.
pub const DEFAULT_MAX_INBOUND_SESSIONS: usize = 1024;

/// Default for [`Config::max_outbound_sessions`]: 256.
///
/// Protects local resources: outbound sessions plus dials in progress.
pub const DEFAULT_MAX_OUTBOUND_SESSIONS: usize = 256;

/// Default for [`Config::max_streams_per_session`]: 128.
///
/// Protects memory: live yamux streams of one session (protocol substreams,
/// raw streams and streams still negotiating). Applied as the yamux
/// `max_concurrent_streams`; a peer opening more gets its SYN refused.
pub const DEFAULT_MAX_STREAMS_PER_SESSION: usize = 128;

/// Default for [`Config::handshake_timeout`]: 10 s.
///
/// Protects the inbound-session slots: a connection whose secure handshake
/// has not completed after this is closed.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for [`Config::negotiation_timeout`]: 10 s.
///
/// Protects stream slots: a substream whose protocol negotiation has not
/// completed after this is reset.
pub const DEFAULT_NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for [`Config::idle_timeout`]: 60 s.
///
/// Protects session slots: a session with no open protocol substream (and no
/// raw stream) for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Default for [`Config::send_queue_bytes`]: 1 MiB.
///
/// Protects memory from peers that do not read: the bytes (payload plus the
/// 4-byte length prefix of each frame) queued for one session and not yet
/// handed to the multiplexer. A full queue makes `send` wait and `try_send`
/// fail with [`SendError::QueueFull`](crate::SendError::QueueFull).
pub const DEFAULT_SEND_QUEUE_BYTES: usize = 1024 * 1024;

/// Default for [`Config::max_frame_size`]: 1 MiB.
///
/// Protects memory: the largest protocol frame (payload of one
/// length-delimited message) a protocol sends or accepts, unless its
/// [`ProtocolMeta`](crate::ProtocolMeta) sets its own. A longer declared
/// length is rejected before anything is allocated for it.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 1024 * 1024;

/// Default for [`Config::handler_queue`]: 128 events.
///
/// Protects memory and isolates slow handlers: protocol events (received
/// frames, connects, disconnects) queued for one protocol handler. When it is
/// full, the substreams feeding it stop reading, and yamux flow control pushes
/// back on those streams only.
pub const DEFAULT_HANDLER_QUEUE: usize = 128;

/// Default for [`Config::close_timeout`]: 3 s.
///
/// Protects shutdown from peers that never answer: how long closing a session
/// waits for its substreams to finish before the connection is dropped.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Default for [`Config::shutdown_timeout`]: 10 s.
///
/// Bounds [`ServiceControl::shutdown`](crate::ServiceControl::shutdown): how
/// long the service waits for its sessions and handlers to finish.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames queued per protocol substream, on top of the byte bound of
/// [`Config::send_queue_bytes`]. Protects memory from floods of empty frames.
pub const MAX_QUEUED_FRAMES_PER_STREAM: usize = 256;

/// Timers (from `set_notify`) one protocol handler may have registered at a
/// time, across all its sessions. Protects memory from runaway handlers.
pub const MAX_TIMERS_PER_HANDLER: usize = 65_536;

/// Service events and errors queued for the [`ServiceHandle`](crate::ServiceHandle).
/// When full, the tasks reporting wait; they are per-connection tasks, so only
/// the reporting connection waits.
pub const REPORT_QUEUE: usize = 1024;

/// Inbound raw streams queued for the user of a raw protocol before new ones
/// are refused.
pub const RAW_STREAM_QUEUE: usize = 64;

/// Limits and timeouts of a service. Built by
/// [`ServiceBuilder`](crate::ServiceBuilder); every field has a `DEFAULT_*`
/// constant in this module.
#[derive(Debug, Clone)]
pub struct Config {
    /// See [`DEFAULT_MAX_INBOUND_SESSIONS`].
    pub max_inbound_sessions: usize,
    /// See [`DEFAULT_MAX_OUTBOUND_SESSIONS`].
    pub max_outbound_sessions: usize,
    /// See [`DEFAULT_MAX_STREAMS_PER_SESSION`].
    pub max_streams_per_session: usize,
    /// See [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub handshake_timeout: Duration,
    /// See [`DEFAULT_NEGOTIATION_TIMEOUT`].
    pub negotiation_timeout: Duration,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`DEFAULT_SEND_QUEUE_BYTES`].
    pub send_queue_bytes: usize,
    /// See [`DEFAULT_MAX_FRAME_SIZE`].
    pub max_frame_size: usize,
    /// See [`DEFAULT_HANDLER_QUEUE`].
    pub handler_queue: usize,
    /// See [`DEFAULT_CLOSE_TIMEOUT`].
    pub close_timeout: Duration,
    /// See [`DEFAULT_SHUTDOWN_TIMEOUT`].
    pub shutdown_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_inbound_sessions: DEFAULT_MAX_INBOUND_SESSIONS,
            max_outbound_sessions: DEFAULT_MAX_OUTBOUND_SESSIONS,
            max_streams_per_session: DEFAULT_MAX_STREAMS_PER_SESSION,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            negotiation_timeout: DEFAULT_NEGOTIATION_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            send_queue_bytes: DEFAULT_SEND_QUEUE_BYTES,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            handler_queue: DEFAULT_HANDLER_QUEUE,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }
}
