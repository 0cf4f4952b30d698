//! Session events and the failures of dials started by the protocols,
//! printed as the service reports them.

use std::collections::HashSet;
use std::sync::Arc;

use shoal::{CloseReason, ServiceContext, ServiceError, ServiceEvent, ServiceHandle};
use shoal_transport::Multiaddr;
use tokio::sync::Notify;

use crate::dialer;

/// Prints session events and the failures of dials the node did not start
/// itself; tells the main loop that the sessions changed.
pub(crate) struct Printer {
    /// Addresses whose dial failures the [`Dialer`](crate::dialer::Dialer)
    /// reports itself.
    pub(crate) quiet: HashSet<Multiaddr>,
    pub(crate) sessions_changed: Arc<Notify>,
}

impl ServiceHandle for Printer {
    fn handle_event(&mut self, _: &mut ServiceContext<'_>, event: ServiceEvent) {
        match event {
            ServiceEvent::SessionOpened { session, .. } => {
                println!(
                    "connected: {} via {} ({:?})",
                    session.peer, session.remote_addr, session.direction
                );
                self.sessions_changed.notify_one();
            }
            ServiceEvent::SessionClosed { session, reason } => {
                let reason = match reason {
                    CloseReason::Remote => "closed by the peer".to_owned(),
                    other => other.to_string(),
                };
                println!("disconnected: {} ({reason})", session.peer);
                self.sessions_changed.notify_one();
            }
            _ => {}
        }
    }

    fn handle_error(&mut self, _: &mut ServiceContext<'_>, error: ServiceError) {
        match &error {
            ServiceError::DialFailed { addr, error, .. }
                if !self.quiet.contains(&addr.without_peer_id()) =>
            {
                println!("dial failed: {addr}: {}", dialer::short_reason(error));
            }
            _ => tracing::debug!(%error, "service error"),
        }
    }
}

/// `[addr, addr]`.
pub(crate) fn list(addrs: &[Multiaddr]) -> String {
    let texts: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    format!("[{}]", texts.join(", "))
}
