//! [`RelayTransport`]: circuits through relays as connections the service
//! runs its secure handshake over, like any other.
//!
//! Dialling `/…/p2p/<relay>/p2p-circuit/p2p/<peer>` reaches the relay (a
//! session the service already has, or a new one), opens a hop stream,
//! asks for a circuit to `<peer>` and returns the stream once the relay
//! said yes. Listening on `/p2p-circuit` yields the circuits relays open
//! to this node through its reservations (see [`crate::RelayHandle`]).

use std::{
    sync::{Arc, Mutex, OnceLock, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use shoal::{DialOptions, ProtocolId, RawStream, ServiceControl};
use shoal_transport::{Inbound, Listener, Multiaddr, Protocol, Transport, TransportError};
use tokio::sync::mpsc;

use crate::protocol::{HopMessage, StatusCode};

/// Circuits handed from the stop side to the listener, at most this many
/// waiting; a relay's circuit beyond them is refused.
pub(crate) const INBOUND_QUEUE: usize = 32;

/// What the transport and the rest of the client share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) control: OnceLock<ServiceControl>,
    pub(crate) hop: ProtocolId,
    pub(crate) dial_timeout: Duration,
    pub(crate) inbound_tx: mpsc::Sender<Inbound<RawStream>>,
    pub(crate) inbound_rx: Mutex<Option<mpsc::Receiver<Inbound<RawStream>>>>,
}

/// Dials and accepts connections through relays; register it with
/// [`ServiceBuilder::transport`](shoal::ServiceBuilder::transport) (done
/// by [`Relay::install`](crate::Relay::install)). It works once
/// [`Relay::start`](crate::Relay::start) gave it the service's control.
#[derive(Debug, Clone)]
pub struct RelayTransport {
    pub(crate) shared: Arc<Shared>,
}

/// The listen address of relayed connections: all circuits, through any
/// relay this node holds a reservation on.
pub fn circuit_listen_addr() -> Multiaddr {
    Multiaddr::empty().with(Protocol::P2pCircuit)
}

fn io_error(addr: &Multiaddr, error: impl std::fmt::Display) -> TransportError {
    TransportError::Io {
        context: "dial",
        addr: addr.clone(),
        source: std::io::Error::other(error.to_string()),
    }
}

impl RelayTransport {
    async fn dial_circuit(&self, addr: &Multiaddr) -> Result<RawStream, TransportError> {
        let Some((relay, Some(peer))) = addr.split_circuit() else {
            return Err(TransportError::UnsupportedAddress(addr.clone()));
        };
        let control = self
            .shared
            .control
            .get()
            .ok_or_else(|| io_error(addr, "the relay client is not started"))?;
        if relay.is_relayed() {
            // A circuit through a circuit: not offered.
            return Err(TransportError::UnsupportedAddress(addr.clone()));
        }
        let session = control
            .dial(relay, DialOptions::default())
            .await
            .map_err(|e| io_error(addr, e))?;
        let mut stream = control
            .open_raw_stream(session.id, self.shared.hop)
            .await
            .map_err(|e| io_error(addr, e))?;
        HopMessage::Connect(peer)
            .write(&mut stream)
            .await
            .map_err(|e| io_error(addr, e))?;
        match HopMessage::read(&mut stream).await {
            Ok(HopMessage::Status(s)) if s.code == StatusCode::Ok => Ok(stream),
            Ok(HopMessage::Status(s)) => Err(TransportError::RelayRefused {
                addr: addr.clone(),
                reason: format!("{:?}", s.code),
            }),
            Ok(_) => Err(io_error(addr, "the relay answered with a request")),
            Err(e) => Err(io_error(addr, e)),
        }
    }
}

impl Transport for RelayTransport {
    type Connection = RawStream;
    type Listener = CircuitListener;

    fn supports(&self, addr: &Multiaddr) -> bool {
        addr.is_relayed()
    }

    async fn listen(&self, addr: &Multiaddr) -> Result<CircuitListener, TransportError> {
        if *addr != circuit_listen_addr() {
            return Err(TransportError::UnsupportedAddress(addr.clone()));
        }
        let rx = self
            .shared
            .inbound_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| TransportError::AddressInUse(addr.clone()))?;
        Ok(CircuitListener {
            addr: addr.clone(),
            rx,
        })
    }

    async fn dial(&self, addr: &Multiaddr) -> Result<RawStream, TransportError> {
        let after = self.shared.dial_timeout;
        tokio::time::timeout(after, self.dial_circuit(addr))
            .await
            .unwrap_or_else(|_| {
                Err(TransportError::DialTimeout {
                    addr: addr.clone(),
                    after,
                })
            })
    }
}

/// Circuits that relays opened to this node.
#[derive(Debug)]
pub struct CircuitListener {
    addr: Multiaddr,
    rx: mpsc::Receiver<Inbound<RawStream>>,
}

impl Listener for CircuitListener {
    type Connection = RawStream;

    fn local_addr(&self) -> &Multiaddr {
        &self.addr
    }

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Inbound<RawStream>, TransportError>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(inbound)) => Poll::Ready(Ok(inbound)),
            Poll::Ready(None) => Poll::Ready(Err(TransportError::ListenerClosed)),
            Poll::Pending => Poll::Pending,
        }
    }
}
