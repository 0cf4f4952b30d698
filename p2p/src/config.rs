//! Limits and timeouts of a service, each with a named, documented default.
//!
//! Every bound here protects something (memory, CPU, liveness) from a peer
//! or from a slow local component; the doc line of each constant says what.

use std::time::Duration;

/// Default for [`Config::max_inbound_sessions`]: 1024.
///
/// Protects memory and CPU: established inbound sessions. Handshakes still in
/// progress have their own budget ([`DEFAULT_MAX_INBOUND_HANDSHAKES`]) and
/// per-address bounds, taken when a connection is accepted, before any
/// handshake byte is read, so half-open handshakes are not free.
pub const DEFAULT_MAX_INBOUND_SESSIONS: usize = 1024;

/// Default for [`Config::max_inbound_handshakes`]: 128.
///
/// Protects CPU and the session slots: inbound handshakes not finished yet,
/// a budget of their own, so connections that never finish their handshake
/// cannot take the slots of established sessions.
pub const DEFAULT_MAX_INBOUND_HANDSHAKES: usize = 128;

/// Default for [`Config::max_inbound_per_ip`]: 32.
///
/// Protects the slots from one address: inbound connections (handshaking or
/// established) from one IP address. Room enough for a household or a small
/// office behind one NAT, a small share of [`DEFAULT_MAX_INBOUND_SESSIONS`].
pub const DEFAULT_MAX_INBOUND_PER_IP: usize = 32;

/// Default for [`Config::max_handshakes_per_ip`]: 16.
///
/// Protects the handshake budget from one address: inbound handshakes in
/// progress from one IP address.
pub const DEFAULT_MAX_HANDSHAKES_PER_IP: usize = 16;

/// Default for [`Config::max_inbound_per_subnet`]: 128.
///
/// Protects the slots from one network: inbound connections from one IPv4
/// /24 or IPv6 /48, where one party usually holds every address.
pub const DEFAULT_MAX_INBOUND_PER_SUBNET: usize = 128;

/// Default for [`Config::handshake_rate_per_ip`]: 20 per second.
///
/// Protects CPU: handshakes (each a Diffie-Hellman) started per second from
/// one IP address, as a token bucket with a burst of twice the rate. Beyond
/// it a connection is closed before its first byte is read.
pub const DEFAULT_HANDSHAKE_RATE_PER_IP: u32 = 20;

/// Default for [`Config::dials_per_addr_burst`]: 4.
///
/// Protects other hosts (and our reputation): dials to one socket address
/// allowed at once, before [`DEFAULT_DIAL_INTERVAL_PER_ADDR`] paces them.
/// However many records name an address, it is not dialled faster.
pub const DEFAULT_DIALS_PER_ADDR_BURST: u32 = 4;

/// Default for [`Config::dial_interval_per_addr`]: 5 s.
///
/// Protects other hosts: after the burst, one dial per this interval to the
/// same socket address.
pub const DEFAULT_DIAL_INTERVAL_PER_ADDR: Duration = Duration::from_secs(5);

/// Default for [`Config::dial_stagger`]: 500 ms.
///
/// A peer's best address may be one that swallows the dial until it times
/// out (a NAT that drops unsolicited packets, a host that left): trying
/// the next after half a second, while the first may still answer, keeps
/// that from costing the whole dial timeout, and costs a second connection
/// only when the first address is slow and alive.
pub const DEFAULT_DIAL_STAGGER: Duration = Duration::from_millis(500);

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

/// How long a session replaced by a newer one with the same peer (one
/// session per pair of peers) stays open before its graceful close. Protects
/// requests in flight on it: they are answered, while sends by peer id
/// ([`ServiceControl::try_send_to_peer`](crate::ServiceControl::try_send_to_peer))
/// already go to the newer one.
pub const REPLACED_SESSION_GRACE: Duration = Duration::from_secs(2);

/// External addresses ([`ServiceControl::add_external_address`](crate::ServiceControl::add_external_address))
/// kept; protects the size of signed records.
pub const MAX_EXTERNAL_ADDRS: usize = 8;

