//! The service-wide identify handler: sends our identify message when the
//! protocol opens on a session, checks the peer's.

use std::{collections::HashSet, sync::Arc};

use shoal::address_book::AddressSource;
use shoal::{HandlerResult, ProtocolContextMut, ServiceProtocol, SessionId};

use crate::{Event, IdentifyError, IdentifyInfo, Shared, observed::Observed, record::LocalRecord};

pub(crate) struct IdentifyHandler {
    pub(crate) shared: Arc<Shared>,
    pub(crate) local: LocalRecord,
    /// Sessions whose identify message has arrived (one is allowed).
    received: HashSet<SessionId>,
    /// Where peers see us.
    observed: Observed,
}

impl IdentifyHandler {
    pub(crate) fn new(shared: Arc<Shared>, local: LocalRecord) -> IdentifyHandler {
        IdentifyHandler {
            shared,
            local,
            received: HashSet::new(),
            observed: Observed::default(),
        }
    }

    /// Counts where the peer sees us; once confirmed, announces that IP
    /// with the port of each unspecified listen address.
    fn note_observed(
        &mut self,
        ctx: &ProtocolContextMut<'_>,
        session: &shoal::SessionInfo,
        info: &IdentifyInfo,
    ) {
        let observed = info.observed_addr.as_ref().and_then(|a| a.to_socket_addr());
        let reporter = session.remote_addr.to_socket_addr();
        let (Some(observed), Some(reporter)) = (observed, reporter) else {
            return;
        };
        let needed = self.shared.config.confirm_observed;
        let now = std::time::Instant::now();
        let Some(ip) = self
            .observed
            .report(observed.ip(), reporter.ip(), needed, now)
        else {
            return;
        };
        for listen in ctx.control().listen_addrs() {
            let Some(bound) = listen.to_socket_addr() else {
                continue;
            };
            if bound.ip().is_unspecified() && bound.is_ipv4() == ip.is_ipv4() {
                let addr = std::net::SocketAddr::new(ip, bound.port());
                let addr = tcp_multiaddr(addr);
                tracing::debug!(%addr, "announcing an address peers observe");
                let _ = ctx.control().add_external_address(addr);
            }
        }
    }

    fn check(
        &mut self,
        ctx: &ProtocolContextMut<'_>,
        data: &[u8],
    ) -> Result<IdentifyInfo, IdentifyError> {
        let session = ctx.session();
        if !self.received.insert(session.id) {
            return Err(IdentifyError::Repeated);
        }
        let info = IdentifyInfo::decode(data)?;
        if info.record.peer_id() != session.peer {
            return Err(IdentifyError::SignerMismatch {
                signer: info.record.peer_id(),
                session_peer: session.peer,
            });
        }
        Ok(info)
    }
}

impl ServiceProtocol for IdentifyHandler {
    fn connected(&mut self, ctx: &mut ProtocolContextMut<'_>, _version: u32) -> HandlerResult {
        let mut listen = ctx.control().announce_addrs();
        if self.shared.config.announce_relayed_only {
            listen.retain(shoal::Multiaddr::is_relayed);
        }
        let record = self.local.current(&listen)?;
        let info = IdentifyInfo {
            agent_version: self.shared.config.agent_version.clone(),
            listen_addrs: record.addrs().to_vec(),
            protocols: self.shared.config.protocols.clone(),
            observed_addr: Some(ctx.session().remote_addr.without_peer_id()),
            record,
        };
        ctx.reply(info.encode())?;
        Ok(())
    }

    fn disconnected(&mut self, ctx: &mut ProtocolContextMut<'_>) -> HandlerResult {
        let id = ctx.session().id;
        self.received.remove(&id);
        self.shared.forget(id);
        Ok(())
    }

    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: bytes::Bytes) -> HandlerResult {
        let session = ctx.session().clone();
        match self.check(ctx, &data) {
            Ok(info) => {
                self.note_observed(ctx, &session, &info);
                // Where the peer says it listens, as far as its scope
                // allows, goes into the service's address book.
                let policy = &self.shared.config.address_scope;
                let addrs: Vec<_> = info
                    .listen_addrs
                    .iter()
                    .filter(|a| policy.allows(a, Some(&session.remote_addr)))
                    .cloned()
                    .collect();
                ctx.control()
                    .add_addresses(session.peer, &addrs, AddressSource::Peer);
                let info = Arc::new(info);
                self.shared.remember(session.id, info.clone());
                self.shared.emit(Event::Identified {
                    peer: session.peer,
                    session: session.id,
                    info,
                });
                Ok(())
            }
            Err(error) => {
                tracing::debug!(session = %session.id, peer = %session.peer, %error, "identify rejected");
                self.shared.emit(Event::Rejected {
                    peer: session.peer,
                    session: session.id,
                    error: error.clone(),
                });
                // Returning the error closes identify on this session only.
                Err(error.into())
            }
        }
    }
}

/// `/ip4/…/tcp/…` or `/ip6/…/tcp/…` of a socket address.
fn tcp_multiaddr(addr: std::net::SocketAddr) -> shoal::Multiaddr {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => shoal_transport::Protocol::Ip4(v4),
        std::net::IpAddr::V6(v6) => shoal_transport::Protocol::Ip6(v6),
    };
    shoal::Multiaddr::empty()
        .with(ip)
        .with(shoal_transport::Protocol::Tcp(addr.port()))
}
