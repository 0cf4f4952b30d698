//! [`ImCore`]: the messenger engine as a [`shoal::Core`], so the service's
//! one [`CoreDriver`](shoal::CoreDriver) runs it like kad and gossip.
//!
//! The engine owns the conversations, their retries and their route
//! requests (one rate limit, in the engine); this wrapper adds what sits
//! between the engine and the wire:
//! - which devices have the envelope protocol open (a contact is online
//!   while one of its device's sessions is), told to the engine and, as
//!   [`Event::ContactOnline`] / [`Event::ContactOffline`], to the user;
//! - a reset request to a device no contact owns goes out only while that
//!   device is connected;
//! - the fault layer of tests and demonstrations (drops, duplicates,
//!   delays as deadlines of this core);
//! - what to do when the engine fails (a failing store is reported once a
//!   minute and retried; anything else stops the messenger);
//! - backpressure: while the application has [`MAX_BACKLOG`] events unread,
//!   envelopes are left unacknowledged (their senders retry).
//!
//! Everything else leaves as an [`Output`] for the driver task: events for
//! the application, and directory lookups and dials the engine asked for.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use shoal::{BoxError, Core, Now, PeerId, Remote, Transmit};
use shoal_im::engine::{Engine, EngineError, Event as EngineEvent};
use shoal_im::{Store, UserId};
use tokio::sync::mpsc;

use crate::faults::Faults;
use crate::messenger::Command;
use crate::{Event, MessengerConfig};

/// Events the application may leave unread before envelopes wait.
pub const MAX_BACKLOG: usize = 1_024;

/// Devices remembered as not reachable at their known addresses (see
/// `ImCore::unreachable`); beyond it a failure is not remembered and the
/// next route dials the same addresses again.
const MAX_UNREACHABLE: usize = 4_096;

/// Shortest interval between two "storage failed" events to the application.
const STORE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// What the core hands to the driver task.
#[derive(Debug)]
pub(crate) enum Output {
    /// For the application.
    App(Event),
    /// Look `contact` up in the directory (its bundle and addresses).
    Lookup(UserId),
    /// Reach `device` of `contact` (dial it, or look it up first).
    Route { contact: UserId, device: PeerId },
    /// The engine failed for good: stop.
    Stopped,
}

/// Where the core's outputs wait for the driver task. Application events
/// are bounded by the backlog rule ([`MAX_BACKLOG`]: envelopes wait while
/// the application is behind); lookups and dials beyond
/// [`MAX_QUEUED_REQUESTS`] are dropped (the engine asks again).
#[derive(Default)]
pub(crate) struct OutputQueue {
    queue: std::sync::Mutex<VecDeque<Output>>,
    ready: tokio::sync::Notify,
}

/// Lookups and dials that may wait for the driver task.
const MAX_QUEUED_REQUESTS: usize = 4_096;

impl OutputQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Output>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues an output (called by the core driver, with the core locked).
    pub(crate) fn push(&self, output: Output) {
        let mut queue = self.lock();
        if !matches!(output, Output::App(_) | Output::Stopped) && queue.len() >= MAX_QUEUED_REQUESTS
        {
            tracing::debug!(
                ?output,
                "driver behind; request dropped (the engine asks again)"
            );
            return;
        }
        queue.push_back(output);
        drop(queue);
        self.ready.notify_one();
    }

    /// The next output, waiting for one.
    pub(crate) async fn next(&self) -> Output {
        loop {
            let ready = self.ready.notified();
            if let Some(output) = self.lock().pop_front() {
                return output;
            }
            ready.await;
        }
    }
}

/// The engine with its link to the wire.
pub(crate) struct ImCore<S: Store> {
    pub(crate) engine: Engine<S>,
    tap: Option<mpsc::Sender<Bytes>>,
    faults: Option<Faults>,
    /// Envelope copies the fault layer holds back, by release time.
    delayed: BTreeMap<(Instant, u64), Transmit>,
    next_delayed: u64,
    out: VecDeque<Transmit>,
    /// Devices with the envelope protocol open.
    connected: HashSet<PeerId>,
    /// Contacts' devices that could not be dialled at the addresses known
    /// for them: the next route looks their presence record up again
    /// instead of trying the same addresses (an address another peer
    /// passed on, such as a private one behind a NAT, is no substitute for
    /// the relayed addresses the contact signed).
    unreachable: HashSet<PeerId>,
    /// Contacts reported online.
    online: HashSet<UserId>,
    outputs: VecDeque<Output>,
    /// Application events handed out and not yet read.
    backlog: Arc<AtomicUsize>,
    last_now: Option<Instant>,
    stopped: bool,
    store_warned: Option<Instant>,
}

impl<S: Store> ImCore<S> {
    pub(crate) fn new(
        engine: Engine<S>,
        config: &MessengerConfig,
        backlog: Arc<AtomicUsize>,
    ) -> Self {
        ImCore {
            engine,
            tap: config.envelope_tap.clone(),
            faults: config.faults.clone().map(Faults::new),
            delayed: BTreeMap::new(),
            next_delayed: 0,
            out: VecDeque::new(),
            connected: HashSet::new(),
            unreachable: HashSet::new(),
            online: HashSet::new(),
            outputs: VecDeque::new(),
            backlog,
            last_now: None,
            stopped: false,
            store_warned: None,
        }
    }

