//! Sending frames on sessions: one session (`send`, `try_send`) or many
//! (`broadcast`, `try_broadcast`).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{TryAcquireError, mpsc::error::TrySendError};

use super::{BroadcastResult, ServiceControl, TargetSessions};
use crate::{
    ProtocolId, SendError, SessionId,
    session::{OutFrame, SessionShared, substream::frame_cost},
};

impl ServiceControl {
    /// Checks a send and returns the frame's queue, its cost and the session.
    fn prepare_send(
        &self,
        session: SessionId,
        protocol: ProtocolId,
        len: usize,
    ) -> Result<(Arc<SessionShared>, tokio::sync::mpsc::Sender<OutFrame>, u32), SendError> {
        let entry = self
            .shared
            .protocol(protocol)
            .ok_or(SendError::UnknownProtocol(protocol))?;
        if len > entry.max_frame_size {
            return Err(SendError::TooLarge {
                len,
                max: entry.max_frame_size,
            });
        }
        let s = self
            .open_session(session)
            .ok_or(SendError::NoSession(session))?;
        let tx = s
            .sender(protocol)
            .ok_or(SendError::ProtocolNotOpen(session, protocol))?;
        Ok((s, tx, frame_cost(len, self.shared.config.send_queue_bytes)))
    }

    /// Queues `data` as one frame of `protocol` to `session`, waiting while
    /// the session's send queue is full.
    pub async fn send(
        &self,
        session: SessionId,
        protocol: ProtocolId,
        data: impl Into<Bytes>,
    ) -> Result<(), SendError> {
        let data = data.into();
        let (s, tx, cost) = self.prepare_send(session, protocol, data.len())?;
        let permit = s
            .budget
            .clone()
            .acquire_many_owned(cost)
            .await
            .map_err(|_| SendError::NoSession(session))?;
        tx.send(OutFrame {
            data,
            _permit: permit,
        })
        .await
        .map_err(|_| SendError::ProtocolNotOpen(session, protocol))
    }

    /// Queues `data` as one frame of `protocol` to `session`, failing with
    /// [`SendError::QueueFull`] if the session's send queue is full.
    pub fn try_send(
        &self,
        session: SessionId,
        protocol: ProtocolId,
        data: impl Into<Bytes>,
    ) -> Result<(), SendError> {
        let data = data.into();
        let (s, tx, cost) = self.prepare_send(session, protocol, data.len())?;
        let permit = match s.budget.clone().try_acquire_many_owned(cost) {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => return Err(SendError::QueueFull(session)),
            Err(TryAcquireError::Closed) => return Err(SendError::NoSession(session)),
        };
        tx.try_send(OutFrame {
            data,
            _permit: permit,
        })
        .map_err(|e| match e {
            TrySendError::Full(_) => SendError::QueueFull(session),
            TrySendError::Closed(_) => SendError::ProtocolNotOpen(session, protocol),
        })
    }

    /// The sessions a broadcast of `protocol` reaches.
    fn targets(&self, target: &TargetSessions, protocol: ProtocolId) -> Vec<SessionId> {
        match target {
            TargetSessions::Single(id) => vec![*id],
            TargetSessions::Multi(ids) => ids.clone(),
            TargetSessions::All => self
                .shared
                .sessions_where(|s| s.version(protocol).is_some())
                .iter()
                .map(|s| s.info.id)
                .collect(),
            TargetSessions::Filter(f) => self
                .shared
                .sessions_where(|s| s.version(protocol).is_some() && f(&s.info))
                .iter()
                .map(|s| s.info.id)
                .collect(),
        }
    }

    /// Queues `data` to every targeted session, waiting for queue capacity
    /// on each (concurrently, so one slow peer delays only its own frame).
    pub async fn broadcast(
        &self,
        target: TargetSessions,
        protocol: ProtocolId,
        data: impl Into<Bytes>,
    ) -> BroadcastResult {
        let data = data.into();
        let ids = self.targets(&target, protocol);
        let sends = ids.iter().map(|&id| self.send(id, protocol, data.clone()));
        let results = futures::future::join_all(sends).await;
        collect(ids, results)
    }

    /// Queues `data` to every targeted session without waiting; sessions
    /// whose queue is full are listed as failed.
    pub fn try_broadcast(
        &self,
        target: TargetSessions,
        protocol: ProtocolId,
        data: impl Into<Bytes>,
    ) -> BroadcastResult {
        let data = data.into();
        let ids = self.targets(&target, protocol);
        let results = ids
            .iter()
            .map(|&id| self.try_send(id, protocol, data.clone()))
            .collect();
        collect(ids, results)
    }
}

fn collect(ids: Vec<SessionId>, results: Vec<Result<(), SendError>>) -> BroadcastResult {
    let mut out = BroadcastResult::default();
    for (id, result) in ids.into_iter().zip(results) {
        match result {
            Ok(()) => out.sent.push(id),
            Err(e) => out.failed.push((id, e)),
        }
    }
    out
}
