//! Envelopes stored per second by one mailbox replica on a SQLite file,
//! beside plain SQLite inserts of the same rows with the same sync setting,
//! in interleaved runs.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin mailbox_store -- --help
//! ```
//!
//! A replica run feeds `--envelopes` store requests (1 KiB envelopes by
//! default, each signed by the mailbox key of one of `--mailboxes`
//! owner-written mailboxes, all from one sender) straight into a `Replica`
//! on a fresh `SqliteStore` file, `--batch` at a time as the core hands
//! them over under load: every request is rate-checked, its signature
//! verified (once per mailbox: the sender's session then proved the key),
//! its nonce checked, the envelope hashed and looked up; each batch's new
//! envelopes are inserted in one transaction, then one signature covers
//! the batch's receipts. Two baselines insert the same number of rows of
//! the same size into a table of the same shape on a fresh file with the
//! same pragmas: `--batch` rows per transaction (the replica's commits, so
//! the ratio is the protocol's overhead), and one row per transaction. A
//! last measurement is the signature work a replica would do without
//! batches or proven sessions (verify every request, sign every receipt
//! alone): the ceiling such a design would have on one core. Runs
//! alternate `--runs` times; printed are the median and minimum rate of
//! each and the ratios of the medians (replica / baseline).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use rusqlite::{Connection, params};
use shoal_identity::Keypair;
use shoal_mailbox::sqlite::Durability;
use shoal_mailbox::{
    Answer, Class, Descriptor, Incoming, Op, Replica, ReplicaConfig, Request, RequestBody,
    Retention, SqliteStore, WritePolicy,
};

#[derive(Parser, Debug)]
#[command(about = "Mailbox replica store rate against plain SQLite inserts")]
struct Args {
    /// Envelopes per run.
    #[arg(long, default_value_t = 20_000)]
    envelopes: usize,
    /// Envelope size, bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Mailboxes the envelopes go to.
    #[arg(long, default_value_t = 100)]
    mailboxes: usize,
    /// Requests answered together (the core batches what arrives in one
    /// burst, up to 64): their new envelopes share one transaction.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Interleaved runs of each.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Sync every commit to the disk (`synchronous=FULL`) instead of
    /// surviving a process crash only (`NORMAL`).
    #[arg(long)]
    power: bool,
}

const T0_MS: u64 = 1_800_000_000_000;

fn replica_key() -> Keypair {
    Keypair::from_secret_bytes(&[1; 32])
}

fn requests(args: &Args) -> Vec<Request> {
    let keys: Vec<Keypair> = (0..args.mailboxes)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
            Keypair::from_secret_bytes(&seed)
        })
        .collect();
    (0..args.envelopes)
        .map(|n| {
            let key = &keys[n % keys.len()];
            let mut envelope = vec![0xa5u8; args.size];
            envelope[..8].copy_from_slice(&(n as u64).to_be_bytes());
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&(n as u64).to_be_bytes());
            let body = RequestBody {
                descriptor: Descriptor {
                    key: key.public(),
                    write: WritePolicy::Owner,
                    retention: Retention::UntilAck,
                },
                unix_ms: T0_MS,
                nonce,
                replica: replica_key().peer_id(),
                op: Op::Store {
                    envelope: Bytes::from(envelope),
                    expiry: T0_MS / 1000 + 86_400,
                    class: Class::Normal,
                },
            };
            Request::signed(body, key)
        })
        .collect()
}

fn replica_run(dir: &Path, requests: &[Request], durability: Durability, batch: usize) -> Duration {
    let store = SqliteStore::open(dir.join("replica.db"), durability).unwrap();
    let config = ReplicaConfig {
        // One sender stores everything here: lift the per-sender limits.
        peer_rate: (u32::MAX, u32::MAX),
        group_rate: (u32::MAX, u32::MAX),
        quota_envelopes: u32::MAX,
        quota_bytes: u64::MAX,
        disk_budget: u64::MAX,
        group_share: 1,
        ..ReplicaConfig::default()
    };
    let mut replica = Replica::open(replica_key(), store, config, T0_MS).unwrap();
    let peer = Keypair::from_secret_bytes(&[2; 32]).peer_id();
    let from = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
    let start = Instant::now();
    for (n, chunk) in requests.chunks(batch.max(1)).enumerate() {
        let incoming: Vec<Incoming<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, request)| Incoming {
                peer,
                addr: &from,
                id: (n * batch + i) as u64,
                request,
            })
            .collect();
        for handled in replica.handle_batch(T0_MS, &incoming) {
            assert!(
                matches!(handled.answer, Answer::Stored { .. }),
                "{:?}",
                handled.answer
            );
        }
    }
    start.elapsed()
}

