//! A long-running Shoal node: TCP, with ping, identify, discovery, the
//! Kademlia DHT and gossip. It prints its address and peer id, then the
//! peers it meets, discovers and pings, its DHT routing table as it joins,
//! and the messages of its gossip topic, one line per event. Every line
//! typed on standard input is published on the topic.
//!
//! ```sh
//! # first node
//! cargo run -p shoal-examples --bin node -- --listen /ip4/127.0.0.1/tcp/4001
//! # second node, connecting to the first (use the address it printed)
//! cargo run -p shoal-examples --bin node -- --connect /ip4/127.0.0.1/tcp/4001/p2p/<peer id>
//! ```
//!
//! Identify and discovery feed the addresses they learn into the DHT's
//! routing table; the first peer identified is the DHT's bootstrap peer.
//!
//! A line longer than a gossip message may be is refused with its length
//! and the limit; the lines after it go out as usual.
//!
//! An error that stops the node is one line, `error: …`, with exit status 1
//! (`RUST_LOG=debug` shows the details).

mod input;
mod key;

use std::{collections::VecDeque, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use shoal::{
    CloseReason, ProtocolId, ServiceBuilder, ServiceContext, ServiceError, ServiceEvent,
    ServiceHandle,
};
use shoal_identify::LocalRecord;
use shoal_identity::Keypair;
use shoal_transport::{Multiaddr, TcpTransport};

use input::Input;

const PING: ProtocolId = ProtocolId(1);
const IDENTIFY: ProtocolId = ProtocolId(2);
const DISCOVERY: ProtocolId = ProtocolId(3);
const KAD: ProtocolId = ProtocolId(4);
const GOSSIP: ProtocolId = ProtocolId(5);

/// Lines waiting for a peer on the topic; while this many wait, standard
/// input is not read further.
const MAX_WAITING_LINES: usize = 64;

#[derive(Parser, Debug)]
#[command(about = "A Shoal node: ping, identify, discovery, DHT and gossip over TCP")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Multiaddr,
    /// A peer to connect to, as `/ip4/…/tcp/…/p2p/<peer id>` (repeatable);
    /// also used to bootstrap discovery.
    #[arg(long)]
    connect: Vec<Multiaddr>,
    /// File holding the node's secret key (64 hex digits); created with a
    /// new key (readable by the owner only) if missing. Without it the
    /// node gets a new identity on every start.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Exit after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds between pings.
    #[arg(long, default_value_t = 15.0)]
    ping_interval: f64,
    /// Outbound connections discovery keeps.
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
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Prints session events.
struct Printer;

impl ServiceHandle for Printer {
    fn handle_event(&mut self, _: &mut ServiceContext<'_>, event: ServiceEvent) {
        match event {
            ServiceEvent::SessionOpened { session, .. } => println!(
                "connected: {} via {} ({:?})",
                session.peer, session.remote_addr, session.direction
            ),
            ServiceEvent::SessionClosed { session, reason } => {
                let reason = match reason {
                    CloseReason::Remote => "closed by the peer".to_owned(),
                    other => other.to_string(),
                };
                println!("disconnected: {} ({reason})", session.peer);
            }
            _ => {}
        }
    }

    fn handle_error(&mut self, _: &mut ServiceContext<'_>, error: ServiceError) {
        if let ServiceError::DialFailed { addr, error, .. } = &error {
            println!("dial failed: {addr}: {error}");
        } else {
            tracing::debug!(%error, "service error");
        }
    }
}

fn list(addrs: &[Multiaddr]) -> String {
    let texts: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    format!("[{}]", texts.join(", "))
}

/// "1 line", "2 lines".
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Longest line published: the gossip core refuses payloads over its
/// `max_payload_size`, itself at most a frame less room for the envelope.
fn line_limit(config: &shoal_gossip::Config) -> usize {
    config
        .max_payload_size
        .clamp(1, shoal_gossip::MAX_FRAME_SIZE - 1024)
}

fn too_long(len: usize, limit: usize) -> String {
    format!("line too long: {len} bytes (limit {limit}); not published")
}

/// Publishes the first waiting line, if a peer is on the topic; a line
/// that cannot be published is dropped so that it blocks no other.
fn publish_waiting(
    pubsub: &shoal_gossip::Handle,
    topic: &shoal_gossip::Topic,
    to_say: &mut VecDeque<Vec<u8>>,
    told_waiting: &mut bool,
) {
    use shoal_gossip::{HandleError::Publish, PublishError};
    let Some(text) = to_say.front() else {
        return;
    };
    match pubsub.publish(topic.clone(), text.clone()) {
        Ok(_) => {
            println!("published: {}", String::from_utf8_lossy(text));
            *told_waiting = false;
        }
        // Publishing needs a peer on the topic (and room in its budget);
        // until then the line waits.
        Err(Publish(PublishError::NoPeers)) => {
            if !*told_waiting {
                *told_waiting = true;
                println!(
                    "no peer on {} yet; {} waiting to be published",
                    topic.as_str(),
                    count(to_say.len(), "line")
                );
            }
            return;
        }
        Err(Publish(PublishError::Throttled)) => return,
        Err(e) => println!("not published: {e}"),
    }
    to_say.pop_front();
}

fn seconds(flag: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{flag} {secs}: {e}"))
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

async fn run(args: Args) -> Result<(), Error> {
    let ping_interval = seconds("--ping-interval", args.ping_interval)?;
    let duration = args
        .duration
        .map(|d| seconds("--duration", d))
        .transpose()?;
    let key = match &args.key_file {
        Some(path) => key::load_or_create_key(path)?,
        None => Keypair::try_generate()?,
    };
    let topic = shoal_gossip::Topic::new(&args.topic)
        .map_err(|e| format!("--topic {}: {e}", args.topic))?;
    let local = LocalRecord::new(key.clone());

    let (ping, _, mut pings) = shoal_ping::new(
        PING,
        shoal_ping::Config {
            interval: ping_interval,
            ..shoal_ping::Config::default()
        },
    );
    let protocols = [
        shoal_ping::PROTOCOL_NAME,
        shoal_identify::PROTOCOL_NAME,
        shoal_discovery::PROTOCOL_NAME,
        shoal_kad::PROTOCOL_NAME,
        shoal_gossip::PROTOCOL_NAME,
    ];
    let (identify, _, mut identified) = shoal_identify::new(
        IDENTIFY,
        local.clone(),
        shoal_identify::Config {
            protocols: protocols.iter().map(|p| p.to_string()).collect(),
            ..shoal_identify::Config::default()
        },
    );
    let (discovery, _, mut discovered) = shoal_discovery::new(
        DISCOVERY,
        local,
        shoal_discovery::Config {
            bootstrap: args.connect.clone(),
            target_connections: args.target,
            ..shoal_discovery::Config::default()
        },
    );
    let (kad, dht, mut dht_events) =
        shoal_kad::new(KAD, key.peer_id(), shoal_kad::Config::default());
    let gossip_config = shoal_gossip::Config::default();
    let limit = line_limit(&gossip_config);
    let (gossip, pubsub, mut messages) = shoal_gossip::new(GOSSIP, gossip_config, key.clone());
    pubsub.subscribe(topic.clone())?;
    let service = ServiceBuilder::new(key)
        .transport(TcpTransport::default())
        .protocol(ping)
        .protocol(identify)
        .protocol(discovery)
        .protocol(kad)
        .protocol(gossip)
        .handle(Printer)
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
    let id = control.local_peer_id();
    println!("peer id: {id}");
    println!("listening on: {}", addr.with_peer_id(id));
    let service = tokio::spawn(service);

    let stop = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                if let Err(e) = tokio::signal::ctrl_c().await {
                    tracing::warn!(%e, "no Ctrl-C handler");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    tokio::pin!(stop);
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel(16);
    input::spawn_stdin(limit, lines_tx);
    let mut input_open = true;
    let mut to_say = std::collections::VecDeque::new();
    for text in &args.say {
        if text.len() > limit {
            println!("--say: {}", too_long(text.len(), limit));
        } else {
            to_say.push_back(text.clone().into_bytes());
        }
    }
    let mut told_waiting = false;
    let mut say_tick = tokio::time::interval(Duration::from_millis(250));
    let mut joined_dht = false;
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(event) = pings.recv() => match event {
                shoal_ping::Event::Pong { peer, rtt, .. } => {
                    println!("ping: {peer} rtt={:.3} ms", rtt.as_secs_f64() * 1e3);
                }
                shoal_ping::Event::Timeout { peer, .. } => println!("ping timeout: {peer}"),
                _ => {}
            },
            Some(event) = identified.recv() => match event {
                shoal_identify::Event::Identified { peer, info, .. } => {
                    println!(
                        "identified: {peer} agent={} addrs={} observed_us_at={}",
                        info.agent_version,
                        list(&info.listen_addrs),
                        info.observed_addr.as_ref().map_or("?".into(), |a| a.to_string()),
                    );
                    dht.add_address(peer, info.listen_addrs.clone());
                    if !joined_dht {
                        joined_dht = true;
                        let dht = dht.clone();
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
            },
            Some(event) = discovered.recv() => match event {
                shoal_discovery::Event::Discovered { peer, addrs } => {
                    println!("discovered: {peer} at {}", list(&addrs));
                    dht.add_address(peer, addrs);
                }
                shoal_discovery::Event::Removed { peer, reason } => {
                    println!("removed: {peer} ({reason:?})");
                }
                _ => {}
            },
            Some(event) = dht_events.recv() => {
                if let shoal_kad::Event::RoutingUpdated { peer, bucket } = event {
                    println!("dht: {peer} in bucket {bucket}");
                }
            }
            Some(event) = messages.recv() => {
                if let shoal_gossip::Event::Message { author, topic, payload, .. } = event {
                    println!(
                        "gossip: {author} on {}: {}",
                        topic.as_str(),
                        String::from_utf8_lossy(&payload)
                    );
                }
            }
            input = lines.recv(), if input_open && to_say.len() < MAX_WAITING_LINES => {
                match input {
                    Some(Input::Line(line)) => to_say.push_back(line),
                    Some(Input::TooLong(len)) => println!("{}", too_long(len, limit)),
                    None => input_open = false,
                }
            }
            _ = say_tick.tick(), if !to_say.is_empty() => {
                publish_waiting(&pubsub, &topic, &mut to_say, &mut told_waiting);
            }
        }
    }
    control.shutdown().await;
    service
        .await
        .map_err(|e| format!("the service task failed: {e}"))?;
    Ok(())
}
