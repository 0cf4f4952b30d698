//! The [`Messenger`]: a Shoal node (identify, Kademlia, the `/shoal/im`
//! protocol) driving a [`shoal_im::engine::Engine`] from one task.
//!
//! The task owns the engine and its store, so every engine call and every
//! commit happen in one place, in order. Envelopes leave only after the
//! engine committed what they acknowledge or carry.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use shoal::{
    DialOptions, PeerSessions, ProtocolEvent, ProtocolEvents, ProtocolId, ProtocolMeta,
    ServiceBuilder, ServiceControl,
};
use shoal_identify::LocalRecord;
use shoal_identity::PeerId;
use shoal_im::engine::{
    ContactInfo, Counters, Engine, Event as EngineEvent, HistoryItem, Refusals, RequestInfo,
    Transmit,
};
use shoal_im::store::HistoryCursor;
use shoal_im::{Message, MessageId, Store, UserId};
use shoal_kad::SignedRecord;
use shoal_transport::{Multiaddr, Transport};
use tokio::sync::{mpsc, oneshot};

use crate::config::MessengerConfig;
use crate::directory;
use crate::faults::Faults;

/// Protocol id of identify on a messenger node.
pub const IDENTIFY: ProtocolId = ProtocolId(2);
/// Protocol id of Kademlia on a messenger node.
pub const KAD: ProtocolId = ProtocolId(4);
/// Protocol id of the envelope protocol.
pub const IM: ProtocolId = ProtocolId(6);
/// Name of the envelope protocol: one frame per envelope.
pub const IM_PROTOCOL_NAME: &str = "/shoal/im";

/// Why a messenger call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MessengerError {
    /// The engine refused (unknown contact, store failure...).
    #[error(transparent)]
    Engine(#[from] shoal_im::engine::EngineError),
    /// The node could not start.
    #[error("start: {0}")]
    Start(String),
    /// The messenger has stopped.
    #[error("the messenger has stopped")]
    Stopped,
    /// A node to join through could not be reached (see
    /// [`Messenger::connect`]).
    #[error("{0}")]
    Unreachable(String),
}

/// How long one dial to a contact's device may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest interval between two "storage failed" events to the application.
const STORE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The end of a dial to a contact's device.
#[derive(Debug)]
struct DialOutcome {
    device: PeerId,
    contact: UserId,
    /// Why the last address failed, or `None` if a session opened.
    failure: Option<String>,
    /// Every failure was ours (a local limit, the dial pacing): the
    /// addresses are not to blame and stay known.
    only_local: bool,
}

/// A dial error as a short phrase: the innermost cause ("connection
/// refused", "no answer"), not the whole chain.
fn short(error: &shoal::DialError) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// What the messenger reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message is shown, in causal order.
    Received {
        /// The conversation.
        contact: UserId,
        /// The message id.
        id: MessageId,
        /// The message.
        message: Message,
    },
    /// A contact acknowledged our message (decrypted and stored it).
    Delivered {
        /// The conversation.
        contact: UserId,
        /// Our message.
        id: MessageId,
    },
    /// A contact read our message.
    Read {
        /// The conversation.
        contact: UserId,
        /// Our message.
        id: MessageId,
    },
    /// A session to a contact's device opened: messages to them go out
    /// now.
    ContactOnline {
        /// The contact.
        contact: UserId,
        /// Their device.
        device: PeerId,
    },
    /// The last session to a contact's device closed; messages to them
    /// wait in the outbox.
    ContactOffline {
        /// The contact.
        contact: UserId,
    },
    /// Someone not in the contacts wrote: a message request, stored but
    /// neither shown nor acknowledged until [`Messenger::add_contact`]
    /// accepts it (see [`Messenger::requests`]).
    MessageRequest {
        /// The stranger.
        contact: UserId,
    },
    /// A contact speaks from another device than before. For a verified
    /// contact, [`Messenger::send`] is refused until
    /// [`Messenger::acknowledge_device_change`].
    DeviceChanged {
        /// The contact.
        contact: UserId,
        /// Its new device.
        device: PeerId,
        /// The contact was verified: sending waits for the user.
        verified: bool,
    },
    /// Something went wrong that the user may want to see (a failed
    /// lookup, a contact's device out of reach, a store that failed); the
    /// messenger keeps running. Refused envelopes are not reported here
    /// (see [`Messenger::refusals`]).
    Error {
        /// The contact concerned, if known.
        contact: Option<UserId>,
        /// What happened.
        error: String,
    },
}

type Reply<T> = oneshot::Sender<Result<T, MessengerError>>;

