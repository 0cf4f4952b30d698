//! The node's main loop: it prints what the protocols report, publishes
//! the lines typed, keeps the node connected and remembers its peers.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use shoal::{DialError, DialOptions, Direction, ServiceControl};
use shoal_identity::PeerId;
use shoal_transport::Multiaddr;
use tokio::sync::{Notify, mpsc};

use crate::common::input::Input;
use crate::common::peers::PeerBook;
use crate::dialer::{BACKOFF_CAP, BACKOFF_START, Dial, Dialer};
use crate::printer::list;
use crate::{count, too_long, unix_now};

/// Lines waiting for a peer on the topic; while this many wait, standard
/// input is not read further.
const MAX_WAITING_LINES: usize = 64;
/// How often the remembered peers are written (and at exit).
const SAVE_INTERVAL: Duration = Duration::from_secs(30);
/// How often the node looks at its sessions and starts due dials.
const UPKEEP_INTERVAL: Duration = Duration::from_millis(500);

/// What the main loop reads.
pub(crate) struct Streams {
    pub(crate) pings: mpsc::Receiver<shoal_ping::Event>,
    pub(crate) identified: mpsc::Receiver<shoal_identify::Event>,
    pub(crate) discovered: mpsc::Receiver<shoal_discovery::Event>,
    pub(crate) dht_events: mpsc::Receiver<shoal_kad::Event>,
    pub(crate) messages: mpsc::Receiver<shoal_gossip::Event>,
    pub(crate) lines: mpsc::Receiver<Input>,
    pub(crate) dials: mpsc::Receiver<(Dial, Result<PeerId, DialError>)>,
}

/// The main loop's state.
pub(crate) struct Node {
    pub(crate) control: ServiceControl,
    pub(crate) dht: shoal_kad::Handle,
    /// The mailboxes this node keeps for messengers.
    pub(crate) mailboxes: shoal_messenger::service_node::MailboxNode,
    /// Envelopes and tombstones taken from other replicas, as last printed.
    pub(crate) handoffs_told: (u64, u64),
    pub(crate) pubsub: shoal_gossip::Handle,
    pub(crate) topic: shoal_gossip::Topic,
    pub(crate) own_addr: Multiaddr,
    /// Peers wanted: remembered peers are dialled while fewer are connected.
    pub(crate) target: usize,
    /// Longest line published.
    pub(crate) limit: usize,
    pub(crate) dialer: Dialer,
    pub(crate) book: Option<PeerBook>,
    pub(crate) dials_tx: mpsc::Sender<(Dial, Result<PeerId, DialError>)>,
    /// Whether a peer was connected at the last look.
    pub(crate) had_peers: bool,
    pub(crate) joined_dht: bool,
    /// Lines to publish once a peer is on the topic (at most
    /// [`MAX_WAITING_LINES`]).
    pub(crate) to_say: VecDeque<Vec<u8>>,
    /// Whether the user was told that lines wait for a peer.
    pub(crate) told_waiting: bool,
}

impl Node {
    /// Says what the node will do to find peers.
    pub(crate) fn greet(&self) {
        if let Some(book) = &self.book {
            println!("data dir: remembered peers in {}", book.path().display());
        }
        match self.dialer.counts() {
            (0, 0) => println!(
                "no peers connected yet; other nodes can join with --connect {}",
                self.own_addr
            ),
            (b, r) => println!(
                "dialling {} and {}",
                count(b, "bootstrap address"),
                count(r, "remembered peer")
            ),
        }
    }

