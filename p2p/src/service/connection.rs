//! Connection setup, both directions: transport → secio → session.

use std::sync::Arc;

use shoal_identity::PeerId;
use shoal_transport::{BoxedConnection, Inbound, Multiaddr, Protocol, Transport};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::{admission::Ticket, shared::Shared};
use crate::{
    DialError, DialId, DialOptions, Direction, ServiceError, SessionInfo,
    session::{self, Opened},
};

/// The reply channel of an awaited dial.
pub(crate) type DialReply = oneshot::Sender<Result<Arc<SessionInfo>, DialError>>;

/// Runs an accepted connection: handshake under the timeout, then the
/// session. `ticket` is its admission, taken at accept time; the session
/// slot is taken once the handshake succeeded.
pub(crate) async fn inbound(
    shared: Arc<Shared>,
    inbound: Inbound<BoxedConnection>,
    mut ticket: Ticket,
) {
    let Inbound {
        connection,
        remote_addr,
        ..
    } = inbound;
    let handshake = shoal_secio::handshake_inbound(connection, &shared.secio);
    let secure = tokio::select! {
        () = shared.shutdown.cancelled() => return,
        result = handshake => result,
    };
    match secure {
        Ok(secure) => {
            ticket.established();
            let Ok(permit) = shared.inbound.clone().try_acquire_owned() else {
                drop(secure);
                shared.try_report_error(ServiceError::InboundLimit {
                    remote_addr,
                    limit: shared.config.max_inbound_sessions,
                });
                return;
            };
            let opened = Opened {
                direction: Direction::Inbound,
                remote_addr,
                dial: None,
                reply: None,
                open: crate::TargetProtocols::None,
            };
            session::run(shared, secure, opened, permit).await;
            drop(ticket);
        }
        Err(error) => {
            shared
                .report_error(ServiceError::HandshakeFailed {
                    remote_addr,
                    error: Arc::new(error),
                })
                .await;
        }
    }
}

/// The peer a dial must reach: the options' or the address's `/p2p/` one.
pub(crate) fn expected_peer(
    addr: &Multiaddr,
    opts: &DialOptions,
) -> Result<Option<PeerId>, DialError> {
    match (opts.expected_peer, addr.peer_id()) {
        (Some(expected), Some(in_addr)) if expected != in_addr => {
            Err(DialError::ConflictingPeerId { expected, in_addr })
        }
        (Some(p), _) | (None, Some(p)) => Ok(Some(p)),
        (None, None) => Ok(None),
    }
}

/// Runs a dial: transport, handshake (checking the expected peer), then the
/// session. `permit` is the outbound-session slot.
pub(crate) async fn outbound(
    shared: Arc<Shared>,
    id: DialId,
    addr: Multiaddr,
    opts: DialOptions,
    permit: OwnedSemaphorePermit,
    reply: Option<DialReply>,
) {
    let expected = opts.expected_peer.or_else(|| addr.peer_id());
    let connect = async {
        let expected = expected_peer(&addr, &opts)?;
        let transport = shared
            .transport_for(&addr)
            .ok_or_else(|| DialError::NoTransport(addr.clone()))?;
        // A relayed address as announced ends at the circuit; the relay
        // must be told whom to reach.
        let target = match (addr.is_relayed(), addr.peer_id(), expected) {
            (true, None, Some(peer)) => addr.clone().with(Protocol::P2p(peer)),
            _ => addr.clone(),
        };
        let connection = transport
            .dial(&target)
            .await
            .map_err(|e| DialError::Transport(Arc::new(e)))?;
        shoal_secio::handshake_outbound(connection, &shared.secio, expected)
            .await
            .map_err(|e| DialError::Handshake(Arc::new(e)))
    };
    let result = tokio::select! {
        () = shared.shutdown.cancelled() => Err(DialError::ShuttingDown),
        result = connect => result,
    };
    match result {
        Ok(secure) => {
            let opened = Opened {
                direction: Direction::Outbound,
                remote_addr: addr,
                dial: Some(id),
                reply,
                open: opts.protocols,
            };
            session::run(shared, secure, opened, permit).await;
        }
        Err(error) => {
            if let Some(reply) = reply {
                let _ = reply.send(Err(error.clone()));
            }
            shared
                .report_error(ServiceError::DialFailed {
                    id,
                    addr,
                    expected,
                    error,
                })
                .await;
        }
    }
}
