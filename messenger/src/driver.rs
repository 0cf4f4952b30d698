//! The messenger's one task: it moves commands into the engine, the
//! engine's events to the application (waiting while the application is
//! behind), and runs what needs the network and time: directory lookups
//! and dials the engine asked for, joining the DHT, and publishing this
//! user's presence and prekey records. Policy lives in the engine
//! (retries, the route rate limit) and in [`crate::im_core`]; the service
//! layer dials and queues.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shoal::address_book::AddressSource;
use shoal::{CoreHandle, DialOptions, ProtocolId, ServiceControl};
use shoal_im::{Store, UserId};
use shoal_kad::SignedRecord;
use shoal_transport::Multiaddr;
use tokio::sync::mpsc;

use crate::directory::{self, DirectoryEntry};
use crate::im_core::{ImCore, Output, OutputQueue};
use crate::join;
use crate::messenger::{Command, unix_ms};
use crate::{Event, MessengerConfig, MessengerError};

/// How long one directory lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

type Lookup = (UserId, Result<Option<DirectoryEntry>, String>);

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
                        let policy = self.config.address_scope;
                        let addrs: Vec<Multiaddr> = info
                            .listen_addrs
                            .iter()
                            .filter(|a| policy.allows(a, source.as_ref()))
                            .cloned()
                            .collect();
                        self.dht.add_address(peer, addrs.clone());
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
                _ = republish.tick() => {
                    self.rotate_prekey();
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
        join::records(&self.core, &control.announce_addrs(), seq, ttl)
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
