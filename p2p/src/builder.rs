//! [`ServiceBuilder`]: identity, protocols, transports, listen addresses,
//! limits and timeouts.

use std::{sync::Arc, time::Duration};

use shoal_identity::Keypair;
use shoal_transport::{BoxedTransport, Multiaddr, TcpTransport, Transport};
use tokio::sync::mpsc;

use crate::{
    BuildError, ProtocolMeta, Service, ServiceEvents, ServiceHandle,
    config::{Config, REPORT_QUEUE},
    negotiation::{MAX_PROTOCOL_NAME_LEN, MAX_VERSIONS},
    protocol::{Kind, task::TaskHandler},
    service::{
        PendingHandler,
        shared::{ProtocolEntry, Shared, Sink},
    },
};

/// Builds a [`Service`].
///
/// Defaults: TCP transport (when no transport is added), no listen
/// addresses, the `()` service handle, every limit from
/// [`config`](crate::config), yamux defaults with
/// `max_concurrent_streams` = [`Config::max_streams_per_session`].
pub struct ServiceBuilder {
    key: Keypair,
    config: Config,
    yamux: shoal_yamux::Config,
    protocols: Vec<ProtocolMeta>,
    listen: Vec<Multiaddr>,
    transports: Vec<BoxedTransport>,
    handle: Box<dyn ServiceHandle>,
    cipher_suites: Option<Vec<shoal_secio::CipherSuite>>,
}

