//! The mailbox protocol on a Shoal service: [`new`] declares it, and the
//! [`Handle`]'s requests wait for their answers. The core runs under the
//! service's [`CoreDriver`], which sends by peer id (dialling from the
//! address book) and arms the core's timer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use shoal::{CoreDriver, CoreHandle, Multiaddr, Now, PeerId, ProtocolId, ProtocolMeta};
use shoal_identity::Keypair;
use tokio::sync::{mpsc, oneshot};

use crate::core::{Config, DynReplica, Event, Mailbox, RequestError, RequestId};
use crate::id::{Descriptor, EnvelopeHash};
use crate::receipt::{Quorum, Receipt, ReceiptError};
use crate::replica::ReplicaStats;
use crate::wire::{Answer, Class};
use crate::{MAX_MESSAGE_SIZE, PROTOCOL_NAME, VERSIONS};

/// Why a [`Handle`] request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// No answer came.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The service stopped first.
    #[error("the mailbox protocol stopped")]
    Stopped,
}

/// A request's peer, and its answer (with the address it came over).
type Reply = (PeerId, Result<(Multiaddr, Answer), RequestError>);

enum Waiter {
    One(oneshot::Sender<Reply>),
    /// One of several requests; the channel has room for all replies.
    Many(mpsc::Sender<Reply>),
}

type Waiters = Arc<Mutex<HashMap<RequestId, Waiter>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Application access to a running mailbox protocol. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    core: CoreHandle<Mailbox>,
    waiters: Waiters,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

/// How a store to a quorum went.
#[derive(Debug, Clone, Default)]
pub struct QuorumOutcome {
    /// Receipts counted (verified, distinct peers and networks).
    pub receipts: Vec<Receipt>,
    /// Replicas whose mailbox was full ([`Answer::Quota`]): wait and retry.
    pub quota: Vec<PeerId>,
    /// Replicas that were busy or refused.
    pub refused: Vec<(PeerId, Answer)>,
    /// Receipts that did not count, and why.
    pub rejected: Vec<(PeerId, ReceiptError)>,
    /// Replicas that did not answer.
    pub failed: Vec<(PeerId, RequestError)>,
}

impl QuorumOutcome {
    /// Whether `needed` receipts were counted.
    pub fn is_met(&self, needed: usize) -> bool {
        self.receipts.len() >= needed
    }
}

impl Handle {
    async fn one(
        &self,
        start: impl FnOnce(&mut Mailbox, Now) -> RequestId,
    ) -> Result<(Multiaddr, Answer), HandleError> {
        // Registered before the core runs again, so an answer within the
        // call finds its waiter.
        let rx = self.core.with(|core, now| {
            let id = start(core, now);
            let (tx, rx) = oneshot::channel();
            lock(&self.waiters).insert(id, Waiter::One(tx));
            rx
        });
        let (_, reply) = rx.await.map_err(|_| HandleError::Stopped)?;
        Ok(reply?)
    }

