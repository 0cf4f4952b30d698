//! [`Messenger`]: the application's handle, and the two ways to run one:
//! [`Messenger::start`] builds and owns a node (identify, Kademlia, the
//! envelope protocol); [`Messenger::protocol`] returns the envelope
//! protocol as a plug-in for a node the embedder builds, beside its own
//! protocols (gossip, an application protocol).
//!
//! Either way the engine runs as a [`shoal::Core`] under the service's
//! [`CoreDriver`](shoal::CoreDriver) ([`crate::im_core`]), and one task
//! ([`crate::driver`]) moves commands, events, lookups and publications.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use shoal::{
    CoreDriver, HandlerResult, ProtocolContext, ProtocolContextMut, ProtocolId, ProtocolMeta,
    ServiceBuilder, ServiceControl, ServiceProtocol,
};
use shoal_identify::LocalRecord;
use shoal_identity::PeerId;
use shoal_im::engine::{ContactInfo, Counters, Engine, HistoryItem, Refusals, RequestInfo};
use shoal_im::store::HistoryCursor;
use shoal_im::{Message, MessageId, Store, UserId};
use shoal_transport::{Multiaddr, Transport};
use tokio::sync::{mpsc, oneshot};

use crate::config::MessengerConfig;
use crate::driver::Driver;
use crate::im_core::{ImCore, OutputQueue};