impl std::fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("peer_id", &self.key.peer_id())
            .field("config", &self.config)
            .field("protocols", &self.protocols)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl ServiceBuilder {
    /// A builder for the node identified by `key`.
    pub fn new(key: Keypair) -> ServiceBuilder {
        ServiceBuilder {
            key,
            config: Config::default(),
            yamux: shoal_yamux::Config::default(),
            protocols: Vec::new(),
            listen: Vec::new(),
            transports: Vec::new(),
            handle: Box::new(()),
            cipher_suites: None,
        }
    }

    /// Registers a protocol.
    pub fn protocol(mut self, meta: ProtocolMeta) -> Self {
        self.protocols.push(meta);
        self
    }

    /// Adds a transport; dials and listens use the first one that supports
    /// the address.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transports.push(BoxedTransport::new(transport));
        self
    }

    /// Listens on `addr` once the service runs.
    pub fn listen_on(mut self, addr: Multiaddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Receives service events and errors.
    pub fn handle(mut self, handle: impl ServiceHandle) -> Self {
        self.handle = Box::new(handle);
        self
    }

    /// Receives service events and errors as a [`ServiceEvents`] stream
    /// (instead of a [`ServiceHandle`]): see its documentation for what
    /// happens when it is not read.
    pub fn event_stream(mut self) -> (Self, ServiceEvents) {
        let (handle, events) = ServiceEvents::channel(REPORT_QUEUE);
        self.handle = Box::new(handle);
        (self, events)
    }

    /// The cipher suites this service's handshakes offer and accept, most
    /// preferred first (default: every suite, in
    /// [`CipherSuite::default_preference`](shoal_secio::CipherSuite::default_preference)
    /// order). Each session says which one it got
    /// ([`SessionInfo::cipher_suite`](crate::SessionInfo::cipher_suite)); a
    /// peer that shares none fails the handshake.
    pub fn cipher_suites(
        mut self,
        suites: impl IntoIterator<Item = shoal_secio::CipherSuite>,
    ) -> Self {
        self.cipher_suites = Some(suites.into_iter().collect());
        self
    }

    /// Replaces all limits and timeouts.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The yamux settings of every session (its `max_concurrent_streams` is
    /// overridden by [`ServiceBuilder::max_streams_per_session`]).
    pub fn yamux_config(mut self, config: shoal_yamux::Config) -> Self {
        self.yamux = config;
        self
    }

    setter!(
        /// See [`DEFAULT_MAX_INBOUND_SESSIONS`](crate::config::DEFAULT_MAX_INBOUND_SESSIONS).
        max_inbound_sessions: usize
    );
    setter!(
        /// See [`DEFAULT_MAX_INBOUND_HANDSHAKES`](crate::config::DEFAULT_MAX_INBOUND_HANDSHAKES).
        max_inbound_handshakes: usize
    );
    setter!(
        /// See [`DEFAULT_MAX_INBOUND_PER_IP`](crate::config::DEFAULT_MAX_INBOUND_PER_IP).
        max_inbound_per_ip: usize
    );
    setter!(
        /// See [`DEFAULT_MAX_HANDSHAKES_PER_IP`](crate::config::DEFAULT_MAX_HANDSHAKES_PER_IP).
        max_handshakes_per_ip: usize
    );
    setter!(
        /// See [`DEFAULT_MAX_INBOUND_PER_SUBNET`](crate::config::DEFAULT_MAX_INBOUND_PER_SUBNET).
        max_inbound_per_subnet: usize
    );
    setter!(
        /// See [`DEFAULT_HANDSHAKE_RATE_PER_IP`](crate::config::DEFAULT_HANDSHAKE_RATE_PER_IP).
        handshake_rate_per_ip: u32
    );
    setter!(
        /// See [`DEFAULT_MAX_OUTBOUND_SESSIONS`](crate::config::DEFAULT_MAX_OUTBOUND_SESSIONS).
        max_outbound_sessions: usize
    );
    setter!(
        /// See [`DEFAULT_DIALS_PER_ADDR_BURST`](crate::config::DEFAULT_DIALS_PER_ADDR_BURST).
        dials_per_addr_burst: u32
    );
    setter!(
        /// See [`DEFAULT_DIAL_INTERVAL_PER_ADDR`](crate::config::DEFAULT_DIAL_INTERVAL_PER_ADDR).
        dial_interval_per_addr: Duration
    );
    setter!(
        /// See [`DEFAULT_MAX_STREAMS_PER_SESSION`](crate::config::DEFAULT_MAX_STREAMS_PER_SESSION).
        max_streams_per_session: usize
    );
    setter!(
        /// See [`DEFAULT_HANDSHAKE_TIMEOUT`](crate::config::DEFAULT_HANDSHAKE_TIMEOUT).
        handshake_timeout: Duration
    );
    setter!(
        /// See [`DEFAULT_NEGOTIATION_TIMEOUT`](crate::config::DEFAULT_NEGOTIATION_TIMEOUT).
        negotiation_timeout: Duration
    );
    setter!(
        /// See [`DEFAULT_IDLE_TIMEOUT`](crate::config::DEFAULT_IDLE_TIMEOUT).
        idle_timeout: Duration
    );
    setter!(
        /// See [`DEFAULT_SEND_QUEUE_BYTES`](crate::config::DEFAULT_SEND_QUEUE_BYTES).
        send_queue_bytes: usize
    );
    setter!(
        /// See [`DEFAULT_MAX_FRAME_SIZE`](crate::config::DEFAULT_MAX_FRAME_SIZE).
        max_frame_size: usize
    );
    setter!(
        /// See [`DEFAULT_HANDLER_QUEUE`](crate::config::DEFAULT_HANDLER_QUEUE).
        handler_queue: usize
    );
    setter!(
        /// See [`DEFAULT_CLOSE_TIMEOUT`](crate::config::DEFAULT_CLOSE_TIMEOUT).
        close_timeout: Duration
    );
    setter!(
        /// See [`Config::allow_duplicate_sessions`].
        allow_duplicate_sessions: bool
    );
    setter!(
        /// See [`DEFAULT_SHUTDOWN_TIMEOUT`](crate::config::DEFAULT_SHUTDOWN_TIMEOUT).
        shutdown_timeout: Duration
    );

    fn validate(&self) -> Result<(), BuildError> {
        let c = &self.config;
        for (name, value) in [
            ("max_streams_per_session", c.max_streams_per_session),
            ("send_queue_bytes", c.send_queue_bytes),
            ("handler_queue", c.handler_queue),
        ] {
            if value == 0 {
                return Err(BuildError::Zero(name));
            }
        }
        for (i, p) in self.protocols.iter().enumerate() {
            if p.name.is_empty() || p.name.len() > MAX_PROTOCOL_NAME_LEN {
                return Err(BuildError::BadName(p.name.clone()));
            }
            if p.versions.is_empty() || p.versions.len() > MAX_VERSIONS {
                return Err(BuildError::BadVersions(p.name.clone()));
            }
            let frame = p.max_frame_size.unwrap_or(c.max_frame_size);
            let queue = c.send_queue_bytes.min(u32::MAX as usize);
            if frame > queue {
                return Err(BuildError::FrameOverQueue {
                    name: p.name.clone(),
                    frame,
                    queue,
                });
            }
            for q in &self.protocols[..i] {
                if q.id == p.id {
                    return Err(BuildError::DuplicateId(p.id));
                }
                if q.name == p.name {
                    return Err(BuildError::DuplicateName(p.name.clone()));
                }
            }
        }
        Ok(())
    }

    /// Checks the settings and builds the service. Spawn (or poll) the
    /// returned [`Service`]; get handles with [`Service::control`].
    pub fn build(mut self) -> Result<Service, BuildError> {
        self.validate()?;
        let config = self.config;
        let mut secio = shoal_secio::Config::try_new(self.key)
            .map_err(|e| BuildError::Secio(e.to_string()))?
            .with_handshake_timeout(config.handshake_timeout);
        if let Some(suites) = self.cipher_suites {
            if suites.is_empty() {
                return Err(BuildError::Secio("no cipher suite".to_owned()));
            }
            secio = secio.with_suites(suites);
        }
        let yamux = self
            .yamux
            .with_max_concurrent_streams(config.max_streams_per_session);
        if self.transports.is_empty() {
            self.transports
                .push(BoxedTransport::new(TcpTransport::default()));
        }
        let mut entries = Vec::with_capacity(self.protocols.len());
        let mut handlers = Vec::new();
        for meta in self.protocols {
            let queue = meta.queue.unwrap_or(config.handler_queue);
            let sink = match meta.kind {
                Kind::Service(h) => {
                    let (tx, rx) = mpsc::channel(queue);
                    handlers.push(PendingHandler {
                        protocol: meta.id,
                        handler: TaskHandler::Service(h),
                        rx,
                    });
                    Sink::Events(std::sync::Mutex::new(Some(tx)))
                }
                Kind::Session(f) => {
                    let (tx, rx) = mpsc::channel(queue);
                    handlers.push(PendingHandler {
                        protocol: meta.id,
                        handler: TaskHandler::Session(f),
                        rx,
                    });
                    Sink::Events(std::sync::Mutex::new(Some(tx)))
                }
                Kind::Events(tx) => Sink::Events(std::sync::Mutex::new(Some(tx))),
                Kind::Raw(tx) => Sink::Raw(std::sync::Mutex::new(Some(tx))),
            };
            entries.push(ProtocolEntry {
                id: meta.id,
                max_frame_size: meta.max_frame_size.unwrap_or(config.max_frame_size),
                name: meta.name,
                versions: meta.versions,
                over_relay: meta.over_relay,
                sink,
            });
        }
        let (reports_tx, reports_rx) = mpsc::channel(REPORT_QUEUE);
        let shared = Arc::new(Shared::new(
            config,
            secio,
            yamux,
            self.transports,
            entries,
            reports_tx,
        ));
        Ok(Service::new(
            shared,
            self.handle,
            handlers,
            reports_rx,
            self.listen,
        ))
    }
}