    /// Asks `replica` to keep `envelope` (see [`Mailbox::store`]); returns
    /// the address the answer came over, and the answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn store(
        &self,
        replica: PeerId,
        descriptor: Descriptor,
        signer: Option<&Keypair>,
        envelope: Bytes,
        expiry: u64,
        class: Class,
    ) -> Result<(Multiaddr, Answer), HandleError> {
        self.one(|core, now| core.store(now, replica, descriptor, signer, envelope, expiry, class))
            .await
    }

    /// Asks `replica` to wake `endpoint` while envelopes arrive with
    /// nobody subscribed (see [`Mailbox::register_wake`]); the answer is
    /// [`Answer::Registered`] with the time the replica keeps it to.
    pub async fn register_wake(
        &self,
        replica: PeerId,
        descriptor: Descriptor,
        key: &Keypair,
        endpoint: crate::wake::WakeEndpoint,
        until: u64,
    ) -> Result<Answer, HandleError> {
        self.one(|core, now| core.register_wake(now, replica, descriptor, key, endpoint, until))
            .await
            .map(|(_, answer)| answer)
    }

    /// Fetches from `replica` (see [`Mailbox::fetch`]); returns the
    /// request's id (which names the subscription's pushes) and the answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch(
        &self,
        replica: PeerId,
        descriptor: Descriptor,
        key: &Keypair,
        after: u64,
        limit: u32,
        subscribe: bool,
    ) -> Result<(RequestId, Answer), HandleError> {
        let mut id = RequestId(0);
        let (_, answer) = self
            .one(|core, now| {
                id = core.fetch(now, replica, descriptor, key, after, limit, subscribe);
                id
            })
            .await?;
        Ok((id, answer))
    }

    /// Asks `replica` to delete `hashes` (see [`Mailbox::ack`]).
    pub async fn ack(
        &self,
        replica: PeerId,
        descriptor: Descriptor,
        key: &Keypair,
        hashes: Vec<EnvelopeHash>,
    ) -> Result<Answer, HandleError> {
        let (_, answer) = self
            .one(|core, now| core.ack(now, replica, descriptor, key, hashes))
            .await?;
        Ok(answer)
    }

    /// Stores `envelope` on every one of `candidates` at once and returns
    /// when `needed` receipts counted ([`Quorum`]) or every candidate
    /// answered or failed. Requests still out then carry on; their answers
    /// are dropped.
    #[allow(clippy::too_many_arguments)]
    pub async fn store_quorum(
        &self,
        candidates: &[PeerId],
        needed: usize,
        descriptor: Descriptor,
        signer: Option<&Keypair>,
        envelope: Bytes,
        expiry: u64,
        class: Class,
    ) -> QuorumOutcome {
        let mut quorum = Quorum::new(
            descriptor.id(),
            EnvelopeHash::of(&envelope),
            expiry,
            candidates.to_vec(),
            needed,
        );
        let (tx, mut rx) = mpsc::channel(candidates.len().max(1));
        let mut outstanding: HashMap<RequestId, PeerId> = self.core.with(|core, now| {
            let mut waiters = lock(&self.waiters);
            candidates
                .iter()
                .map(|peer| {
                    let id = core.store(
                        now,
                        *peer,
                        descriptor,
                        signer,
                        envelope.clone(),
                        expiry,
                        class,
                    );
                    waiters.insert(id, Waiter::Many(tx.clone()));
                    (id, *peer)
                })
                .collect()
        });
        drop(tx);
        let mut outcome = QuorumOutcome::default();
        while !quorum.is_met() && !outstanding.is_empty() {
            let Some(reply) = rx.recv().await else {
                break;
            };
            let (peer, reply) = reply;
            outstanding.retain(|_, p| *p != peer);
            match reply {
                Ok((addr, answer)) => match answer {
                    Answer::Stored {
                        signature,
                        expiry,
                        proof,
                    } => match quorum.add(peer, &addr, signature, proof, expiry) {
                        Ok(receipt) => outcome.receipts.push(receipt.clone()),
                        Err(e) => outcome.rejected.push((peer, e)),
                    },
                    Answer::Quota { .. } => outcome.quota.push(peer),
                    other => outcome.refused.push((peer, other)),
                },
                Err(e) => outcome.failed.push((peer, e)),
            }
        }
        outcome
    }

    /// The replica's counters, on a node that keeps mailboxes.
    pub fn replica_stats(&self) -> Option<ReplicaStats> {
        self.core
            .read(|core| core.replica().map(|r| r.stats().clone()))
    }

    /// Bytes the replica holds, on a node that keeps mailboxes.
    pub fn replica_bytes(&self) -> Option<u64> {
        self.core
            .read(|core| core.replica().map(|r| r.total_bytes()))
    }

    /// How often the core's timer woke up.
    pub fn timer_wakeups(&self) -> u64 {
        self.core.timer_wakeups()
    }

    /// Tells the replica which peers keep mailboxes near it (see
    /// [`Mailbox::set_neighbours`]): give the mailbox DHT's routing table
    /// now and then.
    pub fn set_neighbours(&self, peers: Vec<PeerId>) {
        self.core.with(|core, now| {
            core.set_neighbours(peers);
            core.start(now);
        });
    }

    /// Answers an [`Event::LookupWanted`] (see [`Mailbox::set_members`]).
    pub fn set_members(&self, mailbox: crate::MailboxId, found: Vec<PeerId>) {
        self.core
            .with(|core, now| core.set_members(now, mailbox, found));
    }

    /// Runs a sync round now (see [`Mailbox::sync_soon`]).
    pub fn sync_soon(&self) {
        self.core.with(|core, now| core.sync_soon(now));
    }

    /// Bytes of sync frames sent and received.
    pub fn sync_bytes(&self) -> (u64, u64) {
        self.core.read(Mailbox::sync_bytes)
    }
}

/// Declares the mailbox protocol as `id`: register the returned
/// [`ProtocolMeta`] with a [`ServiceBuilder`](shoal::ServiceBuilder). With
/// `replica`, the node keeps mailboxes for others (a service node); without,
/// it only makes requests. Pushes of live subscriptions, and answers no
/// [`Handle`] call waits for, arrive on the returned channel.
pub fn new(
    id: ProtocolId,
    config: Config,
    replica: Option<DynReplica>,
) -> (ProtocolMeta, Handle, mpsc::Receiver<Event>) {
    use std::hash::{BuildHasher, Hasher};
    let (tx, rx) = mpsc::channel(config.event_queue.max(1));
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        let n = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        chunk.copy_from_slice(&n.to_le_bytes());
    }
    let waiters: Waiters = Arc::default();
    let w = waiters.clone();
    let on_event = move |event: Event| {
        let id = match &event {
            Event::Answered { id, .. } | Event::Failed { id, .. } => *id,
            _ => {
                let _ = tx.try_send(event);
                return;
            }
        };
        let Some(waiter) = lock(&w).remove(&id) else {
            let _ = tx.try_send(event);
            return;
        };
        // Moved to the waiter, not copied: a fetch's answer holds up to
        // 512 KiB of envelopes.
        let reply = match event {
            Event::Answered {
                peer, addr, answer, ..
            } => (peer, Ok((addr, answer))),
            Event::Failed { peer, error, .. } => (peer, Err(error)),
            _ => return,
        };
        match waiter {
            Waiter::One(waiter) => {
                let _ = waiter.send(reply);
            }
            Waiter::Many(waiter) => {
                let _ = waiter.try_send(reply);
            }
        }
    };
    let (driver, core) = CoreDriver::new(Mailbox::new(config, replica, seed), on_event);
    let meta = ProtocolMeta::builder(id, PROTOCOL_NAME)
        .versions(VERSIONS)
        .max_frame_size(MAX_MESSAGE_SIZE)
        // Stores and fetches of a node behind NAT go through its relay.
        .over_relay(true)
        .service_handle(driver);
    (meta, Handle { core, waiters }, rx)
}
