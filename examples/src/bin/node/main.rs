//! A long-running Shoal node: TCP, with ping, identify, discovery, the
//! Kademlia DHT, gossip, and mailboxes kept for messengers (in
//! `<data dir>/mailboxes.db`, within `--mailbox-budget-mib`). It prints its address and peer id, then the
//! peers it meets, discovers and pings, its DHT routing table as it joins,
//! and the messages of its gossip topic, one line per event. Every line
//! typed on standard input is published on the topic.
//!
//! ```sh
//! # first node
//! cargo run -p shoal-examples --bin node -- --listen /ip4/127.0.0.1/tcp/4001 --data-dir a
//! # second node, connecting to the first (use the address it printed)
//! cargo run -p shoal-examples --bin node -- --connect /ip4/127.0.0.1/tcp/4001/p2p/<peer id>
//! ```
//!
//! Identify and discovery feed the addresses they learn into the DHT's
//! routing table; the first peer identified is the DHT's bootstrap peer.
//!
//! The node is never silently alone: it dials its `--connect` addresses
//! and the peers remembered in `--data-dir` itself ([`dialer`]), retrying
//! each with a backoff from 1 s doubling to 60 s, prints why a dial failed,
//! and prints `no peers connected` whenever its last peer goes.
//!
//! A line longer than a gossip message may be is refused with its length
//! and the limit; the lines after it go out as usual.
//!
//! An error that stops the node is one line, `error: …`, with exit status 1
//! (`RUST_LOG=debug` shows the details).

#[path = "../common/mod.rs"]
mod common;
mod dialer;
mod event_loop;
mod key;
mod printer;
mod wake_hook;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use shoal::{ProtocolId, ServiceBuilder};
use shoal_identify::LocalRecord;
use shoal_identity::Keypair;
use shoal_transport::{Multiaddr, TcpTransport};
use tokio::sync::{Notify, mpsc};

use common::{input, peers::PeerBook};
use dialer::Dialer;
use event_loop::{Node, Streams};
use printer::Printer;
use shoal_messenger::service_node::MailboxNode;

const PING: ProtocolId = ProtocolId(1);
const IDENTIFY: ProtocolId = ProtocolId(2);
const DISCOVERY: ProtocolId = ProtocolId(3);
const KAD: ProtocolId = ProtocolId(4);
const GOSSIP: ProtocolId = ProtocolId(5);

#[derive(Parser, Debug)]
#[command(about = "A Shoal node: ping, identify, discovery, DHT and gossip over TCP")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Multiaddr,
    /// A peer to connect to, as `/ip4/…/tcp/…/p2p/<peer id>` (repeatable);
    /// dialled again, with a backoff from 1 s to 60 s, whenever it is not
    /// connected.
    #[arg(long)]
    connect: Vec<Multiaddr>,
    /// An address others can reach this node at besides the listen
    /// address, e.g. a port forwarded by a router (repeatable). With
    /// `--listen /ip4/0.0.0.0/…` the interface addresses are announced
    /// anyway.
    #[arg(long)]
    external_address: Vec<Multiaddr>,
    /// Directory (created owner-only if missing) holding the key
    /// (`node.key`, unless --key-file is given) and the peers met
    /// (`peers`), which are dialled again on the next start.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// File holding the node's secret key (64 hex digits); created with a
    /// new key (readable by the owner only) if missing. Without it (and
    /// without --data-dir) the node gets a new identity on every start.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Exit after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds between pings.
    #[arg(long, default_value_t = 15.0)]
    ping_interval: f64,
    /// Outbound connections discovery keeps; remembered peers are dialled
    /// while fewer peers than this are connected.
    #[arg(long, default_value_t = shoal_discovery::DEFAULT_TARGET_CONNECTIONS)]
    target: usize,
    /// Gossip topic to join; lines typed on standard input are published
    /// on it.
    #[arg(long, default_value = "shoal/lobby")]
    topic: String,
    /// A message to publish on the topic as soon as a peer has joined it
    /// (repeatable).
    #[arg(long)]
    say: Vec<String>,
    /// Disk space the mailboxes kept for messengers may take, in MiB
    /// (`<data dir>/mailboxes.db`; in memory without --data-dir). A full
    /// budget answers "busy": senders wait, nothing stored is evicted.
    #[arg(long, default_value_t = 1024)]
    mailbox_budget_mib: u64,
    /// How often the mailboxes are synced with the other nodes that keep
    /// them (hand-off to newcomers, acks missed while away), in seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    mailbox_sync_secs: u64,
    /// Be a wake-up endpoint: print the address and token devices register
    /// (`chat --wake-endpoint … --wake-token …`), and run this command
    /// (with `sh -c`) when a node keeping their mailboxes wakes this one:
    /// messages wait. `SHOAL_WAKE_TOKEN` and `SHOAL_WAKE_FROM` hold the
    /// token and the waking node's peer id.
    #[arg(long)]
    on_wake: Option<String>,
    /// Serve as a relay: peers behind NATs hold reservations here and are
    /// reached through this node (`chat --relay <this node's address>`),
    /// within the limits of `shoal_relay::Limits` (chat-sized circuits).
    /// Only a node others can dial should.
    #[arg(long)]
    serve_relay: bool,
    /// An IP range to treat as the internet when checking which of this
    /// node's addresses others can dial, e.g. `198.18.0.0/15` for a test
    /// network (repeatable; by default only global addresses count). Peers
    /// reached over such a range may then point this node only at
    /// addresses in it or global ones, not at private networks.
    #[arg(long)]
    global_range: Vec<shoal_transport::IpRange>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn seconds(flag: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{flag} {secs}: {e}"))
}