fn baseline_run(
    dir: &Path,
    requests: &[Request],
    durability: Durability,
    batch: usize,
) -> Duration {
    let conn = Connection::open(dir.join("plain.db")).unwrap();
    let sync = match durability {
        Durability::Process => "NORMAL",
        Durability::Power => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync};
         CREATE TABLE rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, mailbox BLOB NOT NULL,
             hash BLOB NOT NULL, envelope BLOB NOT NULL, expiry INTEGER NOT NULL,
             UNIQUE (mailbox, hash));"
    ))
    .unwrap();
    let rows: Vec<(Vec<u8>, Vec<u8>, Bytes)> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let Op::Store { envelope, .. } = &r.body.op else {
                unreachable!()
            };
            let mut hash = vec![0u8; 32];
            hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
            (
                r.body.descriptor.id().as_bytes().to_vec(),
                hash,
                envelope.clone(),
            )
        })
        .collect();
    let mut stmt = conn
        .prepare("INSERT INTO rows (mailbox, hash, envelope, expiry) VALUES (?1, ?2, ?3, ?4)")
        .unwrap();
    let start = Instant::now();
    for chunk in rows.chunks(batch.max(1)) {
        // One transaction per chunk, as the replica commits a batch.
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        for (mailbox, hash, envelope) in chunk {
            stmt.execute(params![mailbox, hash, &envelope[..], 1_i64])
                .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    start.elapsed()
}

/// The signature work alone: verify every request, sign a receipt for it.
fn crypto_run(requests: &[Request]) -> Duration {
    let replica = Keypair::from_secret_bytes(&[1; 32]);
    let start = Instant::now();
    for request in requests {
        assert!(request.verify());
        let Op::Store {
            envelope, expiry, ..
        } = &request.body.op
        else {
            unreachable!()
        };
        let receipt = shoal_mailbox::Receipt::sign(
            &replica,
            request.body.descriptor.id(),
            shoal_mailbox::EnvelopeHash::of(envelope),
            *expiry,
        );
        std::hint::black_box(receipt);
    }
    start.elapsed()
}

fn summary(rates: &mut [f64]) -> (f64, f64) {
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], rates[0])
}

fn main() {
    let args = Args::parse();
    let durability = if args.power {
        Durability::Power
    } else {
        Durability::Process
    };
    let requests = requests(&args);
    let n = args.envelopes as f64;
    let (mut replica, mut plain, mut single, mut crypto) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs.max(1) {
        // Alternate the order, so drift of the machine falls on all.
        let order = if run % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        crypto.push(n / crypto_run(&requests).as_secs_f64());
        for which in order {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path();
            match which {
                0 => {
                    let took = replica_run(path, &requests, durability, args.batch);
                    replica.push(n / took.as_secs_f64());
                }
                1 => {
                    let took = baseline_run(path, &requests, durability, args.batch);
                    plain.push(n / took.as_secs_f64());
                }
                _ => {
                    let took = baseline_run(path, &requests, durability, 1);
                    single.push(n / took.as_secs_f64());
                }
            }
        }
    }
    let (r_med, r_min) = summary(&mut replica);
    let (p_med, p_min) = summary(&mut plain);
    let (s_med, s_min) = summary(&mut single);
    let (c_med, c_min) = summary(&mut crypto);
    println!("envelopes {}", args.envelopes);
    println!("envelope_bytes {}", args.size);
    println!("synchronous {}", if args.power { "FULL" } else { "NORMAL" });
    println!("runs {}", replica.len());
    println!("batch {}", args.batch);
    println!("mailboxes {}", args.mailboxes);
    println!("replica_per_sec_median {r_med:.0}");
    println!("replica_per_sec_min {r_min:.0}");
    println!("sqlite_batched_per_sec_median {p_med:.0}");
    println!("sqlite_batched_per_sec_min {p_min:.0}");
    println!("sqlite_one_per_commit_per_sec_median {s_med:.0}");
    println!("sqlite_one_per_commit_per_sec_min {s_min:.0}");
    println!("unbatched_signatures_per_sec_median {c_med:.0}");
    println!("unbatched_signatures_per_sec_min {c_min:.0}");
    println!("ratio_to_batched_median {:.3}", r_med / p_med);
    println!("ratio_to_one_per_commit_median {:.3}", r_med / s_med);
}