    pub(crate) async fn run(
        &mut self,
        mut s: Streams,
        stop: impl Future<Output = ()>,
        changed: &Notify,
    ) {
        tokio::pin!(stop);
        let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
        let mut say_tick = tokio::time::interval(Duration::from_millis(250));
        let mut save_tick = tokio::time::interval(SAVE_INTERVAL);
        save_tick.reset();
        let mut input_open = true;
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = upkeep.tick() => self.upkeep(),
                () = changed.notified() => self.upkeep(),
                Some((dial, result)) = s.dials.recv() => {
                    let result = result.as_ref().map(|peer| *peer);
                    if let Some(line) = self.dialer.handle_result(&dial, result, Instant::now()) {
                        println!("{line}");
                    }
                }
                _ = save_tick.tick() => self.save(false),
                Some(event) = s.pings.recv() => match event {
                    shoal_ping::Event::Pong { peer, rtt, .. } => {
                        println!("ping: {peer} rtt={:.3} ms", rtt.as_secs_f64() * 1e3);
                    }
                    shoal_ping::Event::Timeout { peer, .. } => println!("ping timeout: {peer}"),
                    _ => {}
                },
                Some(event) = s.identified.recv() => self.identify_event(event),
                Some(event) = s.discovered.recv() => match event {
                    shoal_discovery::Event::Discovered { peer, addrs } => {
                        println!("discovered: {peer} at {}", list(&addrs));
                        self.dht.add_address(peer, addrs);
                    }
                    shoal_discovery::Event::Removed { peer, reason } => {
                        println!("removed: {peer} ({reason:?})");
                    }
                    _ => {}
                },
                Some(event) = s.dht_events.recv() => {
                    if let shoal_kad::Event::RoutingUpdated { peer, bucket } = event {
                        println!("dht: {peer} in bucket {bucket}");
                    }
                }
                Some(event) = s.messages.recv() => {
                    if let shoal_gossip::Event::Message { author, topic, payload, .. } = event {
                        println!(
                            "gossip: {author} on {}: {}",
                            topic.as_str(),
                            String::from_utf8_lossy(&payload)
                        );
                    }
                }
                input = s.lines.recv(), if input_open && self.to_say.len() < MAX_WAITING_LINES => {
                    match input {
                        Some(Input::Line(line)) => self.to_say.push_back(line),
                        Some(Input::TooLong(len)) => println!("{}", too_long(len, self.limit)),
                        Some(Input::NotText) => println!("that line is not UTF-8 text; not sent"),
                        None => input_open = false,
                    }
                }
                _ = say_tick.tick(), if !self.to_say.is_empty() => self.publish_waiting(),
            }
        }
    }

    fn identify_event(&mut self, event: shoal_identify::Event) {
        match event {
            shoal_identify::Event::Identified { peer, info, .. } => {
                println!(
                    "identified: {peer} agent={} addrs={} observed_us_at={}",
                    info.agent_version,
                    list(&info.listen_addrs),
                    info.observed_addr
                        .as_ref()
                        .map_or("?".into(), |a| a.to_string()),
                );
                self.dht.add_address(peer, info.listen_addrs.clone());
                self.mailboxes
                    .identified(peer, &info.listen_addrs, &info.protocols);
                if let Some(book) = &mut self.book {
                    book.seen(peer, &info.listen_addrs, unix_now());
                }
                if !self.joined_dht {
                    self.joined_dht = true;
                    let dht = self.dht.clone();
                    let seeds = vec![(peer, info.listen_addrs.clone())];
                    tokio::spawn(async move {
                        if dht.bootstrap(seeds).await.is_ok() {
                            println!("dht: joined, {} contacts", dht.routing_table_len());
                        }
                    });
                }
            }
            shoal_identify::Event::Rejected { peer, error, .. } => {
                println!("identify rejected: {peer}: {error}");
            }
            _ => {}
        }
    }

    /// Says what the mailboxes took from the other nodes that keep them,
    /// when it changed.
    fn tell_handoffs(&mut self) {
        let Some(stats) = self.mailboxes.mailbox.replica_stats() else {
            return;
        };
        let now = (stats.handed_in, stats.tombstones_in);
        if now != self.handoffs_told {
            self.handoffs_told = now;
            println!(
                "mailboxes: took {} envelopes and {} tombstones from other nodes",
                now.0, now.1
            );
        }
    }

    /// Looks at the sessions: remembers the peers, says when the last one
    /// went, starts the dials that are due.
    fn upkeep(&mut self) {
        self.tell_handoffs();
        let sessions = self.control.sessions();
        let connected: HashSet<PeerId> = sessions.iter().map(|s| s.peer).collect();
        if let Some(book) = &mut self.book {
            let now = unix_now();
            for session in &sessions {
                // An outbound session's address is one we reached it at;
                // an inbound one's is a port the peer does not listen on.
                let addrs = match session.direction {
                    Direction::Outbound => std::slice::from_ref(&session.remote_addr),
                    _ => &[],
                };
                book.seen(session.peer, addrs, now);
            }
        }
        if connected.is_empty() && self.had_peers {
            println!("{}", self.alone());
        }
        self.had_peers = !connected.is_empty();
        let want_more = connected.len() < self.target;
        for dial in self
            .dialer
            .poll_dials(Instant::now(), &connected, want_more)
        {
            let control = self.control.clone();
            let tx = self.dials_tx.clone();
            tokio::spawn(async move {
                let result = control
                    .dial(dial.addr.clone(), DialOptions::default())
                    .await
                    .map(|session| session.peer);
                let _ = tx.send((dial, result)).await;
            });
        }
    }

    /// The line printed when the last peer went.
    fn alone(&self) -> String {
        match self.dialer.counts() {
            (0, 0) => format!(
                "no peers connected; nothing to retry: start again with --connect <address of a \
                 running node>, or give a running node --connect {}",
                self.own_addr
            ),
            (b, r) => format!(
                "no peers connected; retrying {} and {} (every {} s at first, then up to every {} s)",
                count(b, "bootstrap address"),
                count(r, "remembered peer"),
                BACKOFF_START.as_secs(),
                BACKOFF_CAP.as_secs()
            ),
        }
    }

    /// Publishes the first waiting line, if a peer is on the topic; a line
    /// that cannot be published is dropped so that it blocks no other.
    fn publish_waiting(&mut self) {
        let Some(text) = self.to_say.front() else {
            return;
        };
        use shoal_gossip::{HandleError::Publish, PublishError};
        match self.pubsub.publish(self.topic.clone(), text.clone()) {
            Ok(_) => {
                println!("published: {}", String::from_utf8_lossy(text));
                self.told_waiting = false;
            }
            // Publishing needs a peer on the topic (and room in its
            // budget); until then the line waits.
            Err(Publish(PublishError::NoPeers)) => {
                if !self.told_waiting {
                    self.told_waiting = true;
                    println!(
                        "no peer on {} yet; {} waiting to be published",
                        self.topic.as_str(),
                        count(self.to_say.len(), "line")
                    );
                }
                return;
            }
            Err(Publish(PublishError::Throttled)) => return,
            Err(e) => println!("not published: {e}"),
        }
        self.to_say.pop_front();
    }

    /// Writes the remembered peers if they changed (always with `force`).
    pub(crate) fn save(&mut self, force: bool) {
        let Some(book) = &mut self.book else {
            return;
        };
        match book.save(unix_now(), force) {
            Ok(Some(n)) if force => println!(
                "saved {} to {}",
                count(n, "remembered peer"),
                book.path().display()
            ),
            Ok(_) => {}
            Err(e) => println!("peers not saved: {e}"),
        }
    }
}
