//! The messenger's one task: it moves commands into the engine, the
//! engine's events to the application (waiting while the application is
//! behind), and runs what needs the network and time: directory lookups
//! and dials the engine asked for, joining the DHT, and publishing this
//! user's presence and prekey records. Policy lives in the engine
//! (retries, the route rate limit) and in [`crate::im_core`]; the service
//! layer dials and queues.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shoal::address_book::AddressSource;
use shoal::{CoreHandle, DialOptions, PeerId, ProtocolId, ServiceControl};
use shoal_im::{Store, UserId};
use shoal_kad::SignedRecord;
use shoal_transport::Multiaddr;
use tokio::sync::mpsc;

use crate::directory::{self, DirectoryEntry};
use crate::im_core::{ImCore, Output, OutputQueue};
use crate::join;
use crate::mailboxes::Mailboxes;
use crate::messenger::{Command, unix_ms};
use crate::{Event, MessengerConfig, MessengerError};

/// How long one directory lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long announced addresses must stay unchanged before the presence
/// record is published again (a listener and a relay reservation often
/// change within moments of each other).
const ADDRESS_SETTLE: Duration = Duration::from_secs(1);

type Lookup = (UserId, Result<Option<DirectoryEntry>, String>);

/// How often the driver looks for envelopes to store in mailboxes and
/// whether a read of the mailboxes is due.
const MAILBOX_CHECK: Duration = Duration::from_secs(1);

/// Contacts whose mailboxes are read at the same time (each with all its
/// days at once): a user with 20 contacts back after a week waits for one
/// round of lookups, not three (about 180 lookups of 5 nodes each).
const MAILBOX_READS_AT_ONCE: usize = 20;

/// Longest wait before storing in a contact's mailbox is tried again.
const MAILBOX_RETRY_MAX: Duration = Duration::from_secs(60);

/// A mailbox task finished.
enum MailboxDone {
    /// Joined the mailbox DHT.
    Joined,
    /// A store pass for the contact ended; `true`: nothing left.
    Stored(UserId, bool),
    /// A read pass over every contact ended: complete, envelopes read,
    /// wake-up registrations taken.
    Read(bool, usize, usize),
}

/// The mailbox side of the driver (see [`crate::mailboxes`]).
pub(crate) struct MailboxState {
    pub(crate) link: Arc<Mailboxes>,
    pub(crate) events: mpsc::Receiver<shoal_mailbox::Event>,
    pub(crate) poll: Duration,
    joined: bool,
    joining: bool,
    /// Contacts being stored for (`None`) or waiting to retry, with the
    /// wait after the next failure.
    storing: HashMap<UserId, (Option<Instant>, Duration)>,
    reading: bool,
    next_read: Option<Instant>,
    /// Wait after the next incomplete read (doubles up to `poll`).
    read_retry: Duration,
}

impl MailboxState {
    pub(crate) fn new(
        link: Arc<Mailboxes>,
        events: mpsc::Receiver<shoal_mailbox::Event>,
        poll: Duration,
    ) -> MailboxState {
        MailboxState {
            link,
            events,
            poll,
            joined: false,
            joining: false,
            storing: HashMap::new(),
            reading: false,
            next_read: None,
            read_retry: MAILBOX_CHECK * 5,
        }
    }
}

pub(crate) struct Driver<S: Store> {
    pub(crate) core: CoreHandle<ImCore<S>>,
    pub(crate) dht: shoal_kad::Handle,
    pub(crate) config: MessengerConfig,
    pub(crate) events: mpsc::Sender<Event>,
    /// Application events handed out by the core and not yet delivered.
    pub(crate) backlog: Arc<AtomicUsize>,
    /// The driver made the node: it stops it when the messenger stops.
    pub(crate) owns_node: bool,
    /// The envelope protocol's id, to hear of dials that fail.
    pub(crate) im: ProtocolId,
    pub(crate) in_flight: HashSet<UserId>,
    pub(crate) published_seq: u64,
    pub(crate) mailboxes: Option<MailboxState>,
    /// What reachability checks found, if the node runs them.
    pub(crate) reach: Option<tokio::sync::watch::Receiver<shoal_reach::Status>>,
    /// The node's relay client, once started.
    pub(crate) relay: Arc<std::sync::OnceLock<shoal_relay::RelayHandle>>,
}

