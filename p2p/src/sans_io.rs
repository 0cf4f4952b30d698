//! The shape of a sans-IO protocol core: a state machine fed messages,
//! session changes and time, that hands back messages to send, events and
//! its next deadline. It does no I/O and reads no clock, so the same core
//! runs under the tokio driver ([`CoreDriver`](crate::CoreDriver)), in the
//! simulator, and in tests and fuzzers that feed it bytes.
//!
//! ```
//! use std::time::Instant;
//! use shoal::{BoxError, Bytes, Core, Now, PeerId, Remote, Transmit};
//!
//! /// Answers every message with its length.
//! #[derive(Default)]
//! struct Count {
//!     out: Vec<Transmit>,
//! }
//!
//! impl Core for Count {
//!     type Event = ();
//!     fn handle_message(&mut self, _: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
//!         let len = (bytes.len() as u32).to_be_bytes();
//!         self.out.push(Transmit { peer: from.peer, bytes: Bytes::copy_from_slice(&len) });
//!         Ok(())
//!     }
//!     fn handle_timeout(&mut self, _: Now) {}
//!     fn poll_timeout(&self) -> Option<Instant> { None }
//!     fn poll_transmit(&mut self) -> Option<Transmit> { self.out.pop() }
//!     fn poll_event(&mut self) -> Option<()> { None }
//! }
//!
//! let mut core = Count::default();
//! let from = Remote::dialled(PeerId::from_bytes([1; 32]), "/memory/1".parse().unwrap());
//! core.handle_message(Now::at(Instant::now(), 0), &from, b"hello").unwrap();
//! assert_eq!(core.poll_transmit().unwrap().bytes, &5u32.to_be_bytes()[..]);
//! ```

use std::time::Instant;

use bytes::Bytes;
use shoal_identity::PeerId;
use shoal_transport::Multiaddr;

use crate::{BoxError, Direction, SessionInfo};

/// The time as a core takes it: a monotonic instant for deadlines and the
/// wall clock for anything signed or stored with an expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time (tokio's clock under the driver, so paused test time
    /// works; simulated time in the simulator).
    pub instant: Instant,
    /// The wall clock, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// A given time.
    pub fn at(instant: Instant, unix_ms: u64) -> Now {
        Now { instant, unix_ms }
    }

    /// Tokio's clock and the system's wall clock.
    pub fn system() -> Now {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Now {
            instant: tokio::time::Instant::now().into_std(),
            unix_ms,
        }
    }

    /// The wall clock in whole seconds.
    pub fn unix_secs(&self) -> u64 {
        self.unix_ms / 1000
    }
}

/// The peer at the other end of a session, as a core sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The authenticated peer.
    pub peer: PeerId,
    /// The address of the connection.
    pub addr: Multiaddr,
    /// Who dialled. Only an address we dialled is known to be one others
    /// can dial too; an inbound connection's port is the peer's own.
    pub direction: Direction,
}

impl Remote {
    /// A peer reached by dialling `addr`.
    pub fn dialled(peer: PeerId, addr: Multiaddr) -> Remote {
        Remote {
            peer,
            addr,
            direction: Direction::Outbound,
        }
    }

    /// The address to remember for the peer: the connection's, if we
    /// dialled it.
    pub fn dialable_addr(&self) -> Option<&Multiaddr> {
        (self.direction == Direction::Outbound).then_some(&self.addr)
    }
}

impl From<&SessionInfo> for Remote {
    fn from(session: &SessionInfo) -> Remote {
        Remote {
            peer: session.peer,
            addr: session.remote_addr.clone(),
            direction: session.direction,
        }
    }
}

/// One message a core wants sent: a frame of the core's protocol to a
/// peer, by id. The driver finds (or dials) the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The receiving peer.
    pub peer: PeerId,
    /// The frame, exactly as it goes on the wire.
    pub bytes: Bytes,
}

/// A sans-IO protocol core. After every call into it, its driver drains
/// [`poll_transmit`](Core::poll_transmit), [`poll_event`](Core::poll_event)
/// and the optional queues, then sleeps until
/// [`poll_timeout`](Core::poll_timeout).
pub trait Core: Send + 'static {
    /// What the core tells its application.
    type Event: Send + 'static;

    /// The protocol opened with `remote` (the first session of the peer).
    fn peer_connected(&mut self, now: Now, remote: &Remote) {
        let _ = (now, remote);
    }

    /// The protocol closed with `peer` (its last session).
    fn peer_disconnected(&mut self, now: Now, peer: PeerId) {
        let _ = (now, peer);
    }

    /// A frame arrived from `from`. `Err` means the peer misbehaved: the
    /// driver closes the protocol with it.
    fn handle_message(&mut self, now: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError>;

    /// The deadline from [`poll_timeout`](Core::poll_timeout) has passed.
    fn handle_timeout(&mut self, now: Now);

    /// When the core next needs [`handle_timeout`](Core::handle_timeout);
    /// `None` while it waits only for input.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next message to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;

    /// The next event for the application.
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// Messages to `peer` could not be delivered: it could not be reached.
    fn dial_failed(&mut self, now: Now, peer: PeerId) {
        let _ = (now, peer);
    }

    /// Addresses the core learned for a peer from other peers (a DHT's
    /// answers), for the service's address book. Drained before the
    /// transmits, so a message to a peer just learned can be dialled.
    fn poll_addresses(&mut self) -> Option<(PeerId, Vec<Multiaddr>)> {
        None
    }

    /// A peer the driver must close the protocol with (misbehaviour found
    /// outside `handle_message`, e.g. by a scoring heartbeat).
    fn poll_close(&mut self) -> Option<PeerId> {
        None
    }
}