/// Addresses [`ServiceControl::announce_addrs`](crate::ServiceControl::announce_addrs)
/// returns at most: what a signed peer record or presence record may carry
/// (16), so a host with many interfaces still publishes one.
pub const MAX_ANNOUNCED_ADDRS: usize = 16;

/// Frames queued per protocol substream, on top of the byte bound of
/// [`Config::send_queue_bytes`]. Protects memory from floods of empty frames.
pub const MAX_QUEUED_FRAMES_PER_STREAM: usize = 256;

/// Frames that may wait for one peer while it is dialled (see
/// [`ServiceControl::try_send_to_peer`](crate::ServiceControl::try_send_to_peer)).
pub const MAX_QUEUED_FRAMES_PER_PEER: usize = 64;

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
    /// See [`DEFAULT_MAX_INBOUND_HANDSHAKES`].
    pub max_inbound_handshakes: usize,
    /// See [`DEFAULT_MAX_INBOUND_PER_IP`].
    pub max_inbound_per_ip: usize,
    /// See [`DEFAULT_MAX_HANDSHAKES_PER_IP`].
    pub max_handshakes_per_ip: usize,
    /// See [`DEFAULT_MAX_INBOUND_PER_SUBNET`].
    pub max_inbound_per_subnet: usize,
    /// See [`DEFAULT_HANDSHAKE_RATE_PER_IP`].
    pub handshake_rate_per_ip: u32,
    /// See [`DEFAULT_MAX_OUTBOUND_SESSIONS`].
    pub max_outbound_sessions: usize,
    /// See [`DEFAULT_DIALS_PER_ADDR_BURST`].
    pub dials_per_addr_burst: u32,
    /// See [`DEFAULT_DIAL_INTERVAL_PER_ADDR`].
    pub dial_interval_per_addr: Duration,
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
    /// Keep every session even when several connect the same two peers
    /// (default `false`: one session per pair of peers, see
    /// [`ServiceControl::dial`](crate::ServiceControl::dial)). For benchmarks
    /// and tests that measure many sessions between two nodes.
    pub allow_duplicate_sessions: bool,
    /// Bounds of the service's address book (see
    /// [`crate::address_book`]).
    pub address_book: crate::address_book::AddressBookConfig,
    /// How long [`ServiceControl::dial_peer`](crate::ServiceControl::dial_peer)
    /// waits after a peer's addresses all failed before it dials that peer
    /// again; the wait doubles with each further failure up to
    /// `dial_backoff_max` and ends with a success. Default 1 s.
    pub dial_backoff: Duration,
    /// Longest such wait. Default 60 s.
    pub dial_backoff_max: Duration,
    /// How long `dial_peer` gives one address before it also tries the
    /// next, best first, without cancelling the first (see
    /// [`DEFAULT_DIAL_STAGGER`]).
    pub dial_stagger: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_inbound_sessions: DEFAULT_MAX_INBOUND_SESSIONS,
            max_inbound_handshakes: DEFAULT_MAX_INBOUND_HANDSHAKES,
            max_inbound_per_ip: DEFAULT_MAX_INBOUND_PER_IP,
            max_handshakes_per_ip: DEFAULT_MAX_HANDSHAKES_PER_IP,
            max_inbound_per_subnet: DEFAULT_MAX_INBOUND_PER_SUBNET,
            handshake_rate_per_ip: DEFAULT_HANDSHAKE_RATE_PER_IP,
            max_outbound_sessions: DEFAULT_MAX_OUTBOUND_SESSIONS,
            dials_per_addr_burst: DEFAULT_DIALS_PER_ADDR_BURST,
            dial_interval_per_addr: DEFAULT_DIAL_INTERVAL_PER_ADDR,
            max_streams_per_session: DEFAULT_MAX_STREAMS_PER_SESSION,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            negotiation_timeout: DEFAULT_NEGOTIATION_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            send_queue_bytes: DEFAULT_SEND_QUEUE_BYTES,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            handler_queue: DEFAULT_HANDLER_QUEUE,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            allow_duplicate_sessions: false,
            address_book: crate::address_book::AddressBookConfig::default(),
            dial_backoff: Duration::from_secs(1),
            dial_backoff_max: Duration::from_secs(60),
            dial_stagger: DEFAULT_DIAL_STAGGER,
        }
    }
}