impl<S: Store> Driver<S> {
    /// Runs until the messenger is shut down or its engine fails.
    pub(crate) async fn run(
        mut self,
        control: ServiceControl,
        mut commands: mpsc::Receiver<Command>,
        outputs: Arc<OutputQueue>,
        identified: Option<mpsc::Receiver<shoal_identify::Event>>,
    ) {
        let (lookups_tx, mut lookups) = mpsc::channel::<Lookup>(64);
        let (notices_tx, mut notices) = mpsc::channel::<String>(8);
        // The rule for addresses peers claim, fixed by the config.
        let dial_scope = self.config.dial_scope();
        let mut identified = identified;
        let mut joined = !self.config.bootstrap.is_empty() || identified.is_none();
        self.rotate_prekey();
        self.join(
            &control,
            self.config.bootstrap.clone(),
            None,
            notices_tx.clone(),
        );
        let mut republish = tokio::time::interval(self.config.republish);
        republish.tick().await;
        // Addresses change (a relay reservation comes or goes, a listener
        // starts): publish again once they settle.
        let mut addrs_changed = control.announce_changes();
        addrs_changed.mark_unchanged();
        let mut publish_at: Option<tokio::time::Instant> = None;
        let (mailbox_tx, mut mailbox_done) = mpsc::channel::<MailboxDone>(64);
        let mut mailbox_tick = tokio::time::interval(MAILBOX_CHECK);
        mailbox_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Connect(addr, reply)) => {
                        self.join(&control, vec![addr], Some(reply), notices_tx.clone());
                    }
                    Some(Command::Shutdown(done)) => {
                        self.stop(&control).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => {
                        self.core.with(|c, now| c.command(now.instant, now.unix_ms, command));
                    }
                    None => return self.stop(&control).await,
                },
                output = outputs.next() => match output {
                    Output::App(event) => {
                        // Backpressure: wait while the application is behind.
                        let _ = self.events.send(event).await;
                        self.backlog.fetch_sub(1, Ordering::Relaxed);
                    }
                    Output::Lookup(user) => self.lookup(user, &lookups_tx),
                    Output::Route { contact, device } => {
                        if control.addresses(&device).is_empty() {
                            self.lookup(contact, &lookups_tx);
                        } else {
                            let _ = control.try_dial_peer(device, DialOptions::default(), Some(self.im));
                        }
                    }
                    Output::Stopped => return self.stop(&control).await,
                },
                Some((user, result)) = lookups.recv() => self.looked_up(&control, user, result),
                Some(error) = notices.recv() => {
                    let _ = self.events.send(Event::Error { contact: None, error }).await;
                }
                Some(event) = async { identified.as_mut()?.recv().await } => {
                    if let shoal_identify::Event::Identified { peer, session, info } = event {
                        // What a peer says about its own addresses is a
                        // claim: none narrower than where we reached it.
                        let source = control.session(session).map(|s| s.remote_addr.clone());
                        let addrs: Vec<Multiaddr> = info
                            .listen_addrs
                            .iter()
                            .filter(|a| dial_scope.allows(a, source.as_ref()))
                            .cloned()
                            .collect();
                        self.dht.add_address(peer, addrs.clone());
                        if Mailboxes::keeps_mailboxes(&info.protocols) {
                            self.mailbox_peer(peer, addrs.clone(), &mailbox_tx);
                        }
                        if !joined {
                            // Joined without bootstrap peers: the first
                            // peer that connects to us is our way in.
                            joined = true;
                            let (dht, records) = (self.dht.clone(), self.records(&control));
                            tokio::spawn(async move {
                                let _ = dht.bootstrap(vec![(peer, addrs)]).await;
                                // Our first publication found an empty DHT.
                                join::put_records(&dht, records).await;
                            });
                        }
                    }
                }
                _ = mailbox_tick.tick(), if self.mailboxes.is_some() => {
                    self.mailbox_tick(&control, &mailbox_tx);
                }
                Some(done) = mailbox_done.recv() => {
                    if self.mailbox_done(done) {
                        // Just joined: store and read now, not at the tick.
                        self.mailbox_tick(&control, &mailbox_tx);
                    }
                }
                Some(event) = async { self.mailboxes.as_mut()?.events.recv().await } => {
                    self.mailbox_event(event);
                }
                _ = republish.tick() => {
                    self.rotate_prekey();
                    let (dht, records) = (self.dht.clone(), self.records(&control));
                    tokio::spawn(async move { join::put_records(&dht, records).await });
                }
                Ok(()) = addrs_changed.changed() => {
                    publish_at.get_or_insert(tokio::time::Instant::now() + ADDRESS_SETTLE);
                }
                Some(status) = async {
                    let reach = self.reach.as_mut()?;
                    reach.changed().await.ok()?;
                    Some(reach.borrow_and_update().clone())
                } => {
                    // Proven private: a client of the DHT, so nobody keeps
                    // an address of ours that does not work as a contact.
                    let private = status.is_unreachable() || self.config.hide_ip_addresses;
                    if self.dht.is_client() != private {
                        tracing::info!(private, "reachability changed: DHT client mode {private}");
                        self.dht.set_client(private);
                    }
                    // Proven public: others dial us directly, so the
                    // relays' reservations are left to those who need
                    // them (unless we hide our addresses behind relays).
                    if let Some(relay) = self.relay.get() {
                        relay.set_reserving(!status.is_reachable() || self.config.hide_ip_addresses);
                    }
                    publish_at.get_or_insert(tokio::time::Instant::now() + ADDRESS_SETTLE);
                }
                () = async { tokio::time::sleep_until(publish_at.unwrap_or_else(tokio::time::Instant::now)).await }, if publish_at.is_some() => {
                    publish_at = None;
                    tracing::debug!("addresses changed: publishing the presence record again");
                    let (dht, records) = (self.dht.clone(), self.records(&control));
                    tokio::spawn(async move { join::put_records(&dht, records).await });
                }
            }
        }
    }

    /// Stops the engine, and the node if the messenger made it.
    async fn stop(&self, control: &ServiceControl) {
        self.core.with(|c, _| c.stop());
        if self.owns_node {
            control.shutdown().await;
        }
    }

    fn rotate_prekey(&self) {
        self.core.with(
            |c, now| match c.engine.rotate_prekey_if_due(now.unix_secs()) {
                Ok(true) => tracing::info!("signed prekey rotated"),
                Ok(false) => {}
                Err(e) => tracing::warn!(%e, "prekey rotation failed"),
            },
        );
    }

    /// Fresh presence and prekey records (a larger `seq`, a new expiry).
    fn records(&mut self, control: &ServiceControl) -> Option<(SignedRecord, SignedRecord)> {
        // Larger is newer, also across restarts (milliseconds, so a quick
        // restart still publishes a newer record).
        self.published_seq = unix_ms().max(self.published_seq + 1);
        let (seq, ttl) = (self.published_seq, self.config.record_ttl);
        // Addresses checks found unreachable are left out: contacts would
        // only wait on them.
        let unreachable = self
            .reach
            .as_ref()
            .map(|r| r.borrow().unreachable.clone())
            .unwrap_or_default();
        let hide = self.config.hide_ip_addresses;
        let addrs: Vec<Multiaddr> = control
            .announce_addrs()
            .into_iter()
            .filter(|a| !unreachable.contains(a) && (a.is_relayed() || !hide))
            .collect();
        join::records(&self.core, &addrs, seq, ttl)
    }

    /// Dials `addrs` (which name their peer), joins the DHT through those
    /// that answered and publishes, in the background. Problems go to
    /// `reply`, or else to the user as an error event.
    fn join(
        &mut self,
        control: &ServiceControl,
        addrs: Vec<Multiaddr>,
        reply: Option<crate::messenger::Reply<()>>,
        notices: mpsc::Sender<String>,
    ) {
        let (control, dht, records) = (control.clone(), self.dht.clone(), self.records(control));
        tokio::spawn(async move {
            let result = if addrs.is_empty() {
                Ok(())
            } else {
                join::join_through(&control, &dht, addrs).await
            };
            if result.is_ok() || reply.is_none() {
                join::put_records(&dht, records).await;
            }
            match (reply, result) {
                (Some(reply), result) => {
                    let _ = reply.send(result.map_err(MessengerError::Unreachable));
                }
                (None, Err(error)) => {
                    let _ = notices.send(error).await;
                }
                (None, Ok(())) => {}
            }
        });
    }

    /// Looks `user` up in the directory unless a lookup of it runs (how
    /// often is the engine's call: each request is one lookup).
    fn lookup(&mut self, user: UserId, results: &mpsc::Sender<Lookup>) {
        if !self.in_flight.insert(user) {
            return;
        }
        let (dht, results) = (self.dht.clone(), results.clone());
        tokio::spawn(async move {
            let found = directory::lookup(&dht, &user, unix_ms() / 1000);
            let result = match tokio::time::timeout(LOOKUP_TIMEOUT, found).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("lookup timed out".to_owned()),
            };
            let _ = results.send((user, result)).await;
        });
    }

    /// A lookup ended: the device's addresses go to the address book and
    /// the DHT, its bundle to the engine, and a dial starts if a session
    /// waits for it.
    fn looked_up(
        &mut self,
        control: &ServiceControl,
        user: UserId,
        result: Result<Option<DirectoryEntry>, String>,
    ) {
        self.in_flight.remove(&user);
        let entry = match result {
            Ok(Some(entry)) => entry,
            Ok(None) => return,
            Err(e) => return tracing::debug!(%user, %e, "lookup failed"),
        };
        let device = entry.device;
        // Signed by the contact's device: its own word.
        control.add_addresses(device, &entry.addresses, AddressSource::Peer);
        self.dht.add_address(device, entry.addresses.clone());
        let error = self.core.with(|c, now| {
            let result = entry
                .bundle
                .as_ref()
                .map(|bundle| c.engine.set_bundle(now.instant, user, bundle));
            match result {
                Some(Err(e)) => Some(e.to_string()),
                _ => None,
            }
        });
        if let Some(error) = error {
            let event = Event::Error {
                contact: Some(user),
                error,
            };
            self.core.with(|c, _| c.report(event));
        }
        let session = self.core.read(|c| c.engine.has_session(&user));
        if session && !entry.addresses.is_empty() {
            let _ = control.try_dial_peer(device, DialOptions::default(), Some(self.im));
        }
    }
}

