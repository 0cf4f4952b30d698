//! The service-wide identify handler: sends our identify message when the
//! protocol opens on a session, checks the peer's.

use std::{collections::HashSet, sync::Arc};

use shoal::{HandlerResult, ProtocolContextMut, ServiceProtocol, SessionId};

use crate::{Event, IdentifyError, IdentifyInfo, Shared, record::LocalRecord};

pub(crate) struct IdentifyHandler {
    pub(crate) shared: Arc<Shared>,
    pub(crate) local: LocalRecord,
    /// Sessions whose identify message has arrived (one is allowed).
    received: HashSet<SessionId>,
}

impl IdentifyHandler {
    pub(crate) fn new(shared: Arc<Shared>, local: LocalRecord) -> IdentifyHandler {
        IdentifyHandler {
            shared,
            local,
            received: HashSet::new(),
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
        let listen = ctx.control().announce_addrs();
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
