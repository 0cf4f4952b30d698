//! Shoal reachability checks: a node learns which of its addresses others
//! can dial, by asking peers on distinct networks to dial it back.
//!
//! # Tour
//! - [`Reach::new`] declares the two protocols ([`PROTOCOL_NAME`], framed,
//!   for checks and results; [`BACK_PROTOCOL_NAME`], raw, for the nonce on
//!   the dial-back); [`Reach::install`] adds them to a
//!   [`ServiceBuilder`]; [`Reach::start`] runs them and returns a
//!   [`ReachHandle`] whose [`Status`] says which addresses were reached.
//! - [`Prober`]: the service a checker dials back from: its own,
//!   throwaway identity, so the dial-back is a new connection even when the
//!   two nodes are already connected.
//! - [`ReachCore`]: the sans-IO protocol, both roles (see its module for
//!   the rules); [`protocol`]: the messages (also in `docs/PROTOCOL.md`,
//!   section 14).
//!
//! # What a node does with it
//! The candidates are the node's announced direct addresses whose IP is
//! global (or in [`Config::global_ranges`], for test networks). While a
//! check runs they are unknown. An address that
//! [`Config::confirmations`] peers reached is published; one they could
//! not is not. A node with no reachable address is *private*: it stays a
//! DHT client (never in others' routing tables, never a mailbox replica)
//! and is reached through its relays. Verdicts are renewed every
//! [`Config::recheck_interval`] and whenever the announced addresses
//! change.
//!
//! # Example
//! ```
//! use shoal::{ProtocolId, ServiceBuilder};
//! use shoal_identity::Keypair;
//! use shoal_reach::{Config, Reach};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut reach = Reach::new(ProtocolId(11), ProtocolId(12), Config::default());
//! let service = reach.install(ServiceBuilder::new(Keypair::generate())).build()?;
//! let control = service.control();
//! tokio::spawn(service);
//! // No prober: this node asks others, and refuses to check for them.
//! let handle = reach.start(control.clone(), None);
//! assert!(!handle.status().is_reachable());
//! control.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod core;
mod prober;
pub mod protocol;

use std::time::Duration;

use shoal::{
    CoreDriver, CoreHandle, ProtocolId, ProtocolMeta, RawStreams, ServiceBuilder, ServiceControl,
};
use shoal_transport::{AddressScope, IpRange, Multiaddr};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::{mpsc, watch},
};

pub use crate::core::{Output, ReachCore, Status};
pub use prober::Prober;

/// Name of the protocol that carries checks and results.
pub const PROTOCOL_NAME: &str = "/shoal/reach";
/// Name of the raw protocol the dial-back carries its nonce on.
pub const BACK_PROTOCOL_NAME: &str = "/shoal/reach/back";

