//! Offline delivery: while a contact is offline our envelopes wait in its
//! mailboxes, and while we were away the contact's waited in ours
//! (docs/PROTOCOL.md, section 12).
//!
//! - **Replicas.** A mailbox's replicas are the [`REPLICAS`] nodes closest
//!   to its id in the mailbox DHT ([`DHT_PROTOCOL_NAME`], which the
//!   messenger joins as a client): one lookup, remembered for
//!   [`REPLICA_CACHE`].
//! - **Storing.** For a contact with no open session, every sealed
//!   envelope not yet stored goes to today's mailbox from our device to
//!   theirs, and counts as stored once [`WRITE_QUORUM`] receipts verify
//!   ([`Event::Stored`] names their signers). A full mailbox makes us wait
//!   ([`Event::WaitingForSpace`]); nothing is dropped. The envelope bytes
//!   are the ones sealed once: a retry never spends another message key.
//! - **Reading.** At start, every poll interval, and live through a
//!   subscription to today's mailbox, the days since the last one read
//!   through are fetched, all at once, from every replica (a mailbox's
//!   nodes are asked as its lookup reaches them: see `read`), handed to
//!   the engine as envelopes from the contact's device (it drops copies)
//!   as each replica answers, and acked on every replica once the engine
//!   committed them, so every replica deletes them. R - W + 1 answers
//!   include a copy of each stored envelope when no signer lied; a day
//!   counts as read only once every replica found (at least R - W + 1)
//!   answered, since the one honest signer may be the one that did not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal::address_book::AddressSource;
use shoal::{CoreHandle, PeerId, ServiceControl};
use shoal_identity::Keypair;
use shoal_im::engine::MailboxEnvelope;
use shoal_im::mailbox_keys::day_of;
use shoal_im::{Store, UserId};
use shoal_mailbox::{
    Class, DHT_PROTOCOL_NAME, Descriptor, MailboxId, REPLICAS, RequestId, WRITE_QUORUM,
};

use crate::Event;
use crate::im_core::ImCore;

mod read;
mod wake;

pub use self::wake::{WAKE_DAYS, WAKE_RENEW};

/// How long a mailbox's replica set is reused before it is looked up again.
pub const REPLICA_CACHE: Duration = Duration::from_secs(600);

/// Replicas that must answer at least for a day to count as read (and
/// every replica found must).
pub const READ_QUORUM: usize = REPLICAS - WRITE_QUORUM + 1;

/// How long one replica lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Envelopes asked for per fetch (a replica also stops at its byte cap).
const FETCH_LIMIT: u32 = 256;

/// Pages read from one replica per mailbox per pass.
const MAX_PAGES: usize = 64;

/// "Busy" answers (a replica's rate limit) waited out per mailbox and
/// replica in one pass, and the longest wait for one.
const MAX_BUSY: usize = 8;
const MAX_BUSY_WAIT: Duration = Duration::from_secs(2);

/// Mailboxes whose replica sets are remembered.
const MAX_CACHED: usize = 4_096;

/// The descriptor of a 1:1 mailbox with verification key `key`: only the
/// two devices (who can derive the key pair) write, and envelopes go when
/// the recipient acks them.
pub fn descriptor(key: &Keypair) -> Descriptor {
    Descriptor::owner_until_ack(key.public())
}

fn unix_secs() -> u64 {
    crate::messenger::unix_ms() / 1000
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A mailbox we read, to route its subscription's pushes.
#[derive(Clone)]
struct Reading {
    contact: UserId,
    device: PeerId,
    descriptor: Descriptor,
    key: Keypair,
}

/// The messenger's link to the mailboxes.
pub(crate) struct Mailboxes {
    client: shoal_mailbox::Handle,
    pub(crate) dht: shoal_kad::Handle,
    replicas: Mutex<HashMap<MailboxId, (Instant, Vec<PeerId>)>>,
    subscriptions: Mutex<HashMap<RequestId, Reading>>,
    lookups: AtomicU64,
    /// The wake-up endpoint to register, if any.
    wake: Option<shoal_mailbox::WakeEndpoint>,
    /// Mailboxes registered with it, and when.
    wake_registered: Mutex<HashMap<MailboxId, Instant>>,
}

impl std::fmt::Debug for Mailboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailboxes")
            .field("lookups", &self.lookups())
            .finish_non_exhaustive()
    }
}