    fn app(&mut self, event: Event) {
        self.backlog.fetch_add(1, Ordering::Relaxed);
        self.outputs.push_back(Output::App(event));
    }

    /// Reports `event` to the application.
    pub(crate) fn report(&mut self, event: Event) {
        self.app(event);
    }

    /// Whether a session to `contact`'s device is open.
    pub(crate) fn is_online(&self, contact: &UserId) -> bool {
        self.online.contains(contact)
    }

    /// Contacts with no open session whose sealed envelopes wait to be
    /// stored in their mailboxes.
    pub(crate) fn mailbox_waiting(&self) -> Vec<UserId> {
        self.engine
            .contacts_with_devices()
            .into_iter()
            .filter(|(user, online)| !online && self.engine.mailbox_pending(user) > 0)
            .map(|(user, _)| user)
            .collect()
    }

    /// Contacts whose mailboxes we read.
    pub(crate) fn mailbox_contacts(&self) -> Vec<UserId> {
        self.engine
            .contacts_with_devices()
            .into_iter()
            .map(|(user, _)| user)
            .collect()
    }

    /// Stops taking envelopes and commands (the messenger was shut down).
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
    }

    /// Runs an engine call; a failure is handled as [`Self::failed`] says.
    pub(crate) fn run<T>(&mut self, result: Result<T, EngineError>) -> Option<T> {
        result.map_err(|e| self.failed(e)).ok()
    }

    /// The engine failed. A store failure (a full disk) is survivable: the
    /// step left nothing behind and the engine reloads and retries, so the
    /// application is told (at most once a minute). Anything else (stored
    /// state that does not parse) stops the messenger; reopening the store
    /// resumes from the last commit.
    fn failed(&mut self, error: EngineError) {
        if let EngineError::Store(e) = &error {
            tracing::warn!(%e, "store failed; the engine retries");
            let now = self.last_now.unwrap_or_else(Instant::now);
            if self
                .store_warned
                .is_none_or(|t| now.duration_since(t) >= STORE_WARNING_INTERVAL)
            {
                self.store_warned = Some(now);
                let error = format!("storage failed (retrying): {e}");
                self.app(Event::Error {
                    contact: None,
                    error,
                });
            }
            return;
        }
        tracing::error!(%error, "messenger engine stopped");
        if !self.stopped {
            self.stopped = true;
            let error = format!("messenger stopped: {error}");
            self.app(Event::Error {
                contact: None,
                error,
            });
            self.outputs.push_back(Output::Stopped);
        }
    }

    /// Tells the engine and the user whether the contact owning `device`
    /// is reachable.
    fn set_online(&mut self, now: Instant, device: PeerId, online: bool) {
        let Some(contact) = self.engine.contact_of_device(&device) else {
            return;
        };
        let result = self.engine.set_online(now, contact, online);
        self.run(result);
        if self.engine.is_request(&contact) {
            // A stranger's connection is not news for the user (and
            // thousands of strangers must not flood the application).
            return;
        }
        let changed = if online {
            self.online.insert(contact)
        } else {
            self.online.remove(&contact)
        };
        if changed {
            self.app(if online {
                Event::ContactOnline { contact, device }
            } else {
                Event::ContactOffline { contact }
            });
        }
    }

    /// Carries out an application command (see [`crate::Messenger`]).
    pub(crate) fn command(&mut self, now: Instant, unix_ms: u64, command: Command) {
        self.last_now = Some(now);
        if self.stopped {
            // Dropping the reply says "stopped".
            return;
        }
        let engine = &mut self.engine;
        match command {
            Command::AddContact(user, name, reply) => {
                let _ = reply.send(engine.add_contact(user, &name).map_err(Into::into));
                self.outputs.push_back(Output::Lookup(user));
            }
            Command::Send(user, text, reply) => {
                let _ = reply.send(engine.send(now, unix_ms, user, &text).map_err(Into::into));
            }
            Command::MarkRead(user, ids, reply) => {
                let _ = reply.send(engine.mark_read(user, &ids).map_err(Into::into));
            }
            Command::History(user, before, limit, reply) => {
                let _ = reply.send(engine.history(&user, before, limit).map_err(Into::into));
            }
            Command::Contacts(reply) => {
                let _ = reply.send(Ok(engine.contacts()));
            }
            Command::RemoveContact(user, reply) => {
                let _ = reply.send(engine.remove_contact(user).map_err(Into::into));
                self.online.remove(&user);
            }
            Command::Block(user, reply) => {
                let _ = reply.send(engine.block(user).map_err(Into::into));
                self.online.remove(&user);
            }
            Command::Refusals(reply) => {
                let _ = reply.send(Ok(engine.refusals().clone()));
            }
            Command::Requests(reply) => {
                let _ = reply.send(Ok(engine.requests()));
            }
            Command::RequestMessages(user, reply) => {
                let _ = reply.send(engine.request_messages(&user).map_err(Into::into));
            }
            Command::Counters(reply) => {
                let _ = reply.send(Ok(engine.counters()));
            }
            Command::SetVerified(user, verified, reply) => {
                let _ = reply.send(engine.set_verified(user, verified).map_err(Into::into));
            }
            Command::AcknowledgeDeviceChange(user, reply) => {
                let _ = reply.send(engine.acknowledge_device_change(user).map_err(Into::into));
            }
            // The driver task's, not the engine's.
            Command::Connect(..) | Command::Shutdown(_) => {}
        }
    }

    /// Moves the engine's envelopes through the fault layer to `out`.
    fn pump_transmits(&mut self) {
        let now = self.last_now.unwrap_or_else(Instant::now);
        while let Some(t) = self.engine.poll_transmit() {
            // A reset request to a device we cannot name a user for goes
            // out only while it is connected.
            if t.contact.is_none() && !self.connected.contains(&t.device) {
                continue;
            }
            let t = Transmit {
                peer: t.device,
                bytes: Bytes::from(t.envelope),
            };
            let Some(faults) = &mut self.faults else {
                self.out.push_back(t);
                continue;
            };
            for delay in faults.plan() {
                if delay.is_zero() {
                    self.out.push_back(t.clone());
                } else {
                    self.next_delayed += 1;
                    self.delayed
                        .insert((now + delay, self.next_delayed), t.clone());
                }
            }
        }
    }

    /// Maps the engine's events to outputs.
    fn pump_events(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            let out = match event {
                EngineEvent::Received {
                    contact,
                    id,
                    message,
                    ..
                } => Event::Received {
                    contact,
                    id,
                    message,
                },
                EngineEvent::Delivered { contact, id } => Event::Delivered { contact, id },
                EngineEvent::Read { contact, id } => Event::Read { contact, id },
                EngineEvent::Expired { contact, id } => Event::Expired { contact, id },
                EngineEvent::MessageRequest { contact } => Event::MessageRequest { contact },
                EngineEvent::DeviceChanged {
                    contact,
                    device,
                    verified,
                } => Event::DeviceChanged {
                    contact,
                    device,
                    verified,
                },
                EngineEvent::NeedBundle { contact } => {
                    self.outputs.push_back(Output::Lookup(contact));
                    continue;
                }
                EngineEvent::NeedRoute { contact, device } => {
                    if self.connected.contains(&device) {
                        let now = self.last_now.unwrap_or_else(Instant::now);
                        self.set_online(now, device, true);
                    } else if self.unreachable.remove(&device) {
                        self.outputs.push_back(Output::Lookup(contact));
                    } else {
                        self.outputs.push_back(Output::Route { contact, device });
                    }
                    continue;
                }
                other => {
                    tracing::debug!(?other, "engine event not forwarded");
                    continue;
                }
            };
            self.app(out);
        }
    }
}