/// Protocol id of identify on a node [`Messenger::start`] builds.
pub const IDENTIFY: ProtocolId = ProtocolId(2);
/// Protocol id of Kademlia on a node [`Messenger::start`] builds.
pub const KAD: ProtocolId = ProtocolId(4);
/// Protocol id of the envelope protocol on a node [`Messenger::start`]
/// builds.
pub const IM: ProtocolId = ProtocolId(6);
/// Protocol id of the mailbox DHT (a client) on a node
/// [`Messenger::start`] builds.
pub const MAILBOX_KAD: ProtocolId = ProtocolId(7);
/// Protocol id of the mailbox protocol (a client) on a node
/// [`Messenger::start`] builds.
pub const MAILBOX: ProtocolId = ProtocolId(8);
/// Protocol id of the relay hop protocol on a node [`Messenger::start`]
/// builds.
pub const RELAY_HOP: ProtocolId = ProtocolId(9);
/// Protocol id of the relay stop protocol on a node [`Messenger::start`]
/// builds.
pub const RELAY_STOP: ProtocolId = ProtocolId(10);
/// Protocol id of reachability checks on a node [`Messenger::start`]
/// builds.
pub const REACH: ProtocolId = ProtocolId(11);
/// Protocol id of the reachability dial-back on a node
/// [`Messenger::start`] builds.
pub const REACH_BACK: ProtocolId = ProtocolId(12);
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
    /// W mailbox replicas signed for our message (see
    /// [`shoal_mailbox::Quorum`]): it waits for the offline contact even if
    /// this node goes.
    Stored {
        /// The conversation.
        contact: UserId,
        /// Our message.
        id: MessageId,
        /// The replicas whose receipts counted.
        replicas: Vec<PeerId>,
    },
    /// A contact's mailbox is full (a replica answered QUOTA): our
    /// messages wait here until the contact drains it; none is dropped.
    WaitingForSpace {
        /// The conversation.
        contact: UserId,
    },
    /// Our message was sealed 14 days ago and is still not delivered:
    /// mailboxes dropped it. It goes out again directly once the contact
    /// is online.
    Expired {
        /// The conversation.
        contact: UserId,
        /// Our message.
        id: MessageId,
    },
    /// A read of our mailboxes ended (at start, then every
    /// [`MessengerConfig::mailbox_poll`]): what waited for us while we
    /// were away has been shown (or is held for what it follows).
    MailboxesRead {
        /// Every day of every contact counted as read (every replica
        /// answered); otherwise the read is tried again soon.
        complete: bool,
        /// Envelopes found (copies of what arrived directly included).
        envelopes: usize,
        /// Replicas that took (or renewed) our wake-up registration
        /// ([`MessengerConfig::wake`]) in this read.
        wake_registrations: usize,
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

pub(crate) type Reply<T> = oneshot::Sender<Result<T, MessengerError>>;

pub(crate) enum Command {
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

/// A running messenger. Cheap to clone; every clone talks to the same
/// engine.
#[derive(Debug, Clone)]
pub struct Messenger {
    commands: mpsc::Sender<Command>,
    user: UserId,
    device: PeerId,
    control: Arc<OnceLock<ServiceControl>>,
    mailboxes: Option<Arc<crate::mailboxes::Mailboxes>>,
    relay: Arc<OnceLock<shoal_relay::RelayHandle>>,
    reach: Arc<OnceLock<shoal_reach::ReachHandle>>,
}

/// Kademlia as a messenger node runs it: only records of the messaging
/// kinds, each checked by its validator, so nobody can squat a user's
/// presence or prekey key with a record of another kind.
pub fn kad_config(config: &MessengerConfig) -> shoal_kad::Config {
    shoal_kad::Config {
        accept_unknown_kinds: false,
        address_scope: config.dial_scope(),
        // A device that hides its IP addresses stays out of routing tables.
        client: config.hide_ip_addresses,
        ..shoal_kad::Config::default()
    }
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens an engine on `store` (creating an identity if the store is empty).
pub fn open_engine<S: Store>(
    store: S,
    config: &MessengerConfig,
) -> Result<Engine<S>, MessengerError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| MessengerError::Start(e.to_string()))?;
    let now = Instant::now();
    Ok(Engine::open(
        store,
        config.engine.clone(),
        seed,
        now,
        unix_ms() / 1000,
    )?)
}

/// The envelope protocol's handler: the core driver, plus the service's
/// control handle for the driver task once the service runs.
struct ImHandler<S: Store> {
    driver: CoreDriver<ImCore<S>>,
    device: PeerId,
    ready: Option<oneshot::Sender<ServiceControl>>,
}

impl<S: Store> ServiceProtocol for ImHandler<S> {
    fn init(&mut self, ctx: &mut ProtocolContext) -> HandlerResult {
        if ctx.control().local_peer_id() != self.device {
            return Err("the node's key is not the messenger's device key".into());
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(ctx.control().clone());
        }
        self.driver.init(ctx)
    }

    fn connected(&mut self, ctx: &mut ProtocolContextMut<'_>, version: u32) -> HandlerResult {
        self.driver.connected(ctx, version)
    }

    fn disconnected(&mut self, ctx: &mut ProtocolContextMut<'_>) -> HandlerResult {
        self.driver.disconnected(ctx)
    }

    fn received(&mut self, ctx: &mut ProtocolContextMut<'_>, data: bytes::Bytes) -> HandlerResult {
        self.driver.received(ctx, data)
    }

    fn dial_failed(
        &mut self,
        ctx: &mut ProtocolContext,
        peer: PeerId,
        error: &shoal::DialError,
    ) -> HandlerResult {
        self.driver.dial_failed(ctx, peer, error)
    }
}

impl Messenger {
    /// The messenger as a protocol plug-in, for a node the caller builds:
    /// returns the envelope protocol (register it as `id`), the handle and
    /// the events. The node must use the engine's device key
    /// (`engine.device().signing_key()`) and run Kademlia with `dht` (see
    /// [`kad_config`] and [`crate::directory::install_validators`]); the
    /// messenger joins through `config.bootstrap` (or
    /// [`Messenger::connect`]) once the node runs. Needs a tokio runtime.
    ///
    /// Read the events: none is ever dropped. While the application leaves
    /// [`MAX_BACKLOG`](crate::im_core::MAX_BACKLOG) of them unread, envelopes
    /// wait unacknowledged (their senders retry).
    pub fn protocol<S: Store>(
        id: ProtocolId,
        engine: Engine<S>,
        dht: shoal_kad::Handle,
        config: MessengerConfig,
    ) -> (ProtocolMeta, Messenger, mpsc::Receiver<Event>) {
        Self::build(id, engine, dht, config, None, None, None)
    }

    fn build<S: Store>(
        id: ProtocolId,
        engine: Engine<S>,
        dht: shoal_kad::Handle,
        config: MessengerConfig,
        owned: Option<mpsc::Receiver<shoal_identify::Event>>,
        mailboxes: Option<crate::driver::MailboxState>,
        reach: Option<tokio::sync::watch::Receiver<shoal_reach::Status>>,
    ) -> (ProtocolMeta, Messenger, mpsc::Receiver<Event>) {
        let (user, device) = (engine.user_id(), engine.device().signing_key().peer_id());
        let backlog = Arc::new(AtomicUsize::new(0));
        let core = ImCore::new(engine, &config, backlog.clone());
        let outputs = Arc::new(OutputQueue::default());
        let queue = outputs.clone();
        let (driver, core) = CoreDriver::new(core, move |output| queue.push(output));
        let (ready, ready_rx) = oneshot::channel();
        let handler = ImHandler {
            driver: driver.wait_for_room(),
            device,
            ready: Some(ready),
        };
        let meta = ProtocolMeta::builder(id, IM_PROTOCOL_NAME)
            .max_frame_size(shoal_im::envelope::MAX_ENVELOPE_LEN)
            // Chat is what relays are for.
            .over_relay(true)
            .service_handle(handler);
        let link = mailboxes.as_ref().map(|m| m.link.clone());
        let (commands, command_rx) = mpsc::channel(64);
        let (events, event_rx) = mpsc::channel(1024);
        let control = Arc::new(OnceLock::new());
        let relay: Arc<OnceLock<shoal_relay::RelayHandle>> = Arc::new(OnceLock::new());
        let driver = Driver {
            core,
            dht,
            config,
            events,
            backlog,
            owns_node: owned.is_some(),
            im: id,
            in_flight: Default::default(),
            published_seq: 0,
            mailboxes,
            reach,
            relay: relay.clone(),
        };
        let cell = control.clone();
        tokio::spawn(async move {
            let Ok(control) = ready_rx.await else {
                return;
            };
            let _ = cell.set(control.clone());
            driver.run(control, command_rx, outputs, owned).await;
        });
        let messenger = Messenger {
            commands,
            user,
            device,
            control,
            mailboxes: link,
            relay,
            reach: Arc::new(OnceLock::new()),
        };
        (meta, messenger, event_rx)
    }

    /// Opens the engine on `store` (creating an identity if the store is
    /// empty), starts a node on `transport` whose key is the device key
    /// (identify, Kademlia and the envelope protocol, with the ids above),
    /// listens, joins the network through `config.bootstrap`, publishes the
    /// presence and prekey records, and returns the handle and its events.
    ///
    /// Read the events: none is ever dropped (see [`Messenger::protocol`]).
    pub async fn start<S: Store>(
        store: S,
        transport: impl Transport,
        config: MessengerConfig,
    ) -> Result<(Messenger, mpsc::Receiver<Event>), MessengerError> {
        let engine = open_engine(store, &config)?;
        let key = engine.device().signing_key().clone();
        let (kad_meta, dht, _dht_events) = shoal_kad::new(KAD, key.peer_id(), kad_config(&config));
        crate::directory::install_validators(&dht);
        let (identify_meta, _, identified) = shoal_identify::new(
            IDENTIFY,
            LocalRecord::new(key.clone()),
            shoal_identify::Config {
                agent_version: config.agent.clone(),
                address_scope: config.dial_scope(),
                announce_relayed_only: config.hide_ip_addresses,
                protocols: vec![
                    shoal_identify::PROTOCOL_NAME.to_owned(),
                    shoal_kad::PROTOCOL_NAME.to_owned(),
                    IM_PROTOCOL_NAME.to_owned(),
                ],
                ..shoal_identify::Config::default()
            },
        );
        let (listen, external) = (config.listen.clone(), config.external_addresses.clone());
        // Every messenger node dials through relays; it reserves on the
        // configured ones so peers can reach it when it cannot be dialled.
        let mut relay = shoal_relay::Relay::new(
            RELAY_HOP,
            RELAY_STOP,
            shoal_relay::Config {
                relays: config.relays.clone(),
                ..shoal_relay::Config::default()
            },
        );
        let mut builder = relay.install(ServiceBuilder::new(key.clone()).transport(transport));
        // The node checks which of its addresses others can dial (it asks
        // the nodes it is connected to; it checks nobody's itself).
        let mut reach = shoal_reach::Reach::new(
            REACH,
            REACH_BACK,
            shoal_reach::Config {
                serve: false,
                global_ranges: config.global_ranges.clone(),
                ..shoal_reach::Config::default()
            },
        );
        builder = reach.install(builder);
        let reach_status = reach.changes();
        let mut mailboxes = None;
        if config.mailboxes {
            // A client of the nodes that keep mailboxes: it looks replicas
            // up and never enters their routing tables.
            let (mailbox_kad, mailbox_dht, _) = shoal_kad::new_named(
                MAILBOX_KAD,
                shoal_mailbox::DHT_PROTOCOL_NAME,
                key.peer_id(),
                shoal_kad::Config {
                    client: true,
                    address_scope: config.dial_scope(),
                    ..shoal_kad::Config::default()
                },
            );
            let (mailbox, client, pushes) =
                shoal_mailbox::new(MAILBOX, shoal_mailbox::Config::default(), None);
            builder = builder.protocol(mailbox_kad).protocol(mailbox);
            let link = Arc::new(crate::mailboxes::Mailboxes::new(
                client,
                mailbox_dht,
                config.wake.clone(),
            ));
            mailboxes = Some(crate::driver::MailboxState::new(
                link,
                pushes,
                config.mailbox_poll,
            ));
        }
        let (im_meta, messenger, events) = Self::build(
            IM,
            engine,
            dht,
            config,
            Some(identified),
            mailboxes,
            Some(reach_status),
        );
        let service = builder
            .protocol(identify_meta)
            .protocol(kad_meta)
            .protocol(im_meta)
            .build()
            .map_err(|e| MessengerError::Start(e.to_string()))?;
        let control = service.control();
        // Known now: the handle answers `listen_addrs` at once.
        let _ = messenger.control.set(control.clone());
        for addr in &listen {
            control
                .listen(addr.clone())
                .await
                .map_err(|e| MessengerError::Start(format!("listen on {addr}: {e}")))?;
        }
        for addr in external {
            control
                .add_external_address(addr.clone())
                .map_err(|e| MessengerError::Start(format!("external address {addr}: {e}")))?;
        }
        tokio::spawn(service);
        let _ = messenger.relay.set(relay.start(control.clone()).await);
        let _ = messenger.reach.set(reach.start(control, None));
        Ok((messenger, events))
    }

    /// The relayed addresses this node holds now, as a watch that moves
    /// when a reservation comes or goes (`None` before
    /// [`Messenger::start`] has started the relay client).
    pub fn relay_changes(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<Vec<shoal_transport::Multiaddr>>> {
        self.relay.get().map(shoal_relay::RelayHandle::addrs)
    }

    /// What reachability checks found of this node's addresses (see
    /// [`MessengerConfig::global_ranges`]): empty until peers that check
    /// for others are connected.
    pub fn reachability(&self) -> shoal_reach::Status {
        self.reach
            .get()
            .map(shoal_reach::ReachHandle::status)
            .unwrap_or_default()
    }

    /// The relays holding a reservation for this node now (see
    /// [`MessengerConfig::relays`]): peers reach it through them.
    pub fn relays(&self) -> Vec<PeerId> {
        self.relay
            .get()
            .map(shoal_relay::RelayHandle::reserved)
            .unwrap_or_default()
    }

    /// This user's id (share its text form with contacts).
    pub fn user_id(&self) -> UserId {
        self.user
    }

    /// The node's peer id (the device key).
    pub fn peer_id(&self) -> PeerId {
        self.device
    }

    /// The service's control handle, once the node runs.
    fn control(&self) -> Option<&ServiceControl> {
        self.control.get()
    }

    /// The addresses others can dial this node at, with its peer id: the
    /// listen addresses, with an unspecified IP (`0.0.0.0`, `::`) replaced
    /// by this host's interface addresses, then the external addresses
    /// added (see [`ServiceControl::announce_addrs`](shoal::ServiceControl::announce_addrs)).
    /// What the presence record announces.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        let id = self.peer_id();
        self.control()
            .map(ServiceControl::announce_addrs)
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.with_peer_id(id))
            .collect()
    }

    /// Announces one more address this node is reachable at (a forwarded
    /// port, a public address in front of a NAT), from the next presence
    /// record on.
    pub fn add_external_address(&self, addr: Multiaddr) -> Result<(), shoal::ControlError> {
        self.control()
            .ok_or(shoal::ControlError::ShuttingDown)?
            .add_external_address(addr)
    }

    /// Peers this node dialled and is connected to, with the address it
    /// reached them at: what is worth remembering to find the network again
    /// after a restart (an inbound session's address is the peer's outgoing
    /// port, not one to dial).
    pub fn reached_peers(&self) -> Vec<(PeerId, Multiaddr)> {
        let sessions = self.control().map(ServiceControl::sessions);
        sessions
            .unwrap_or_default()
            .iter()
            .filter(|s| s.direction == shoal::Direction::Outbound)
            .map(|s| (s.peer, s.remote_addr.without_peer_id()))
            .collect()
    }

    /// Mailbox replica lookups made since start (each names the replicas
    /// of one mailbox; a mailbox's set is reused for 10 minutes). 0 without
    /// mailboxes.
    pub fn mailbox_lookups(&self) -> u64 {
        self.mailboxes.as_ref().map_or(0, |m| m.lookups())
    }

    /// Peers with an open session, each once.
    pub fn peers(&self) -> Vec<PeerId> {
        let sessions = self.control().map(ServiceControl::sessions);
        let mut peers: Vec<PeerId> = sessions
            .unwrap_or_default()
            .iter()
            .map(|s| s.peer)
            .collect();
        peers.sort();
        peers.dedup();
        peers
    }

    /// Peers with an open session, each once, with the relay the session
    /// goes through (`None`: direct, which is preferred when both exist).
    pub fn peer_paths(&self) -> Vec<(PeerId, Option<PeerId>)> {
        let sessions = self.control().map(ServiceControl::sessions);
        let mut paths: Vec<(PeerId, Option<PeerId>)> = sessions
            .unwrap_or_default()
            .iter()
            .map(|s| {
                let relay = s
                    .remote_addr
                    .split_circuit()
                    .and_then(|(relay, _)| relay.peer_id());
                (s.peer, relay)
            })
            .collect();
        // Direct (None) sorts first and survives the dedup.
        paths.sort();
        paths.dedup_by_key(|(peer, _)| *peer);
        paths
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

    /// Stops the messenger (everything acknowledged is already stored),
    /// and its node if [`Messenger::start`] made it.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}
