//! Shoal relays: a reachable node forwards connections to peers that no
//! one can dial (behind a NAT or a firewall), without reading them.
//!
//! # Tour
//! - [`Relay::new`] declares the two protocols ([`HOP_PROTOCOL`] between a
//!   client and its relay, [`STOP_PROTOCOL`] from the relay to the peer it
//!   forwards to) and the [`RelayTransport`]; [`Relay::install`] adds them
//!   to a [`ServiceBuilder`]; [`Relay::start`] runs them once the service
//!   exists and returns a [`RelayHandle`].
//! - [`Config`]: whether to serve as a relay (with its [`Limits`]), which
//!   relays to reserve on and how many reservations to hold.
//! - [`limits`]: what a relay grants, in total, per peer and per network,
//!   and the sans-IO [`Ledger`](limits::Ledger) that enforces it.
//! - [`protocol`]: the control messages and their framing (also in
//!   `docs/PROTOCOL.md`, section 13).
//!
//! # How a connection goes through a relay
//! ```text
//!  B (behind NAT)            R (relay, reachable)            A
//!   ── hop: Reserve ─────────▶ ledger: reserve B
//!   ◀──────── Status{ok, ttl} ─   (held while the stream stays open)
//!   announces /ip4/R/tcp/p/p2p/R/p2p-circuit                 │
//!                              ◀── hop: Connect(B) ──────────┤ dials …/p2p-circuit/p2p/B
//!   ◀── stop: Incoming(A) ─────   ledger: open circuit
//!   ── stop: Status{ok} ──────▶
//!                              ── hop: Status{ok} ──────────▶
//!   ◀═════════ secio handshake, yamux, protocols: end to end ═════▶
//!              (R copies bytes, up to the circuit's limit)
//! ```
//! The relay learns the two peer ids and how many bytes pass; the
//! handshake runs between A and B, so a relay that changes a byte makes it
//! fail. On a relayed session only protocols declared
//! [`over_relay`](shoal::ProtocolMetaBuilder::over_relay) run.
//!
//! # Example
//! ```
//! use shoal::{ProtocolId, ServiceBuilder};
//! use shoal_identity::Keypair;
//! use shoal_relay::{Config, Limits, Relay};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A node that serves as a relay for others.
//! let mut relay = Relay::new(ProtocolId(20), ProtocolId(21), Config {
//!     serve: Some(Limits::default()),
//!     ..Config::default()
//! });
//! let builder = relay.install(ServiceBuilder::new(Keypair::generate()));
//! let service = builder.build()?;
//! let control = service.control();
//! tokio::spawn(service);
//! let handle = relay.start(control.clone()).await;
//! assert_eq!(handle.server().map(|s| s.stats().reservations), Some(0));
//! control.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
pub mod limits;
pub mod protocol;
mod server;
mod transport;

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use shoal::{ProtocolId, ProtocolMeta, RawStreams, ServiceBuilder, ServiceControl};
use shoal_identity::PeerId;
use shoal_transport::Multiaddr;
use tokio::sync::{mpsc, watch};

pub use client::MAX_RELAY_CANDIDATES;
pub use limits::Limits;
pub use server::{ServerHandle, ServerStats};
pub use transport::{CircuitListener, RelayTransport, circuit_listen_addr};

/// Name of the protocol between a client and its relay.
pub const HOP_PROTOCOL: &str = "/shoal/relay/hop";
/// Name of the protocol from a relay to the peer a circuit goes to.
pub const STOP_PROTOCOL: &str = "/shoal/relay/stop";

/// Default [`Config::reservations`]: two, so losing a relay leaves the
/// node reachable through the other while it finds a new one.
pub const DEFAULT_RESERVATIONS: usize = 2;
/// Default [`Config::retry_interval`].
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Default [`Config::dial_timeout`].
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How a node takes part in relaying.
#[derive(Debug, Clone)]
pub struct Config {
    /// Serve as a relay for others, within these limits (`None`: do not;
    /// the hop protocol then refuses requests). Only a node others can
    /// dial should serve.
    pub serve: Option<Limits>,
    /// Relays to reserve on, each ending in its `/p2p/` component (more
    /// can be added with [`RelayHandle::add_relay`]). Empty: this node
    /// only dials through relays.
    pub relays: Vec<Multiaddr>,
    /// Reservations to hold at once (see [`DEFAULT_RESERVATIONS`]).
    pub reservations: usize,
    /// How long a relay that refused or failed is left alone.
    pub retry_interval: Duration,
    /// Time for a circuit to open, and for a relay to answer.
    pub dial_timeout: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            serve: None,
            relays: Vec::new(),
            reservations: DEFAULT_RESERVATIONS,
            retry_interval: DEFAULT_RETRY_INTERVAL,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
        }
    }
}