impl<S: Store> Core for ImCore<S> {
    type Event = Output;

    fn peer_connected(&mut self, now: Now, remote: &Remote) {
        self.last_now = Some(now.instant);
        self.unreachable.remove(&remote.peer);
        self.connected.insert(remote.peer);
        self.set_online(now.instant, remote.peer, true);
    }

    fn peer_disconnected(&mut self, now: Now, peer: PeerId) {
        self.last_now = Some(now.instant);
        self.connected.remove(&peer);
        self.set_online(now.instant, peer, false);
    }

    fn dial_failed(&mut self, now: Now, peer: PeerId) {
        self.last_now = Some(now.instant);
        // Bounded by the peers this node tried to reach; cleared on success.
        if self.unreachable.len() < MAX_UNREACHABLE {
            self.unreachable.insert(peer);
        }
    }

    fn handle_message(&mut self, now: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
        self.last_now = Some(now.instant);
        if self.stopped {
            return Ok(());
        }
        if self.backlog.load(Ordering::Relaxed) >= MAX_BACKLOG {
            // Unacknowledged: the sender retries once the user caught up.
            tracing::debug!(peer = %from.peer, "application behind; envelope left for a retry");
            return Ok(());
        }
        if let Some(tap) = &self.tap {
            let _ = tap.try_send(Bytes::copy_from_slice(bytes));
        }
        // The transport authenticated the sending device: an envelope of
        // ours it cannot have sealed on a working session makes the engine
        // ask for a new one. Refusals are counted by the engine, and do not
        // close the session.
        let result = self
            .engine
            .handle_envelope_from(now.instant, from.peer, bytes);
        self.run(result);
        Ok(())
    }

    fn handle_timeout(&mut self, now: Now) {
        self.last_now = Some(now.instant);
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now.instant {
                break;
            }
            self.out.push_back(entry.remove());
        }
        if !self.stopped {
            let result = self.engine.handle_timeout(now.instant);
            self.run(result);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let delayed = self.delayed.keys().next().map(|(t, _)| *t);
        let engine = (!self.stopped)
            .then(|| self.engine.poll_timeout())
            .flatten();
        match (delayed, engine) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.pump_transmits();
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<Output> {
        self.pump_events();
        self.outputs.pop_front()
    }
}