/// What one pass over a contact's mailboxes did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadPass {
    /// Every day counted as read.
    pub(crate) complete: bool,
    /// Envelopes handed to the engine.
    pub(crate) envelopes: usize,
    /// Replicas that took a wake-up registration.
    pub(crate) wake_registrations: usize,
}

impl Mailboxes {
    pub(crate) fn new(
        client: shoal_mailbox::Handle,
        dht: shoal_kad::Handle,
        wake: Option<shoal_mailbox::WakeEndpoint>,
    ) -> Mailboxes {
        Mailboxes {
            client,
            dht,
            replicas: Mutex::default(),
            subscriptions: Mutex::default(),
            lookups: AtomicU64::new(0),
            wake,
            wake_registered: Mutex::default(),
        }
    }

    /// Replica lookups made so far.
    pub(crate) fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Whether a peer listing `protocols` keeps mailboxes.
    pub(crate) fn keeps_mailboxes(protocols: &[String]) -> bool {
        protocols.iter().any(|p| p == DHT_PROTOCOL_NAME)
    }

    /// The replicas of mailbox `id` (cached), their addresses put in the
    /// address book so requests can dial them.
    async fn replicas(&self, control: &ServiceControl, id: MailboxId) -> Vec<PeerId> {
        if let Some(peers) = self.cached_replicas(&id) {
            return peers;
        }
        self.count_lookup();
        let key = shoal_kad::Key::from_bytes(*id.as_bytes());
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, self.dht.find_node(key)).await;
        let Ok(Ok((closest, _))) = found else {
            tracing::debug!(?id, "replica lookup failed");
            return Vec::new();
        };
        let peers: Vec<PeerId> = closest
            .into_iter()
            .take(REPLICAS)
            .map(|c| {
                control.add_addresses(c.peer, &c.addrs, AddressSource::Hearsay);
                c.peer
            })
            .collect();
        self.remember_replicas(id, &peers);
        peers
    }

    fn count_lookup(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// Mailbox `id`'s replica set, if looked up within [`REPLICA_CACHE`].
    fn cached_replicas(&self, id: &MailboxId) -> Option<Vec<PeerId>> {
        lock(&self.replicas)
            .get(id)
            .filter(|(at, _)| at.elapsed() < REPLICA_CACHE)
            .map(|(_, peers)| peers.clone())
    }

    /// Caches a replica set found by a lookup (one too small to store to
    /// is looked up again next time).
    fn remember_replicas(&self, id: MailboxId, peers: &[PeerId]) {
        if peers.len() >= WRITE_QUORUM {
            let mut cache = lock(&self.replicas);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(id, (Instant::now(), peers.to_vec()));
        }
    }

    fn forget_replicas(&self, id: &MailboxId) {
        lock(&self.replicas).remove(id);
    }

    /// Stores `contact`'s sealed envelopes that are not stored yet, while
    /// it stays offline. Returns whether none is left (`false`: try again
    /// later).
    pub(crate) async fn store_outbox<S: Store>(
        &self,
        core: &CoreHandle<ImCore<S>>,
        control: &ServiceControl,
        contact: UserId,
    ) -> bool {
        let now = unix_secs();
        let found = core.read(|c| {
            let pair = c.engine.mailbox_pair(&contact)?;
            let own = c.engine.device().certificate().device();
            Some((pair, own, c.engine.mailbox_outbox(&contact)))
        });
        let Some((pair, own, outbox)) = found else {
            return true;
        };
        if outbox.is_empty() {
            return true;
        }
        let key = pair.secret.mailbox_key(&own, day_of(now));
        let descriptor = descriptor(&key);
        let replicas = self.replicas(control, descriptor.id()).await;
        if replicas.len() < WRITE_QUORUM {
            tracing::debug!(%contact, found = replicas.len(), "too few mailbox replicas");
            return false;
        }
        for MailboxEnvelope {
            id,
            envelope,
            expiry,
        } in outbox
        {
            if core.read(|c| c.is_online(&contact)) {
                // Direct delivery is the fast path.
                return true;
            }
            let outcome = self
                .client
                .store_quorum(
                    &replicas,
                    WRITE_QUORUM,
                    descriptor,
                    Some(&key),
                    Bytes::from(envelope),
                    expiry,
                    Class::Normal,
                )
                .await;
            if outcome.is_met(WRITE_QUORUM) {
                let replicas: Vec<PeerId> = outcome.receipts.iter().map(|r| r.replica).collect();
                core.with(|c, _| {
                    let result = c.engine.mark_stored(contact, id);
                    if c.run(result).is_some() {
                        c.report(Event::Stored {
                            contact,
                            id,
                            replicas,
                        });
                    }
                });
                continue;
            }
            if !outcome.quota.is_empty() {
                core.with(|c, _| c.report(Event::WaitingForSpace { contact }));
            } else {
                self.forget_replicas(&descriptor.id());
            }
            tracing::debug!(
                %contact,
                receipts = outcome.receipts.len(),
                quota = outcome.quota.len(),
                refused = ?outcome.refused,
                rejected = ?outcome.rejected,
                failed = ?outcome.failed,
                "mailbox store short of a quorum"
            );
            return false;
        }
        true
    }

    /// Reads `contact`'s mailboxes for every day since the last one read
    /// through (subscribing to today's).
    pub(crate) async fn read_contact<S: Store>(
        &self,
        core: &CoreHandle<ImCore<S>>,
        control: &ServiceControl,
        contact: UserId,
    ) -> ReadPass {
        let now = unix_secs();
        let today = day_of(now);
        let found = core.read(|c| {
            let pair = c.engine.mailbox_pair(&contact)?;
            Some((pair, c.engine.mailbox_days(&contact, now)))
        });
        let Some((pair, days)) = found else {
            return ReadPass {
                complete: true,
                ..ReadPass::default()
            };
        };
        let mut pass = ReadPass {
            complete: true,
            ..ReadPass::default()
        };
        // Every day at once: after a week away, the last message waits
        // for one lookup and one fetch, not for nine in a row (and the
        // fetch starts as the lookup reaches the mailbox's neighbourhood).
        let reads = days.map(|day| {
            let pair = &pair;
            async move {
                let key = pair.secret.mailbox_key(&pair.device_key, day);
                let reading = Reading {
                    contact,
                    device: pair.device,
                    descriptor: descriptor(&key),
                    key,
                };
                self.read_day(core, control, &reading, day == today).await
            }
        });
        for (complete, found) in futures::future::join_all(reads).await {
            pass.complete &= complete;
            pass.envelopes += found;
        }
        if pass.complete {
            core.with(|c, _| {
                let result = c.engine.mailbox_read_through(contact, today);
                c.run(result);
            });
        }
        if let Some(endpoint) = &self.wake {
            pass.wake_registrations = self.register_wake(control, &pair, today, endpoint).await;
        }
        pass
    }

    /// A live subscription brought an envelope: hand it to the engine and
    /// ack it on every replica.
    pub(crate) async fn pushed<S: Store>(
        &self,
        core: &CoreHandle<ImCore<S>>,
        subscription: RequestId,
        envelope: Bytes,
    ) {
        let Some(reading) = lock(&self.subscriptions).get(&subscription).cloned() else {
            return;
        };
        let taken = read::deliver(core, &reading, vec![envelope]);
        let replicas = lock(&self.replicas)
            .get(&reading.descriptor.id())
            .map(|(_, peers)| peers.clone())
            .unwrap_or_default();
        self.ack_all(&replicas, &reading, taken).await;
    }

    /// A subscription ended (its replica went).
    pub(crate) fn subscription_ended(&self, subscription: RequestId) {
        lock(&self.subscriptions).remove(&subscription);
    }
}
