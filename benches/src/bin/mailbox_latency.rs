//! Send -> stored (W of R) on loopback: how long a sender waits for the
//! third verified receipt of five replicas it already knows, beside a raw
//! TCP round trip and a single replica's store measured in the same run.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin mailbox_latency -- --help
//! ```
//!
//! Five replica nodes listen on 127.0.1.1 … 127.0.5.1 (five /24s, so every
//! receipt counts), each on a `SqliteStore` file with
//! `synchronous=NORMAL`; the sender is a sixth node on 127.0.10.1 that has
//! their addresses. After a warm-up, `--messages` envelopes of `--size`
//! bytes go one at a time, `--step` apart, to one owner-written mailbox:
//! each is signed, stored on all five at once, and timed until three
//! receipts verified (`Handle::store_quorum`). Interleaved with them, the
//! same envelope size goes to one replica alone (one round trip and one
//! commit), and through a plain TCP echo. Printed: median, p90, p99, max
//! of each, and the ratios of the medians.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use shoal::address_book::AddressSource;
use shoal::{ProtocolId, ServiceBuilder, ServiceControl};
use shoal_benches::latency::{Stats, stats, tcp_echo_round_trips};
use shoal_identity::Keypair;
use shoal_mailbox::sqlite::Durability;
use shoal_mailbox::{
    Answer, Class, Config, Descriptor, Handle, Replica, ReplicaConfig, ReplicaStore, Retention,
    SqliteStore, WritePolicy,
};
use shoal_transport::TcpTransport;

type BoxError = Box<dyn std::error::Error>;

const MAILBOX: ProtocolId = ProtocolId(7);

#[derive(Parser, Debug)]
#[command(about = "Mailbox send -> stored latency on loopback, with a known replica set")]
struct Args {
    /// Envelopes timed.
    #[arg(long, default_value_t = 500)]
    messages: usize,
    /// Envelope size, bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Pause between envelopes, milliseconds.
    #[arg(long, default_value_t = 5)]
    step: u64,
}

struct Node {
    control: ServiceControl,
    handle: Handle,
    addr: shoal_transport::Multiaddr,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn node(ip: &str, store: Option<SqliteStore>) -> Result<Node, BoxError> {
    let key = Keypair::generate();
    let replica = match store {
        Some(s) => {
            let s: Box<dyn ReplicaStore> = Box::new(s);
            Some(Replica::open(
                key.clone(),
                s,
                ReplicaConfig::default(),
                unix_ms(),
            )?)
        }
        None => None,
    };
    let (meta, handle, _events) = shoal_mailbox::new(MAILBOX, Config::default(), replica);
    let service = ServiceBuilder::new(key)
        .transport(TcpTransport::default())
        .protocol(meta)
        .build()?;
    let control = service.control();
    let addr = control.listen(format!("/ip4/{ip}/tcp/0").parse()?).await?;
    tokio::spawn(service);
    Ok(Node {
        control,
        handle,
        addr,
    })
}

/// Stores `envelope` on every candidate and waits for three receipts.
async fn stored(
    sender: &Handle,
    candidates: &[shoal::PeerId],
    mailbox: Descriptor,
    owner: &Keypair,
    envelope: Bytes,
    expiry: u64,
) -> shoal_mailbox::QuorumOutcome {
    sender
        .store_quorum(
            candidates,
            3,
            mailbox,
            Some(owner),
            envelope,
            expiry,
            Class::Normal,
        )
        .await
}

fn line(name: &str, s: &Stats) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}_ms median {:.3} p90 {:.3} p99 {:.3} max {:.3}",
        ms(s.median),
        ms(s.p90),
        ms(s.p99),
        ms(s.max)
    );
}

async fn run(args: Args) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let mut replicas = Vec::new();
    for i in 1..=5 {
        let store = SqliteStore::open(dir.path().join(format!("r{i}.db")), Durability::Process)?;
        replicas.push(node(&format!("127.0.{i}.1"), Some(store)).await?);
    }
    let sender = node("127.0.10.1", None).await?;
    for r in &replicas {
        sender.control.add_addresses(
            r.control.local_peer_id(),
            std::slice::from_ref(&r.addr),
            AddressSource::Application,
        );
    }
    let candidates: Vec<_> = replicas.iter().map(|r| r.control.local_peer_id()).collect();
    let owner = Keypair::generate();
    let mailbox = Descriptor {
        key: owner.public(),
        write: WritePolicy::Owner,
        retention: Retention::UntilAck,
    };
    let envelope = |n: usize| {
        let mut e = vec![0x5a; args.size];
        e[..8].copy_from_slice(&(n as u64).to_be_bytes());
        Bytes::from(e)
    };
    let expiry = unix_ms() / 1000 + 3600;
    // Warm-up: sessions open, the sender's session proves the key.
    for n in 0..20 {
        let outcome = stored(
            &sender.handle,
            &candidates,
            mailbox,
            &owner,
            envelope(n),
            expiry,
        )
        .await;
        if !outcome.is_met(3) {
            return Err(format!("warm-up store not stored: {outcome:?}").into());
        }
    }
    let (mut quorum, mut single) = (Vec::new(), Vec::new());
    for n in 0..args.messages {
        let start = Instant::now();
        let e = envelope(1_000_000 + n);
        let outcome = stored(&sender.handle, &candidates, mailbox, &owner, e, expiry).await;
        quorum.push(start.elapsed());
        if !outcome.is_met(3) {
            return Err(format!("store {n} not stored: {outcome:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(args.step)).await;
        let start = Instant::now();
        let (_, answer) = sender
            .handle
            .store(
                candidates[n % 5],
                mailbox,
                Some(&owner),
                envelope(2_000_000 + n),
                expiry,
                Class::Normal,
            )
            .await?;
        single.push(start.elapsed());
        if !matches!(answer, Answer::Stored { .. }) {
            return Err(format!("single store {n}: {answer:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(args.step)).await;
    }
    let tcp = tcp_echo_round_trips(
        args.size,
        20,
        args.messages,
        Duration::from_millis(args.step),
    )
    .await?;
    let (q, s, t) = (
        stats(quorum).ok_or("no figures")?,
        stats(single).ok_or("no figures")?,
        stats(tcp).ok_or("no figures")?,
    );
    println!("messages {} size {}", args.messages, args.size);
    line("stored_3_of_5", &q);
    line("one_replica", &s);
    line("tcp_echo", &t);
    println!(
        "ratio_quorum_to_one_replica {:.2}",
        q.median.as_secs_f64() / s.median.as_secs_f64()
    );
    println!(
        "ratio_quorum_to_tcp_echo {:.2}",
        q.median.as_secs_f64() / t.median.as_secs_f64()
    );
    for n in replicas.iter().chain([&sender]) {
        n.control.shutdown().await;
    }
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}