/// "1 peer", "2 peers", "2 addresses".
fn count(n: usize, what: &str) -> String {
    let plural = match (n, what.ends_with('s')) {
        (1, _) => "",
        (_, true) => "es",
        (_, false) => "s",
    };
    format!("{n} {what}{plural}")
}

/// Longest line published: the gossip core refuses payloads over its
/// `max_payload_size`, itself at most a frame less room for the envelope.
fn line_limit(config: &shoal_gossip::Config) -> usize {
    config
        .max_payload_size
        .clamp(1, shoal_gossip::MAX_FRAME_SIZE - 1024)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::debug!(error = ?e, "node stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves at the end of `--duration`, on Ctrl-C or on SIGTERM.
async fn stop_requested(duration: Option<Duration>) {
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(%e, "no Ctrl-C handler");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = timer => {}
        () = ctrl_c => {}
        () = term => {}
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let ping_interval = seconds("--ping-interval", args.ping_interval)?;
    let duration = args
        .duration
        .map(|d| seconds("--duration", d))
        .transpose()?;
    if let Some(dir) = &args.data_dir {
        common::create_data_dir(dir)?;
    }
    let key_path = match (&args.key_file, &args.data_dir) {
        (Some(file), _) => Some(file.clone()),
        (None, Some(dir)) => Some(dir.join("node.key")),
        (None, None) => None,
    };
    let key = match &key_path {
        Some(path) => key::load_or_create_key(path)?,
        None => Keypair::try_generate()?,
    };
    let topic = shoal_gossip::Topic::new(&args.topic)
        .map_err(|e| format!("--topic {}: {e}", args.topic))?;
    let book = match &args.data_dir {
        Some(dir) => {
            let (book, skipped) = PeerBook::load(&dir.join("peers"), key.peer_id(), unix_now())?;
            if skipped > 0 {
                println!(
                    "{}: skipped {}",
                    book.path().display(),
                    count(skipped, "malformed line")
                );
            }
            Some(book)
        }
        None => None,
    };
    let remembered = book.as_ref().map(PeerBook::peers).unwrap_or_default();
    let (dialer, notes) = Dialer::new(key.peer_id(), &args.connect, remembered, Instant::now());
    for note in notes {
        println!("{note}");
    }
    let local = LocalRecord::new(key.clone());

    let (ping, _, pings) = shoal_ping::new(
        PING,
        shoal_ping::Config {
            interval: ping_interval,
            ..shoal_ping::Config::default()
        },
    );
    // Addresses others tell us about are dialled only if no narrower than
    // the session they came over; `--global-range` widens "the internet".
    let scope = shoal_transport::ScopePolicy::default().with_global_ranges(&args.global_range);
    let (mailboxes, mailbox_protocols) = mailbox_node(&key, &args, scope.clone())?;
    let protocols = [
        shoal_ping::PROTOCOL_NAME,
        shoal_identify::PROTOCOL_NAME,
        shoal_discovery::PROTOCOL_NAME,
        shoal_kad::PROTOCOL_NAME,
        shoal_gossip::PROTOCOL_NAME,
    ]
    .into_iter()
    .chain(shoal_messenger::service_node::PROTOCOL_NAMES);
    let (identify, _, identified) = shoal_identify::new(
        IDENTIFY,
        local.clone(),
        shoal_identify::Config {
            protocols: protocols.map(str::to_owned).collect(),
            address_scope: scope.clone(),
            ..shoal_identify::Config::default()
        },
    );
    // The node dials its bootstrap addresses itself (see `dialer`), so
    // discovery gets none: it learns peers from every session instead.
    let (discovery, _, discovered) = shoal_discovery::new(
        DISCOVERY,
        local,
        shoal_discovery::Config {
            target_connections: args.target,
            address_scope: scope.clone(),
            ..shoal_discovery::Config::default()
        },
    );
    let (kad, dht, dht_events) = shoal_kad::new(
        KAD,
        key.peer_id(),
        shoal_kad::Config {
            address_scope: scope,
            ..shoal_kad::Config::default()
        },
    );
    let gossip_config = shoal_gossip::Config::default();
    let limit = line_limit(&gossip_config);
    let (gossip, pubsub, messages) = shoal_gossip::new(GOSSIP, gossip_config, key.clone());
    pubsub.subscribe(topic.clone())?;
    let sessions_changed = Arc::new(Notify::new());
    let endpoint_key = key.clone();
    let mut relay = shoal_relay::Relay::new(
        shoal_messenger::RELAY_HOP,
        shoal_messenger::RELAY_STOP,
        shoal_relay::Config {
            serve: args.serve_relay.then(shoal_relay::Limits::default),
            ..shoal_relay::Config::default()
        },
    );
    // Checks which of its addresses others can dial, and dials others back
    // when they ask (from a prober of its own, see shoal_reach::Prober).
    let mut reach = shoal_reach::Reach::new(
        shoal_messenger::REACH,
        shoal_messenger::REACH_BACK,
        shoal_reach::Config {
            global_ranges: args.global_range.clone(),
            ..shoal_reach::Config::default()
        },
    );
    let mut builder = reach
        .install(relay.install(ServiceBuilder::new(key)))
        .transport(TcpTransport::default())
        .protocol(ping)
        .protocol(identify)
        .protocol(discovery)
        .protocol(kad)
        .protocol(gossip);
    for protocol in mailbox_protocols {
        builder = builder.protocol(protocol);
    }
    let service = builder
        .handle(Printer {
            quiet: dialer.addresses(),
            sessions_changed: sessions_changed.clone(),
        })
        .build()?;
    let control = service.control();
    // Listen before the service starts, so the first record has the address.
    let addr = control
        .listen(args.listen.clone())
        .await
        .map_err(|e| match e {
            shoal::ListenError::Transport(e) => format!("--listen: {e}"),
            e => format!("--listen {}: {e}", args.listen),
        })?;
    for external in &args.external_address {
        control
            .add_external_address(external.clone())
            .map_err(|e| format!("--external-address: {e}"))?;
    }
    let id = control.local_peer_id();
    // The address to give others: the first announced one (an interface
    // address when listening on 0.0.0.0), else the bound one.
    let own_addr = control
        .announce_addrs()
        .into_iter()
        .next()
        .unwrap_or(addr)
        .with_peer_id(id);
    println!("peer id: {id}");
    // What others can dial: never 0.0.0.0 (see announce_addrs).
    for announced in control.announce_addrs() {
        println!("listening on: {}", announced.with_peer_id(id));
    }
    let service = tokio::spawn(service);
    let relay = relay.start(control.clone()).await;
    let prober = shoal_reach::Prober::start(TcpTransport::default(), PROBE_TIMEOUT)?;
    let reach = reach.start(control.clone(), Some(prober));
    tokio::spawn(follow_reachability(
        reach,
        vec![dht.clone(), mailboxes.dht.clone()],
    ));
    if let Some(server) = relay.server() {
        let limits = shoal_relay::Limits::default();
        println!(
            "relay: serving up to {} reservations, {} circuits ({} reserved now)",
            limits.max_reservations,
            limits.max_circuits,
            server.stats().reservations
        );
    }

    let mut to_say = VecDeque::new();
    for text in &args.say {
        if text.len() > limit {
            println!("--say: {}", too_long(text.len(), limit));
        } else {
            to_say.push_back(text.clone().into_bytes());
        }
    }
    let (lines_tx, lines) = mpsc::channel(16);
    input::spawn_stdin(limit, lines_tx);
    let (dials_tx, dials) = mpsc::channel(dialer::MAX_DIALS_IN_FLIGHT);
    if let Some(command) = args.on_wake.clone() {
        wake_hook::install(&mailboxes, &endpoint_key, &own_addr, command);
    }
    drop(endpoint_key);
    // The replica syncs its mailboxes with the other replicas.
    tokio::spawn(mailboxes.clone().maintain());
    let mut node = Node {
        control: control.clone(),
        dht,
        mailboxes,
        handoffs_told: (0, 0),
        pubsub,
        topic,
        own_addr,
        target: args.target,
        limit,
        dialer,
        book,
        dials_tx,
        had_peers: false,
        joined_dht: false,
        to_say,
        told_waiting: false,
    };
    node.greet();
    let streams = Streams {
        pings,
        identified,
        discovered,
        dht_events,
        messages,
        lines,
        dials,
    };
    node.run(streams, stop_requested(duration), &sessions_changed)
        .await;
    node.save(true);
    control.shutdown().await;
    service
        .await
        .map_err(|e| format!("the service task failed: {e}"))?;
    Ok(())
}

/// The mailboxes this node keeps: in `<data dir>/mailboxes.db` (they
/// survive a restart), else in memory; its DHT dials what `scope` allows.
fn mailbox_node(
    key: &Keypair,
    args: &Args,
    scope: shoal_transport::ScopePolicy,
) -> Result<(MailboxNode, Vec<shoal::ProtocolMeta>), Error> {
    let config = shoal_mailbox::ReplicaConfig {
        disk_budget: args.mailbox_budget_mib.saturating_mul(1 << 20),
        ..shoal_mailbox::ReplicaConfig::default()
    };
    let (store, place): (Box<dyn shoal_mailbox::ReplicaStore>, String) = match &args.data_dir {
        Some(dir) => {
            let path = dir.join("mailboxes.db");
            let store =
                shoal_mailbox::SqliteStore::open(&path, shoal_mailbox::sqlite::Durability::Process)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            (Box::new(store), path.display().to_string())
        }
        None => (
            Box::new(shoal_mailbox::MemoryStore::new()),
            "memory".to_owned(),
        ),
    };
    let now_ms = unix_now().saturating_mul(1000);
    let replica = shoal_mailbox::Replica::open(key.clone(), store, config, now_ms)?;
    println!(
        "mailboxes: {} bytes held, budget {} MiB, in {place}",
        replica.total_bytes(),
        args.mailbox_budget_mib
    );
    let config = shoal_mailbox::Config {
        sync_interval: Duration::from_secs(args.mailbox_sync_secs),
        ..shoal_mailbox::Config::default()
    };
    Ok(MailboxNode::with_config(
        key.peer_id(),
        replica,
        scope,
        config,
    ))
}

/// Time a dial-back for another node may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Prints what reachability checks conclude, and makes the node a client
/// of its DHTs while none of its addresses can be dialled (so nobody keeps
/// it as a contact or picks it to keep mailboxes).
async fn follow_reachability(reach: shoal_reach::ReachHandle, dhts: Vec<shoal_kad::Handle>) {
    let mut changes = reach.changes();
    let mut said = String::new();
    while changes.changed().await.is_ok() {
        let status = changes.borrow_and_update().clone();
        let private = status.is_unreachable();
        for dht in &dhts {
            dht.set_client(private);
        }
        let line = if let Some(addr) = status.reachable.first() {
            format!("reachability: public at {addr}")
        } else if private {
            "reachability: private (no address others can dial); a DHT client now".to_owned()
        } else {
            continue;
        };
        if line != said {
            println!("{line}");
            said = line;
        }
    }
}

fn too_long(len: usize, limit: usize) -> String {
    format!("line too long: {len} bytes (limit {limit}); not published")
}
