//! Transport errors.

use std::{io, time::Duration};

use crate::Multiaddr;

/// Why a dial, listen or accept failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// This transport cannot handle the address (wrong protocol or shape).
    #[error("address {0} is not supported by this transport")]
    UnsupportedAddress(Multiaddr),
    /// The dial did not complete within the configured timeout.
    #[error("dial to {addr} timed out after {after:?}")]
    DialTimeout {
        /// The address dialled.
        addr: Multiaddr,
        /// The timeout that expired.
        after: Duration,
    },
    /// Nobody listens at the address, or the listener refused the connection.
    #[error("connection to {0} refused")]
    ConnectionRefused(Multiaddr),
    /// The address (memory port) is already taken by another listener.
    #[error("address {0} is already in use")]
    AddressInUse(Multiaddr),
    /// A `/dns*` name did not resolve to any usable address.
    #[error("could not resolve {name}: {reason}")]
    Resolve {
        /// The name looked up.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The listener was closed.
    #[error("listener closed")]
    ListenerClosed,
    /// A relay did not open the circuit to the peer named in the address
    /// (it holds no reservation there, a limit of the relay was reached,
    /// or the peer refused).
    #[error("relay for {addr} refused the circuit: {reason}")]
    RelayRefused {
        /// The address dialled.
        addr: Multiaddr,
        /// The relay's answer.
        reason: String,
    },
    /// An operating-system error, with the address it concerned.
    #[error("{context} {addr}: {source}")]
    Io {
        /// What was being done (`"dial"`, `"listen on"`, `"accept on"`).
        context: &'static str,
        /// The address concerned.
        addr: Multiaddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}