/// Default [`Config::checkers`].
pub const DEFAULT_CHECKERS: usize = 3;
/// Default [`Config::confirmations`].
pub const DEFAULT_CONFIRMATIONS: usize = 2;
/// Default [`Config::check_timeout`].
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Config::dial_back_timeout`]: a dial-back, its handshake and
/// the nonce's round trip.
pub const DEFAULT_DIAL_BACK_TIMEOUT: Duration = Duration::from_secs(15);
/// Default [`Config::recheck_interval`].
pub const DEFAULT_RECHECK_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Default [`Config::max_dial_backs`].
pub const DEFAULT_MAX_DIAL_BACKS: usize = 8;
/// Default [`Config::dial_backs_per_network_per_minute`].
pub const DEFAULT_DIAL_BACKS_PER_NETWORK_PER_MINUTE: u32 = 12;

/// Time the requester gives the dial-back to deliver its nonce.
const BACK_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How a node checks its addresses and checks others'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Answer others' checks (needs a [`Prober`] at start).
    pub serve: bool,
    /// Peers asked about each address, each on a network (/24 or /48) of
    /// its own, none in the address's.
    pub checkers: usize,
    /// Agreeing answers that settle a verdict.
    pub confirmations: usize,
    /// Time a checker has to answer.
    pub check_timeout: Duration,
    /// Time a dial-back for someone else may take.
    pub dial_back_timeout: Duration,
    /// How often verdicts are renewed.
    pub recheck_interval: Duration,
    /// Dial-backs for others at once.
    pub max_dial_backs: usize,
    /// Dial-backs for requesters of one network per minute.
    pub dial_backs_per_network_per_minute: u32,
    /// IP ranges to treat as global when choosing which addresses to check
    /// (a test network whose "internet" is a reserved range, such as
    /// `198.18.0.0/15`). Empty: only global addresses are checked.
    pub global_ranges: Vec<IpRange>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            serve: true,
            checkers: DEFAULT_CHECKERS,
            confirmations: DEFAULT_CONFIRMATIONS,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            dial_back_timeout: DEFAULT_DIAL_BACK_TIMEOUT,
            recheck_interval: DEFAULT_RECHECK_INTERVAL,
            max_dial_backs: DEFAULT_MAX_DIAL_BACKS,
            dial_backs_per_network_per_minute: DEFAULT_DIAL_BACKS_PER_NETWORK_PER_MINUTE,
            global_ranges: Vec::new(),
        }
    }
}

impl Config {
    /// Whether `addr` is worth checking: a direct TCP address whose IP is
    /// global, or in [`Config::global_ranges`].
    pub fn is_candidate(&self, addr: &Multiaddr) -> bool {
        if addr.is_relayed() || !protocol::is_checkable(&addr.without_peer_id()) {
            return false;
        }
        let Some(ip) = addr.to_socket_addr().map(|s| s.ip().to_canonical()) else {
            return false;
        };
        AddressScope::of_ip(ip) == AddressScope::Global
            || self.global_ranges.iter().any(|r| r.contains(ip))
    }
}

/// The reachability protocols of one node, before and after the service
/// is built.
pub struct Reach {
    config: Config,
    metas: Option<(ProtocolMeta, ProtocolMeta)>,
    back_streams: Option<RawStreams>,
    core: CoreHandle<ReachCore>,
    dial_backs: Option<mpsc::Receiver<Output>>,
    status: watch::Receiver<Status>,
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reach")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Reach {
    /// Declares the check protocol as `id` and the dial-back protocol as
    /// `back`.
    pub fn new(id: ProtocolId, back: ProtocolId, config: Config) -> Reach {
        let mut seed = [0u8; 8];
        // Nonces need only be unguessable by the checkers' neighbours; a
        // failed read of the OS's randomness leaves the clock.
        if getrandom::fill(&mut seed).is_err() {
            seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                .to_le_bytes();
        }
        let seed = u64::from_le_bytes(seed);
        let (status_tx, status) = watch::channel(Status::default());
        let (dial_tx, dial_backs) = mpsc::channel(config.max_dial_backs.max(1));
        let core = ReachCore::new(config.clone(), seed);
        let (driver, core) = CoreDriver::new(core, move |output| match output {
            Output::Changed(status) => {
                status_tx.send_replace(status);
            }
            // Bounded by the core's own limit on dial-backs at once.
            dial @ Output::DialBack { .. } => {
                let _ = dial_tx.try_send(dial);
            }
        });
        // Checks need the requester's IP: never over a relay.
        let meta = ProtocolMeta::builder(id, PROTOCOL_NAME)
            .max_frame_size(protocol::MAX_MESSAGE_SIZE)
            .service_handle(driver);
        let (back_meta, back_streams) =
            ProtocolMeta::builder(back, BACK_PROTOCOL_NAME).raw_streams();
        Reach {
            config,
            metas: Some((meta, back_meta)),
            back_streams: Some(back_streams),
            core,
            dial_backs: Some(dial_backs),
            status,
        }
    }

    /// A watch of the verdicts, available before [`Reach::start`].
    pub fn changes(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Adds the two protocols to `builder` (once).
    pub fn install(&mut self, builder: ServiceBuilder) -> ServiceBuilder {
        match self.metas.take() {
            Some((check, back)) => builder.protocol(check).protocol(back),
            None => builder,
        }
    }

    /// Runs the protocols on the built, spawned service: answers
    /// dial-backs to this node, checks its announced addresses whenever
    /// they change, and (with a `prober`) checks others'. Call once.
    pub fn start(mut self, control: ServiceControl, prober: Option<Prober>) -> ReachHandle {
        if let Some(streams) = self.back_streams.take() {
            tokio::spawn(answer_dial_backs(streams, self.core.clone()));
        }
        if let Some(rx) = self.dial_backs.take() {
            if prober.is_none() || !self.config.serve {
                self.core.with(|c, _| c.stop_serving());
            }
            tokio::spawn(dial_back(rx, prober, self.core.clone()));
        }
        tokio::spawn(feed_candidates(
            control,
            self.config.clone(),
            self.core.clone(),
        ));
        ReachHandle {
            status: self.status,
        }
    }
}

/// A node's reachability, as checks found it.
#[derive(Debug, Clone)]
pub struct ReachHandle {
    status: watch::Receiver<Status>,
}

impl ReachHandle {
    /// The verdicts now.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A watch of the verdicts, to act when they change.
    pub fn changes(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }
}

/// Reads the nonce of each dial-back, and echoes it if it is one of ours.
async fn answer_dial_backs(mut streams: RawStreams, core: CoreHandle<ReachCore>) {
    while let Some(mut stream) = streams.accept().await {
        let core = core.clone();
        tokio::spawn(async move {
            let mut nonce = [0u8; 8];
            let read = tokio::time::timeout(BACK_READ_TIMEOUT, stream.read_exact(&mut nonce)).await;
            if !matches!(read, Ok(Ok(_))) {
                return;
            }
            let ours = core.with(|c, now| c.nonce_received(now, u64::from_be_bytes(nonce)));
            if ours {
                let _ = stream.write_all(&nonce).await;
                let _ = stream.shutdown().await;
            }
        });
    }
}

/// Carries out the core's dial-backs for others.
async fn dial_back(
    mut rx: mpsc::Receiver<Output>,
    prober: Option<Prober>,
    core: CoreHandle<ReachCore>,
) {
    while let Some(output) = rx.recv().await {
        let Output::DialBack {
            requester,
            addr,
            nonce,
        } = output
        else {
            continue;
        };
        let (prober, core) = (prober.clone(), core.clone());
        tokio::spawn(async move {
            let reached = match &prober {
                Some(p) => p.dial_back(&addr, requester, nonce).await,
                None => false,
            };
            core.with(|c, now| c.dial_back_done(now, requester, nonce, reached));
        });
    }
}

/// Gives the core the announced direct addresses, now and on each change.
async fn feed_candidates(control: ServiceControl, config: Config, core: CoreHandle<ReachCore>) {
    let mut changes = control.announce_changes();
    loop {
        let candidates: Vec<Multiaddr> = control
            .announce_addrs()
            .into_iter()
            .filter(|a| config.is_candidate(a))
            .collect();
        core.with(|c, now| c.set_candidates(now, &candidates));
        if changes.changed().await.is_err() || control.is_stopped() {
            return;
        }
    }
}
