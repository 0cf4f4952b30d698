//! Listener tasks: accept, enforce the inbound-session limit at accept time,
//! hand each connection to its own task.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use shoal_transport::{BoxedListener, Listener, ListenerExt, TransportError};

use super::{connection, shared::Shared};
use crate::{ListenerId, ServiceError, ServiceEvent};

/// Pause after a failed accept (e.g. out of file descriptors) so a
/// persistent error does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

pub(crate) async fn run(shared: Arc<Shared>, id: ListenerId, mut listener: BoxedListener) {
    let addr = listener.local_addr().clone();
    shared
        .report_event(ServiceEvent::ListenStarted {
            id,
            addr: addr.clone(),
        })
        .await;
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(inbound) => {
                // Admit now, before any handshake byte: half-open handshakes
                // are bounded in total, per address and per subnet.
                match shared.admission.admit(&inbound.remote_addr, Instant::now()) {
                    Ok(ticket) => {
                        let shared2 = shared.clone();
                        shared
                            .tasks
                            .spawn(connection::inbound(shared2, inbound, ticket));
                    }
                    Err(refusal) => {
                        drop(inbound.connection);
                        shared.try_report_error(ServiceError::InboundRefused {
                            remote_addr: inbound.remote_addr,
                            reason: refusal.as_str(),
                        });
                    }
                }
            }
            Err(TransportError::ListenerClosed) => break,
            Err(error) => {
                shared.try_report_error(ServiceError::AcceptFailed {
                    addr: addr.clone(),
                    error: Arc::new(error),
                });
                tokio::select! {
                    () = shared.shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
            }
        }
    }
    drop(listener);
    super::shared::lock(&shared.listeners).remove(&id);
    shared.addrs_changed();
    shared
        .report_event(ServiceEvent::ListenClosed { id, addr })
        .await;
}