impl<S: Store> Driver<S> {
    /// A peer that keeps mailboxes identified: it goes into the mailbox
    /// DHT, and the first one is our way into it.
    fn mailbox_peer(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        done: &mpsc::Sender<MailboxDone>,
    ) {
        let Some(state) = &mut self.mailboxes else {
            return;
        };
        state.link.dht.add_address(peer, addrs.clone());
        if state.joined || state.joining {
            return;
        }
        state.joining = true;
        let (dht, done) = (state.link.dht.clone(), done.clone());
        tokio::spawn(async move {
            let _ = dht.bootstrap(vec![(peer, addrs)]).await;
            let _ = done.send(MailboxDone::Joined).await;
        });
    }

    /// Starts the store passes and the read that are due.
    fn mailbox_tick(&mut self, control: &ServiceControl, done: &mpsc::Sender<MailboxDone>) {
        let Some(state) = &mut self.mailboxes else {
            return;
        };
        if !state.joined {
            return;
        }
        let now = Instant::now();
        for contact in self.core.read(|c| c.mailbox_waiting()) {
            let entry = state
                .storing
                .entry(contact)
                .or_insert((Some(now), Duration::ZERO));
            match entry.0 {
                Some(at) if at <= now => entry.0 = None,
                _ => continue,
            }
            let (link, core, control, done) = (
                state.link.clone(),
                self.core.clone(),
                control.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                let finished = link.store_outbox(&core, &control, contact).await;
                let _ = done.send(MailboxDone::Stored(contact, finished)).await;
            });
        }
        if state.reading || state.next_read.is_some_and(|at| at > now) {
            return;
        }
        state.reading = true;
        let (link, core, control, done) = (
            state.link.clone(),
            self.core.clone(),
            control.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            // Contacts are read side by side, a few at a time: a login
            // after a week away costs one lookup per contact and day.
            let (mut complete, mut envelopes, mut wake) = (true, 0, 0);
            let mut tasks = tokio::task::JoinSet::<crate::mailboxes::ReadPass>::new();
            for contact in core.read(|c| c.mailbox_contacts()) {
                if tasks.len() >= MAILBOX_READS_AT_ONCE
                    && let Some(done) = tasks.join_next().await
                {
                    let pass = done.unwrap_or_default();
                    (complete, envelopes) = (complete && pass.complete, envelopes + pass.envelopes);
                    wake += pass.wake_registrations;
                }
                let (link, core, control) = (link.clone(), core.clone(), control.clone());
                tasks.spawn(async move { link.read_contact(&core, &control, contact).await });
            }
            while let Some(done) = tasks.join_next().await {
                let pass = done.unwrap_or_default();
                (complete, envelopes) = (complete && pass.complete, envelopes + pass.envelopes);
                wake += pass.wake_registrations;
            }
            tracing::debug!(complete, lookups = link.lookups(), "mailboxes read");
            let _ = done
                .send(MailboxDone::Read(complete, envelopes, wake))
                .await;
        });
    }

    /// A mailbox task finished; returns whether the mailbox DHT was just
    /// joined.
    fn mailbox_done(&mut self, done: MailboxDone) -> bool {
        let Some(state) = &mut self.mailboxes else {
            return false;
        };
        let now = Instant::now();
        match done {
            MailboxDone::Joined => {
                state.joined = true;
                state.joining = false;
                return true;
            }
            MailboxDone::Stored(contact, true) => {
                state.storing.remove(&contact);
            }
            MailboxDone::Stored(contact, false) => {
                let entry = state
                    .storing
                    .entry(contact)
                    .or_insert((None, Duration::ZERO));
                let wait = (entry.1 * 2).clamp(MAILBOX_CHECK, MAILBOX_RETRY_MAX);
                *entry = (Some(now + wait), wait);
            }
            MailboxDone::Read(complete, envelopes, wake_registrations) => {
                state.reading = false;
                let event = Event::MailboxesRead {
                    complete,
                    envelopes,
                    wake_registrations,
                };
                self.core.with(|c, _| c.report(event));
                // An incomplete read (a replica busy or gone) is tried
                // again sooner than the next poll, backing off.
                let wait = if complete {
                    state.read_retry = MAILBOX_CHECK * 5;
                    state.poll
                } else {
                    let wait = state.read_retry.min(state.poll);
                    state.read_retry = (state.read_retry * 2).min(state.poll);
                    wait
                };
                state.next_read = Some(now + wait);
            }
        }
        false
    }

    fn mailbox_event(&mut self, event: shoal_mailbox::Event) {
        let Some(state) = &mut self.mailboxes else {
            return;
        };
        match event {
            shoal_mailbox::Event::Pushed {
                subscription, item, ..
            } => {
                let (link, core) = (state.link.clone(), self.core.clone());
                tokio::spawn(async move { link.pushed(&core, subscription, item.envelope).await });
            }
            shoal_mailbox::Event::SubscriptionEnded { subscription, .. } => {
                state.link.subscription_ended(subscription);
            }
            _ => {}
        }
    }
}