/// The relay protocols and transport of one node, before and after the
/// service is built.
#[derive(Debug)]
pub struct Relay {
    config: Config,
    hop: ProtocolId,
    stop: ProtocolId,
    metas: Option<(ProtocolMeta, ProtocolMeta)>,
    hop_streams: Option<RawStreams>,
    stop_streams: Option<RawStreams>,
    transport: RelayTransport,
}

impl Relay {
    /// Declares the hop protocol as `hop` and the stop protocol as `stop`.
    pub fn new(hop: ProtocolId, stop: ProtocolId, config: Config) -> Relay {
        // Both are raw: after the control messages the stream carries the
        // relayed connection. Neither runs over a relayed session.
        let (hop_meta, hop_streams) = ProtocolMeta::builder(hop, HOP_PROTOCOL).raw_streams();
        let (stop_meta, stop_streams) = ProtocolMeta::builder(stop, STOP_PROTOCOL).raw_streams();
        let (inbound_tx, inbound_rx) = mpsc::channel(transport::INBOUND_QUEUE);
        let transport = RelayTransport {
            shared: Arc::new(transport::Shared {
                control: OnceLock::new(),
                hop,
                dial_timeout: config.dial_timeout,
                inbound_tx,
                inbound_rx: Mutex::new(Some(inbound_rx)),
            }),
        };
        Relay {
            config,
            hop,
            stop,
            metas: Some((hop_meta, stop_meta)),
            hop_streams: Some(hop_streams),
            stop_streams: Some(stop_streams),
            transport,
        }
    }

    /// Adds the two protocols and the transport to `builder` (once).
    pub fn install(&mut self, builder: ServiceBuilder) -> ServiceBuilder {
        match self.metas.take() {
            Some((hop, stop)) => builder
                .protocol(hop)
                .protocol(stop)
                .transport(self.transport.clone()),
            None => builder,
        }
    }

    /// The transport, for a service assembled by hand instead of
    /// [`install`](Self::install).
    pub fn transport(&self) -> RelayTransport {
        self.transport.clone()
    }

    /// The protocol declarations, for a service assembled by hand (once).
    pub fn protocols(&mut self) -> Option<(ProtocolMeta, ProtocolMeta)> {
        self.metas.take()
    }

    /// Runs the relay parts on the built service: serves as a relay if
    /// configured, listens for circuits (`/p2p-circuit`) and keeps
    /// reservations on the configured relays. Call once, after the
    /// service is spawned.
    pub async fn start(mut self, control: ServiceControl) -> RelayHandle {
        let _ = self.transport.shared.control.set(control.clone());
        let server = match (self.config.serve.take(), self.hop_streams.take()) {
            (Some(limits), Some(streams)) => {
                Some(server::spawn(streams, control.clone(), self.stop, limits))
            }
            // Not a relay: dropping the stream queue makes the service
            // refuse hop requests as unavailable.
            _ => None,
        };
        if let Err(error) = control.listen(circuit_listen_addr()).await {
            tracing::warn!(%error, "cannot listen for relayed connections");
        }
        let stop_streams = self.stop_streams.take().unwrap_or_else(|| {
            ProtocolMeta::builder(self.stop, STOP_PROTOCOL)
                .raw_streams()
                .1
        });
        let client = client::spawn(
            &self.transport.shared,
            control,
            stop_streams,
            self.config.relays.clone(),
            self.config.reservations,
            self.config.retry_interval,
        );
        RelayHandle {
            client,
            server,
            hop: self.hop,
        }
    }
}

/// A node's relay parts, running.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    client: Arc<client::Client>,
    server: Option<ServerHandle>,
    hop: ProtocolId,
}

impl RelayHandle {
    /// The relay side, if this node serves as one.
    pub fn server(&self) -> Option<&ServerHandle> {
        self.server.as_ref()
    }

    /// The addresses others reach this node at through its relays
    /// (`/…/p2p/<relay>/p2p-circuit`), updated as reservations come and
    /// go. They are also added to the service's announced addresses.
    pub fn addrs(&self) -> watch::Receiver<Vec<Multiaddr>> {
        self.client.addrs()
    }

    /// Relays holding a reservation for this node now.
    pub fn reserved(&self) -> Vec<PeerId> {
        self.client.reserved()
    }

    /// Adds a relay to reserve on when fewer than
    /// [`Config::reservations`] are held; `addr` ends in the relay's
    /// `/p2p/` component. Returns whether it is a candidate (at most
    /// [`MAX_RELAY_CANDIDATES`]).
    pub fn add_relay(&self, addr: Multiaddr) -> bool {
        self.client.add_relay(addr)
    }

    /// Whether to hold reservations: `true` (the default) keeps up to
    /// [`Config::reservations`] on the configured relays; `false` releases
    /// those held and makes none, for a node that checks found others can
    /// dial directly (it needs no relay, and a relay's capacity is for
    /// those that do).
    pub fn set_reserving(&self, reserving: bool) {
        self.client.set_wanted(reserving);
    }

    /// The id the hop protocol is registered under.
    pub fn hop_protocol(&self) -> ProtocolId {
        self.hop
    }
}