enum Command {
    AddContact(UserId, String, Reply<()>),
    Send(UserId, String, Reply<MessageId>),
    MarkRead(UserId, Vec<MessageId>, Reply<()>),
    History(
        UserId,
        Option<HistoryCursor>,
        usize,
        Reply<Vec<HistoryItem>>,
    ),
    Contacts(Reply<Vec<ContactInfo>>),
    RemoveContact(UserId, Reply<()>),
    Block(UserId, Reply<()>),
    Refusals(Reply<Refusals>),
    Requests(Reply<Vec<RequestInfo>>),
    RequestMessages(UserId, Reply<Vec<HistoryItem>>),
    Counters(Reply<Counters>),
    SetVerified(UserId, bool, Reply<()>),
    AcknowledgeDeviceChange(UserId, Reply<()>),
    Connect(Multiaddr, Reply<()>),
    Shutdown(oneshot::Sender<()>),
}

/// A running messenger. Cheap to clone; every clone talks to the same node.
#[derive(Debug, Clone)]
pub struct Messenger {
    commands: mpsc::Sender<Command>,
    user: UserId,
    control: ServiceControl,
}

/// Kademlia as a messenger node runs it: only records of the messaging
/// kinds, each checked by its validator, so nobody can squat a user's
/// presence or prekey key with a record of another kind.
fn kad_config(config: &MessengerConfig) -> shoal_kad::Config {
    shoal_kad::Config {
        accept_unknown_kinds: false,
        address_scope: config.address_scope,
        ..shoal_kad::Config::default()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Messenger {
    /// Opens the engine on `store` (creating an identity if the store is
    /// empty), starts a node on `transport` whose key is the device key,
    /// listens, joins the network through `config.bootstrap`, publishes the
    /// presence and prekey records, and returns the handle and its events.
    ///
    /// Read the events: none is ever dropped, so when the receiver's buffer
    /// (1,024 events) is full the messenger waits for the application, and
    /// meanwhile takes no envelopes and no commands.
    pub async fn start<S: Store>(
        store: S,
        transport: impl Transport,
        config: MessengerConfig,
    ) -> Result<(Messenger, mpsc::Receiver<Event>), MessengerError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| MessengerError::Start(e.to_string()))?;
        let engine = Engine::open(
            store,
            config.engine.clone(),
            seed,
            Instant::now(),
            unix_ms() / 1000,
        )?;
        let key = engine.device().signing_key().clone();
        let user = engine.user_id();

        let (kad_meta, dht, _dht_events) = shoal_kad::new(KAD, key.peer_id(), kad_config(&config));
        directory::install_validators(&dht);
        let (identify_meta, _, identified) = shoal_identify::new(
            IDENTIFY,
            LocalRecord::new(key.clone()),
            shoal_identify::Config {
                agent_version: config.agent.clone(),
                address_scope: config.address_scope,
                protocols: vec![
                    shoal_identify::PROTOCOL_NAME.to_owned(),
                    shoal_kad::PROTOCOL_NAME.to_owned(),
                    IM_PROTOCOL_NAME.to_owned(),
                ],
                ..shoal_identify::Config::default()
            },
        );
        let (im_meta, im_events) = ProtocolMeta::builder(IM, IM_PROTOCOL_NAME)
            .max_frame_size(shoal_im::envelope::MAX_ENVELOPE_LEN)
            .event_stream();
        let service = ServiceBuilder::new(key)
            .transport(transport)
            .protocol(identify_meta)
            .protocol(kad_meta)
            .protocol(im_meta)
            .build()
            .map_err(|e| MessengerError::Start(e.to_string()))?;
        let control = service.control();
        for addr in &config.listen {
            control
                .listen(addr.clone())
                .await
                .map_err(|e| MessengerError::Start(format!("listen on {addr}: {e}")))?;
        }
        for addr in &config.external_addresses {
            control
                .add_external_address(addr.clone())
                .map_err(|e| MessengerError::Start(format!("external address {addr}: {e}")))?;
        }
        tokio::spawn(service);

        let (commands, command_rx) = mpsc::channel(64);
        let (events, event_rx) = mpsc::channel(1024);
        let (lookups, lookup_rx) = mpsc::channel(64);
        let (dialed, dialed_rx) = mpsc::channel(64);
        let (notices, notice_rx) = mpsc::channel(64);
        let (relookup, relookup_rx) = mpsc::channel(64);
        let driver = Driver {
            engine,
            config: config.clone(),
            control: control.clone(),
            dht,
            events,
            im_sessions: PeerSessions::default(),
            addresses: HashMap::new(),
            waiting: HashMap::new(),
            dialing: HashSet::new(),
            lookups_in_flight: HashSet::new(),
            lookup_backoff: HashMap::new(),
            lookups,
            dialed,
            notices,
            relookup,
            online: HashSet::new(),
            faults: config.faults.clone().map(Faults::new),
            published_seq: 0,
            pending_events: std::collections::VecDeque::new(),
            stopped: false,
            store_warned: None,
        };
        tokio::spawn(driver.run(Inputs {
            commands: command_rx,
            im: im_events,
            identified,
            lookup_results: lookup_rx,
            dialed: dialed_rx,
            notices: notice_rx,
            relookup: relookup_rx,
        }));
        Ok((
            Messenger {
                commands,
                user,
                control,
            },
            event_rx,
        ))
    }

    /// This user's id (share its text form with contacts).
    pub fn user_id(&self) -> UserId {
        self.user
    }

    /// The node's peer id (the device key).
    pub fn peer_id(&self) -> PeerId {
        self.control.local_peer_id()
    }

    /// The addresses others can dial this node at, with its peer id: the
    /// listen addresses, with an unspecified IP (`0.0.0.0`, `::`) replaced
    /// by this host's interface addresses, then the external addresses
    /// added (see [`ServiceControl::announce_addrs`](shoal::ServiceControl::announce_addrs)).
    /// What the presence record announces.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        let id = self.peer_id();
        self.control
            .announce_addrs()
            .into_iter()
            .map(|a| a.with_peer_id(id))
            .collect()
    }

    /// Announces one more address this node is reachable at (a forwarded
    /// port, a public address in front of a NAT), from the next presence
    /// record on.
    pub fn add_external_address(&self, addr: Multiaddr) -> Result<(), shoal::ControlError> {
        self.control.add_external_address(addr)
    }

    /// Peers this node dialled and is connected to, with the address it
    /// reached them at: what is worth remembering to find the network again
    /// after a restart (an inbound session's address is the peer's outgoing
    /// port, not one to dial).
    pub fn reached_peers(&self) -> Vec<(PeerId, Multiaddr)> {
        self.control
            .sessions()
            .iter()
            .filter(|s| s.direction == shoal::Direction::Outbound)
            .map(|s| (s.peer, s.remote_addr.without_peer_id()))
            .collect()
    }

    /// Peers with an open session, each once.
    pub fn peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self.control.sessions().iter().map(|s| s.peer).collect();
        peers.sort();
        peers.dedup();
        peers
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, MessengerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| MessengerError::Stopped)?;
        rx.await.map_err(|_| MessengerError::Stopped)?
    }

    /// Adds (or renames) a contact; accepts its pending message request
    /// (its messages arrive as [`Event::Received`] and are acknowledged);
    /// unblocks it.
    pub async fn add_contact(&self, user: UserId, name: &str) -> Result<(), MessengerError> {
        let name = name.to_owned();
        self.call(|r| Command::AddContact(user, name, r)).await
    }

    /// Sends `text` to `contact`. Returns once the message is stored in the
    /// outbox; [`Event::Delivered`] follows when the contact acknowledges it.
    pub async fn send(&self, contact: UserId, text: &str) -> Result<MessageId, MessengerError> {
        let text = text.to_owned();
        self.call(|r| Command::Send(contact, text, r)).await
    }

    /// Marks received messages read and tells their sender.
    pub async fn mark_read(
        &self,
        contact: UserId,
        ids: Vec<MessageId>,
    ) -> Result<(), MessengerError> {
        self.call(|r| Command::MarkRead(contact, ids, r)).await
    }

    /// A page of history with `contact`, newest first, before `before`
    /// (the last item's `(meta.height, meta.id)` of the previous page).
    pub async fn history(
        &self,
        contact: UserId,
        before: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<HistoryItem>, MessengerError> {
        self.call(|r| Command::History(contact, before, limit, r))
            .await
    }

    /// The contacts.
    pub async fn contacts(&self) -> Result<Vec<ContactInfo>, MessengerError> {
        self.call(Command::Contacts).await
    }

    /// Removes `contact` with its sessions and its whole conversation, from
    /// the store's files too (see [`SqliteStore`](crate::SqliteStore)),
    /// and blocks it; [`Messenger::add_contact`] lets it write again.
    pub async fn remove_contact(&self, contact: UserId) -> Result<(), MessengerError> {
        self.call(|r| Command::RemoveContact(contact, r)).await
    }

    /// Blocks `contact`: its envelopes are dropped unacknowledged and
    /// nothing is sent to it; the conversation is kept.
    /// [`Messenger::add_contact`] unblocks.
    pub async fn block(&self, contact: UserId) -> Result<(), MessengerError> {
        self.call(|r| Command::Block(contact, r)).await
    }

    /// The safety number of this user and `contact` (the same on both
    /// sides; see [`shoal_im::SafetyNumber`]).
    pub fn safety_number(&self, contact: &UserId) -> shoal_im::SafetyNumber {
        shoal_im::SafetyNumber::of(&self.user, contact)
    }

    /// Envelopes refused since the messenger started, by reason. Refusals
    /// are never events: anyone can send envelopes, and an event for each
    /// would let any peer flood the application. They are counted here and
    /// logged at a bounded rate.
    pub async fn refusals(&self) -> Result<Refusals, MessengerError> {
        self.call(Command::Refusals).await
    }

    /// Marks `contact` verified (the user compared safety numbers with
    /// them), or not. A verified contact's device change holds sending
    /// back until acknowledged.
    pub async fn set_verified(
        &self,
        contact: UserId,
        verified: bool,
    ) -> Result<(), MessengerError> {
        self.call(|r| Command::SetVerified(contact, verified, r))
            .await
    }

    /// Accepts a verified contact's device change ([`Event::DeviceChanged`]):
    /// sending to them is allowed again.
    pub async fn acknowledge_device_change(&self, contact: UserId) -> Result<(), MessengerError> {
        self.call(|r| Command::AcknowledgeDeviceChange(contact, r))
            .await
    }

    /// The pending message requests, oldest first.
    pub async fn requests(&self) -> Result<Vec<RequestInfo>, MessengerError> {
        self.call(Command::Requests).await
    }

    /// The messages of `user`'s pending request, oldest first (reading
    /// them sends nothing: the stranger learns nothing until accepted).
    pub async fn request_messages(&self, user: UserId) -> Result<Vec<HistoryItem>, MessengerError> {
        self.call(|r| Command::RequestMessages(user, r)).await
    }

    /// What strangers and held messages cost this node (see
    /// [`Counters`]).
    pub async fn counters(&self) -> Result<Counters, MessengerError> {
        self.call(Command::Counters).await
    }

    /// Joins the network through the node at `addr` (`…/p2p/<peer id>`),
    /// as a `bootstrap` address does at start: dials it, joins the DHT
    /// through it and publishes this user's records. `Err` says in one line
    /// why it could not be reached.
    pub async fn connect(&self, addr: Multiaddr) -> Result<(), MessengerError> {
        self.call(|r| Command::Connect(addr, r)).await
    }

    /// Stops the node and the engine (everything acknowledged is already
    /// stored).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Dials each of `addrs` (which name their peer), then joins the DHT
/// through those that answered. `Err` is one readable line per address
/// that could not be reached (or the DHT's refusal).
async fn join_through(
    control: &ServiceControl,
    dht: &shoal_kad::Handle,
    addrs: Vec<Multiaddr>,
) -> Result<(), String> {
    let mut seeds = Vec::new();
    let mut problems = Vec::new();
    for addr in addrs {
        let Some(peer) = addr.peer_id() else {
            problems.push(format!("{addr}: the address needs /p2p/<peer id>"));
            continue;
        };
        let dial = control.dial(addr.clone(), DialOptions::default().expect(peer));
        match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
            Ok(Ok(_)) => seeds.push((peer, vec![addr.without_peer_id()])),
            Ok(Err(e)) => problems.push(format!("bootstrap {addr} unreachable: {}", short(&e))),
            Err(_) => problems.push(format!("bootstrap {addr} unreachable: no answer")),
        }
    }
    if !seeds.is_empty() {
        match tokio::time::timeout(Duration::from_secs(60), dht.bootstrap(seeds)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => problems.push(format!("joining the network failed: {e}")),
            Err(_) => problems.push("joining the network timed out".to_owned()),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

async fn put_records(dht: &shoal_kad::Handle, (presence, prekeys): (SignedRecord, SignedRecord)) {
    let (p, b) = tokio::join!(dht.put_record(presence), dht.put_record(prekeys));
    match (p, b) {
        (Ok((p, _)), Ok((b, _))) => tracing::debug!(p, b, "presence published"),
        (p, b) => tracing::warn!(?p, ?b, "presence not published"),
    }
}

type LookupResult = (UserId, Result<Option<directory::DirectoryEntry>, String>);

struct Driver<S: Store> {
    engine: Engine<S>,
    config: MessengerConfig,
    control: ServiceControl,
    dht: shoal_kad::Handle,
    events: mpsc::Sender<Event>,
    /// Sessions with the envelope protocol open, per device.
    im_sessions: PeerSessions,
    /// Known addresses per device.
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    /// Envelopes waiting for a session, per device.
    waiting: HashMap<PeerId, (UserId, Vec<Bytes>)>,
    dialing: HashSet<PeerId>,
    lookups_in_flight: HashSet<UserId>,
    /// Next allowed lookup and the current backoff, per contact.
    lookup_backoff: HashMap<UserId, (Instant, Duration)>,
    lookups: mpsc::Sender<LookupResult>,
    /// Dial outcomes, per device.
    dialed: mpsc::Sender<DialOutcome>,
    /// Lines for the user from background tasks (unreachable bootstrap
    /// nodes), shown as [`Event::Error`].
    notices: mpsc::Sender<String>,
    /// Contacts to look up again after a miss.
    relookup: mpsc::Sender<UserId>,
    online: HashSet<UserId>,
    faults: Option<Faults>,
    published_seq: u64,
    /// Events for the application, sent (waiting while its channel is
    /// full) before the driver takes more input.
    pending_events: std::collections::VecDeque<Event>,
    /// The engine failed: stop after telling the application.
    stopped: bool,
    /// When the application was last told that the store is failing.
    store_warned: Option<Instant>,
}

/// Everything the driver task listens to.
struct Inputs {
    commands: mpsc::Receiver<Command>,
    im: ProtocolEvents,
    identified: mpsc::Receiver<shoal_identify::Event>,
    lookup_results: mpsc::Receiver<LookupResult>,
    dialed: mpsc::Receiver<DialOutcome>,
    notices: mpsc::Receiver<String>,
    relookup: mpsc::Receiver<UserId>,
}

impl<S: Store> Driver<S> {
    async fn run(mut self, inputs: Inputs) {
        let Inputs {
            mut commands,
            mut im,
            mut identified,
            mut lookup_results,
            mut dialed,
            mut notices,
            mut relookup,
        } = inputs;
        self.rotate_prekey();
        self.join();
        let mut republish = tokio::time::interval(self.config.republish);
        republish.tick().await;
        let mut joined = !self.config.bootstrap.is_empty();
        loop {
            self.drain();
            // Backpressure: an application that does not read its events
            // stops the messenger from taking more envelopes.
            while let Some(event) = self.pending_events.pop_front() {
                if self.events.send(event).await.is_err() {
                    self.pending_events.clear();
                }
            }
            if self.stopped {
                self.control.shutdown().await;
                return;
            }
            let deadline = self
                .engine
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let timer = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        self.control.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.command(command),
                    None => {
                        self.control.shutdown().await;
                        return;
                    }
                },
                event = im.recv() => match event {
                    Some(ProtocolEvent::Connected { session, .. }) => {
                        self.im_sessions.insert(session.peer, session.id);
                        self.flush_waiting(session.peer);
                        self.set_online(session.peer, true);
                    }
                    Some(ProtocolEvent::Received { session, data }) => {
                        if let Some(tap) = &self.config.envelope_tap {
                            let _ = tap.try_send(data.clone());
                        }
                        // The transport authenticated the sending device:
                        // an envelope of ours it cannot have sealed on a
                        // working session makes the engine ask for a new one.
                        let result =
                            self.engine
                                .handle_envelope_from(Instant::now(), session.peer, &data);
                        if let Err(e) = result {
                            self.fatal(e);
                        }
                    }
                    Some(ProtocolEvent::Disconnected { session }) => {
                        self.im_sessions.remove(&session.peer, session.id);
                        if !self.im_sessions.contains(&session.peer) {
                            self.set_online(session.peer, false);
                        }
                    }
                    Some(_) => {}
                    None => return,
                },
                Some(event) = identified.recv() => {
                    if let shoal_identify::Event::Identified { peer, session, info } = event {
                        // What a peer says about its own addresses is a
                        // claim: none narrower than where we reached it.
                        let source = self
                            .control
                            .sessions()
                            .into_iter()
                            .find(|s| s.id == session)
                            .map(|s| s.remote_addr.clone());
                        let policy = self.config.address_scope;
                        let listen_addrs: Vec<Multiaddr> = info
                            .listen_addrs
                            .iter()
                            .filter(|a| policy.allows(a, source.as_ref()))
                            .cloned()
                            .collect();
                        self.dht.add_address(peer, listen_addrs.clone());
                        self.addresses.entry(peer).or_insert_with(|| listen_addrs.clone());
                        if !joined {
                            // Joined without bootstrap peers: the first peer
                            // that connects to us is our way in.
                            joined = true;
                            let dht = self.dht.clone();
                            let seeds = vec![(peer, listen_addrs)];
                            let records = self.records();
                            tokio::spawn(async move {
                                let _ = dht.bootstrap(seeds).await;
                                // Our first publication found an empty DHT.
                                if let Some(records) = records {
                                    put_records(&dht, records).await;
                                }
                            });
                        }
                    }
                }
                Some((user, result)) = lookup_results.recv() => self.looked_up(user, result),
                Some(user) = relookup.recv() => {
                    if self.engine.outbox_len(&user) > 0 {
                        self.lookup(user, Instant::now());
                    }
                }
                Some(outcome) = dialed.recv() => {
                    let peer = outcome.device;
                    self.dialing.remove(&peer);
                    if let Some(reason) = outcome.failure.filter(|_| !outcome.only_local) {
                        // Forget the stale addresses; the next retry looks up again.
                        tracing::debug!(%peer, %reason, "dial to a contact's device failed");
                        self.addresses.remove(&peer);
                        self.waiting.remove(&peer);
                        self.pending_events.push_back(Event::Error {
                            contact: Some(outcome.contact),
                            error: format!("cannot reach their device: {reason}; retrying later"),
                        });
                    }
                }
                Some(error) = notices.recv() => {
                    self.pending_events.push_back(Event::Error { contact: None, error });
                }
                _ = republish.tick() => {
                    self.rotate_prekey();
                    self.publish();
                }
                () = timer => {
                    if let Err(e) = self.engine.handle_timeout(Instant::now()) {
                        self.fatal(e);
                    }
                }
            }
        }
    }

    /// Drops what the driver keeps for `user` once it is blocked or
    /// removed: envelopes already sealed for it that wait for a session
    /// (they must not go out when its device next connects), its online
    /// mark and its lookup state.
    fn forget(&mut self, user: UserId) {
        self.waiting.retain(|_, (contact, _)| *contact != user);
        self.online.remove(&user);
        self.lookup_backoff.remove(&user);
        self.lookups_in_flight.remove(&user);
    }

    /// Tells the engine and the user whether the contact owning `device`
    /// is reachable (a session with the envelope protocol is open).
    fn set_online(&mut self, device: PeerId, online: bool) {
        let Some(contact) = self.engine.contact_of_device(&device) else {
            return;
        };
        if let Err(e) = self.engine.set_online(Instant::now(), contact, online) {
            self.fatal(e);
        }
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
            let event = if online {
                Event::ContactOnline { contact, device }
            } else {
                Event::ContactOffline { contact }
            };
            self.pending_events.push_back(event);
        }
    }

    /// The engine failed. A store failure (a full disk) is survivable: the
    /// step left nothing behind and the engine reloads and retries, so the
    /// application is told (at most once a minute) and the node keeps
    /// serving. Anything else (stored state that does not parse) stops the
    /// messenger; reopening the store resumes from the last commit.
    fn fatal(&mut self, error: shoal_im::engine::EngineError) {
        if let shoal_im::engine::EngineError::Store(e) = &error {
            tracing::warn!(%e, "store failed; the engine retries");
            let now = Instant::now();
            if self
                .store_warned
                .is_none_or(|t| now.duration_since(t) >= STORE_WARNING_INTERVAL)
            {
                self.store_warned = Some(now);
                self.pending_events.push_back(Event::Error {
                    contact: None,
                    error: format!("storage failed (retrying): {e}"),
                });
            }
            return;
        }
        tracing::error!(%error, "messenger engine stopped");
        if !self.stopped {
            self.stopped = true;
            self.pending_events.push_back(Event::Error {
                contact: None,
                error: format!("messenger stopped: {error}"),
            });
        }
    }

    /// Joins the DHT through the bootstrap peers, then publishes, in the
    /// background: the driver serves commands and envelopes meanwhile.
    fn join(&mut self) {
        let mut through = Vec::new();
        for addr in &self.config.bootstrap {
            let Some(peer) = addr.peer_id() else {
                tracing::warn!(%addr, "bootstrap address without /p2p/ peer id: skipped");
                continue;
            };
            self.addresses
                .entry(peer)
                .or_default()
                .push(addr.without_peer_id());
            through.push(addr.clone());
        }
        let Some(records) = self.records() else {
            return;
        };
        let (control, dht, notices) =
            (self.control.clone(), self.dht.clone(), self.notices.clone());
        tokio::spawn(async move {
            if !through.is_empty()
                && let Err(error) = join_through(&control, &dht, through).await
            {
                let _ = notices.send(error).await;
            }
            put_records(&dht, records).await;
        });
    }

    /// Replaces the signed prekey when it is due (the next publication
    /// carries the new bundle).
    fn rotate_prekey(&mut self) {
        match self.engine.rotate_prekey_if_due(unix_ms() / 1000) {
            Ok(true) => tracing::info!("signed prekey rotated"),
            Ok(false) => {}
            Err(e) => self.fatal(e),
        }
    }

    /// Publishes the presence and prekey records (in the background).
    fn publish(&mut self) {
        if let Some(records) = self.records() {
            let dht = self.dht.clone();
            tokio::spawn(async move { put_records(&dht, records).await });
        }
    }

    /// Fresh presence and prekey records (a larger `seq`, a new expiry).
    fn records(&mut self) -> Option<(SignedRecord, SignedRecord)> {
        let now = unix_ms() / 1000;
        // Larger is newer, also across restarts (milliseconds, so a quick
        // restart still publishes a newer record).
        self.published_seq = unix_ms().max(self.published_seq + 1);
        let addrs = self.control.announce_addrs();
        let expires = now.saturating_add(self.config.record_ttl.as_secs());
        let device = self.engine.device();
        let seq = self.published_seq;
        let records = directory::presence_record(device, &addrs, seq, expires).and_then(|p| {
            directory::prekeys_record(device, &self.engine.prekey_bundle(), seq, expires)
                .map(|b| (p, b))
        });
        match records {
            Ok(records) => Some(records),
            Err(e) => {
                tracing::warn!(%e, "presence records not built");
                None
            }
        }
    }

    fn command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::AddContact(user, name, reply) => {
                let _ = reply.send(self.engine.add_contact(user, &name).map_err(Into::into));
                self.lookup(user, now);
            }
            Command::Send(user, text, reply) => {
                let result = self.engine.send(now, unix_ms(), user, &text);
                let _ = reply.send(result.map_err(Into::into));
            }
            Command::MarkRead(user, ids, reply) => {
                let _ = reply.send(self.engine.mark_read(user, &ids).map_err(Into::into));
            }
            Command::History(user, before, limit, reply) => {
                let _ = reply.send(
                    self.engine
                        .history(&user, before, limit)
                        .map_err(Into::into),
                );
            }
            Command::Contacts(reply) => {
                let _ = reply.send(Ok(self.engine.contacts()));
            }
            Command::RemoveContact(user, reply) => {
                let result = self.engine.remove_contact(user);
                self.forget(user);
                let _ = reply.send(result.map_err(Into::into));
            }
            Command::Block(user, reply) => {
                let result = self.engine.block(user);
                self.forget(user);
                let _ = reply.send(result.map_err(Into::into));
            }
            Command::Refusals(reply) => {
                let _ = reply.send(Ok(self.engine.refusals().clone()));
            }
            Command::Requests(reply) => {
                let _ = reply.send(Ok(self.engine.requests()));
            }
            Command::RequestMessages(user, reply) => {
                let _ = reply.send(self.engine.request_messages(&user).map_err(Into::into));
            }
            Command::Counters(reply) => {
                let _ = reply.send(Ok(self.engine.counters()));
            }
            Command::SetVerified(user, verified, reply) => {
                let result = self.engine.set_verified(user, verified);
                let _ = reply.send(result.map_err(Into::into));
            }
            Command::AcknowledgeDeviceChange(user, reply) => {
                let result = self.engine.acknowledge_device_change(user);
                let _ = reply.send(result.map_err(Into::into));
            }
            Command::Connect(addr, reply) => {
                let Some(peer) = addr.peer_id() else {
                    let _ = reply.send(Err(MessengerError::Unreachable(format!(
                        "{addr}: the address needs /p2p/<peer id>"
                    ))));
                    return;
                };
                self.addresses
                    .entry(peer)
                    .or_default()
                    .push(addr.without_peer_id());
                let (control, dht, records) =
                    (self.control.clone(), self.dht.clone(), self.records());
                tokio::spawn(async move {
                    let result = join_through(&control, &dht, vec![addr]).await;
                    if result.is_ok()
                        && let Some(records) = records
                    {
                        put_records(&dht, records).await;
                    }
                    let _ = reply.send(result.map_err(MessengerError::Unreachable));
                });
            }
            Command::Shutdown(_) => {}
        }
    }

    /// Moves the engine's envelopes to the network and its events to the user.
    fn drain(&mut self) {
        let now = Instant::now();
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
                    self.lookup(contact, now);
                    continue;
                }
                EngineEvent::NeedRoute { contact, device } => {
                    self.route(contact, device, now);
                    continue;
                }
                EngineEvent::Recovered { contact, id, .. } => {
                    tracing::info!(%contact, %id, "own message recovered from the contact");
                    continue;
                }
                EngineEvent::Renumbered { contact, old, new } => {
                    tracing::info!(%contact, %old, %new, "message written again under a new id");
                    continue;
                }
                EngineEvent::SessionReset { contact } => {
                    tracing::info!(%contact, "session replaced at the contact's request");
                    continue;
                }
                other => {
                    tracing::debug!(?other, "engine event not forwarded");
                    continue;
                }
            };
            self.pending_events.push_back(out);
        }
        while let Some(transmit) = self.engine.poll_transmit() {
            self.transmit(transmit, now);
        }
    }

    fn transmit(&mut self, transmit: Transmit, now: Instant) {
        let device = transmit.device;
        let bytes = Bytes::from(transmit.envelope);
        if self.im_sessions.contains(&device) {
            self.deliver(device, bytes);
            return;
        }
        // A reset request to a device we cannot name a user for goes out
        // only while it is connected.
        let Some(contact) = transmit.contact else {
            return;
        };
        let max = self.config.max_waiting;
        let (_, queue) = self
            .waiting
            .entry(device)
            .or_insert_with(|| (contact, Vec::new()));
        if queue.len() < max {
            queue.push(bytes);
        }
        self.route(contact, device, now);
    }

    /// Gets a session to `device` (of `contact`): dials a known address,
    /// or looks the contact up first.
    fn route(&mut self, contact: UserId, device: PeerId, now: Instant) {
        if self.im_sessions.contains(&device) {
            self.set_online(device, true);
            return;
        }
        if self.dialing.contains(&device) {
            return;
        }
        match self.addresses.get(&device).cloned() {
            Some(addrs) if !addrs.is_empty() => {
                self.dialing.insert(device);
                let control = self.control.clone();
                let dialed = self.dialed.clone();
                tokio::spawn(async move {
                    let mut failure = Some("no address".to_owned());
                    let mut only_local = true;
                    for addr in addrs {
                        let dial =
                            control.dial(addr.clone(), DialOptions::default().expect(device));
                        match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
                            Ok(Ok(_)) => {
                                failure = None;
                                break;
                            }
                            Ok(Err(e)) => {
                                only_local &= e.is_local();
                                failure = Some(format!("{addr}: {}", short(&e)));
                            }
                            Err(_) => {
                                only_local = false;
                                failure = Some(format!("{addr}: no answer"));
                            }
                        }
                    }
                    let outcome = DialOutcome {
                        device,
                        contact,
                        failure,
                        only_local,
                    };
                    let _ = dialed.send(outcome).await;
                });
            }
            _ => self.lookup(contact, now),
        }
    }

    /// Sends one envelope on an open session, through the fault layer if
    /// one is configured. A full queue drops it: the engine retries.
    fn deliver(&mut self, device: PeerId, bytes: Bytes) {
        let Some(session) = self.im_sessions.first(&device) else {
            return;
        };
        let Some(faults) = &mut self.faults else {
            match self.control.try_send(session, IM, bytes.clone()) {
                Ok(()) => {}
                // The envelope used a message key already: wait for room
                // instead of dropping it (a drop would be a gap the
                // recipient has to skip). The engine's send budget bounds
                // how many can wait.
                Err(shoal::SendError::QueueFull(_)) => {
                    let control = self.control.clone();
                    tokio::spawn(async move {
                        let _ = control.send(session, IM, bytes).await;
                    });
                }
                Err(e) => tracing::debug!(%e, "envelope not queued; the engine will retry"),
            }
            return;
        };
        for delay in faults.plan() {
            if delay.is_zero() {
                let _ = self.control.try_send(session, IM, bytes.clone());
            } else {
                let control = self.control.clone();
                let bytes = bytes.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = control.try_send(session, IM, bytes);
                });
            }
        }
    }

    fn flush_waiting(&mut self, device: PeerId) {
        if let Some((_, queue)) = self.waiting.remove(&device) {
            for bytes in queue {
                self.deliver(device, bytes);
            }
        }
    }

    /// Looks `user` up in the directory unless a lookup runs or the
    /// backoff says wait.
    fn lookup(&mut self, user: UserId, now: Instant) {
        if self.lookups_in_flight.contains(&user) {
            return;
        }
        if let Some((next, _)) = self.lookup_backoff.get(&user)
            && *next > now
        {
            return;
        }
        self.lookups_in_flight.insert(user);
        let dht = self.dht.clone();
        let results = self.lookups.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(
                Duration::from_secs(20),
                directory::lookup(&dht, &user, unix_ms() / 1000),
            )
            .await
            {
                Ok(Ok(found)) => Ok(found),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("lookup timed out".to_owned()),
            };
            let _ = results.send((user, result)).await;
        });
    }

    /// A lookup of `user` found nothing usable: the next one waits the
    /// current backoff (returned), which doubles up to `lookup_retry_max`.
    fn lookup_missed(&mut self, user: UserId, now: Instant) -> Duration {
        let (first, max) = (self.config.lookup_retry, self.config.lookup_retry_max);
        let backoff = self.lookup_backoff.entry(user).or_insert((now, first));
        let wait = backoff.1;
        backoff.0 = now + wait;
        backoff.1 = (wait * 2).min(max);
        wait
    }

    fn looked_up(
        &mut self,
        user: UserId,
        result: Result<Option<directory::DirectoryEntry>, String>,
    ) {
        self.lookups_in_flight.remove(&user);
        let now = Instant::now();
        let entry = match result {
            Ok(Some(entry)) => entry,
            miss => {
                if let Err(e) = miss {
                    tracing::debug!(%user, %e, "lookup failed");
                }
                let wait = self.lookup_missed(user, now);
                // Look again after the backoff if messages still wait (the
                // contact may publish any moment, e.g. while both start).
                if self.engine.outbox_len(&user) > 0 {
                    let relookup = self.relookup.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = relookup.send(user).await;
                    });
                }
                return;
            }
        };
        if !entry.addresses.is_empty() {
            self.lookup_backoff.remove(&user);
        }
        let device = entry.device;
        self.addresses.insert(device, entry.addresses.clone());
        self.dht.add_address(device, entry.addresses.clone());
        // A first session, or a new one if the contact moved device.
        if let Some(bundle) = &entry.bundle
            && let Err(e) = self.engine.set_bundle(now, user, bundle)
        {
            self.pending_events.push_back(Event::Error {
                contact: Some(user),
                error: e.to_string(),
            });
        }
        if entry.addresses.is_empty() {
            // Nowhere to dial: as good as a miss; keep backing off.
            self.lookup_missed(user, now);
            return;
        }
        if self.engine.has_session(&user) {
            self.route(user, device, now);
        }
    }
}
