//! How lookups and gossip scale with the network: the simulator
//! (`shoal-sim`) runs the real Kademlia and gossip cores on networks of
//! growing size, each built by bootstrapping every node through one seed,
//! and this program prints hops and messages per lookup, and hops, time to
//! full delivery and duplicates per gossip message.
//!
//! ```sh
//! cargo run --release -p shoal-benches --bin routing -- --csv target/routing.csv
//! python3 scripts/plot_routing.py target/routing.csv docs/routing_hops.png
//! ```

#![allow(clippy::unwrap_used)]

use std::{fmt::Write as _, time::Duration};

use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_gossip::Topic;
use shoal_sim::{
    NodeIndex,
    gossip::{GossipNode, spread_of},
    kad::{
        KadNetworkPlan, KadNode, LookupReport, find_node_lookups, find_value_lookups,
        publish_records,
    },
};

#[derive(Parser, Debug)]
#[command(about = "Kademlia and gossip scaling in the deterministic simulator")]
struct Args {
    /// Network sizes for the Kademlia lookups.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1_000, 10_000])]
    kad_sizes: Vec<usize>,
    /// Lookups of each kind per size.
    #[arg(long, default_value_t = 1_000)]
    lookups: usize,
    /// Network sizes for gossip.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1_000])]
    gossip_sizes: Vec<usize>,
    /// Messages published per gossip network.
    #[arg(long, default_value_t = 10)]
    messages: usize,
    /// Simulation seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the figures as CSV to this file (for the plot script).
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
}

const LIMIT: Duration = Duration::from_secs(300);

fn quantile(sorted: &[u32], q: f64) -> u32 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn sorted(values: &[u32]) -> Vec<u32> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v
}

/// One row of the Kademlia table.
fn kad_row(csv: &mut String, n: usize, kind: &str, r: &LookupReport) {
    let hops = sorted(&r.hops);
    let requests = sorted(&r.requests);
    let log2 = (n as f64).log2();
    println!(
        "| {n} | {kind} | {:.1}% | {:.2} | {} | {} | {:.1} | {} | {:.2} |",
        100.0 * r.success_rate(),
        LookupReport::mean(&r.hops),
        quantile(&hops, 0.95),
        hops[hops.len() - 1],
        LookupReport::mean(&r.requests),
        quantile(&requests, 0.95),
        log2,
    );
    writeln!(
        csv,
        "kad,{n},{kind},{:.4},{:.3},{},{:.2},{:.3}",
        r.success_rate(),
        LookupReport::mean(&r.hops),
        quantile(&hops, 0.95),
        LookupReport::mean(&r.requests),
        log2
    )
    .unwrap();
}

fn kad(args: &Args, csv: &mut String) {
    println!("## Kademlia lookups\n");
    println!(
        "k = 20, alpha = 3, 3 disjoint paths; one-way latency 10-100 ms per link. Hops = depth of the closest node found (FIND_NODE) or of the first node that returned the record (FIND_VALUE); a contact from the routing table has depth 0. Requests = lookup requests sent; each has one answer.\n"
    );
    println!(
        "| nodes | lookup | success | mean hops | p95 hops | max hops | mean requests | p95 requests | log2 N |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.kad_sizes {
        let started = std::time::Instant::now();
        let mut sim = KadNetworkPlan::new(n).build::<KadNode>(args.seed);
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x5eed);
        let keys: Vec<_> = publish_records(&mut sim, &mut rng, 200.min(n), LIMIT)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let nodes = find_node_lookups(&mut sim, &mut rng, args.lookups, LIMIT);
        let values = find_value_lookups(&mut sim, &mut rng, &keys, args.lookups, LIMIT);
        kad_row(csv, n, "FIND_NODE", &nodes);
        kad_row(csv, n, "FIND_VALUE", &values);
        eprintln!("kad {n} nodes: {:?} wall clock", started.elapsed());
    }
}

fn gossip(args: &Args, csv: &mut String) {
    println!("\n## Gossip\n");
    println!(
        "Every node subscribes to one topic; nodes found each other through Kademlia and keep 8 outbound connections (32 at most). Hops follow, for each node, the peer it first got the message from. Duplicates = copies received beyond the first, per node and message. Estimate = log2 N + ln N, the rounds push gossip needs to reach everyone.\n"
    );
    println!(
        "| nodes | messages | reached | p50 hops | p95 hops | max hops | log2 N + ln N | full delivery, median / max | duplicates per node |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &args.gossip_sizes {
        let started = std::time::Instant::now();
        let mut sim = KadNetworkPlan::new(n).build::<GossipNode>(args.seed);
        let topic = Topic::new("bench").unwrap();
        let nodes: Vec<NodeIndex> = sim.alive().collect();
        for node in &nodes {
            sim.with_node(*node, |g, _| g.gossip.subscribe(topic.clone()).unwrap());
        }
        sim.run_for(Duration::from_secs(10));
        let duplicates_before: u64 = nodes
            .iter()
            .map(|i| sim.node(*i).gossip.stats().duplicates)
            .sum();
        let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0x9055);
        let mut hops = Vec::new();
        let mut full = Vec::new();
        let mut reached = 0;
        for m in 0..args.messages {
            let author = nodes[rng.random_range(0..nodes.len())];
            let published = sim.clock().instant;
            let id = sim
                .with_node(author, |g, now| {
                    g.gossip
                        .publish(now.instant, topic.clone(), format!("m{m}").into_bytes())
                })
                .unwrap()
                .id;
            sim.run_for(Duration::from_secs(20));
            let spread = spread_of(&sim, author, id, published);
            reached += spread.reached;
            hops.extend(spread.hops);
            full.push(spread.full_delivery);
        }
        let duplicates: u64 = nodes
            .iter()
            .map(|i| sim.node(*i).gossip.stats().duplicates)
            .sum::<u64>()
            - duplicates_before;
        let per_node = duplicates as f64 / (n * args.messages) as f64;
        let hops = sorted(&hops);
        full.sort();
        let estimate = (n as f64).log2() + (n as f64).ln();
        println!(
            "| {n} | {} | {:.2}% | {} | {} | {} | {:.1} | {:.0} / {:.0} ms | {:.2} |",
            args.messages,
            100.0 * reached as f64 / ((n - 1) * args.messages) as f64,
            quantile(&hops, 0.5),
            quantile(&hops, 0.95),
            hops[hops.len() - 1],
            estimate,
            full[full.len() / 2].as_secs_f64() * 1000.0,
            full[full.len() - 1].as_secs_f64() * 1000.0,
            per_node,
        );
        writeln!(
            csv,
            "gossip,{n},publish,{:.4},{:.3},{},{:.2},{:.3}",
            reached as f64 / ((n - 1) * args.messages) as f64,
            hops.iter().map(|h| f64::from(*h)).sum::<f64>() / hops.len() as f64,
            quantile(&hops, 0.95),
            per_node,
            estimate
        )
        .unwrap();
        eprintln!("gossip {n} nodes: {:?} wall clock", started.elapsed());
    }
}

fn main() {
    let args = Args::parse();
    let mut csv =
        String::from("layer,nodes,kind,success,mean_hops,p95_hops,mean_messages,log_estimate\n");
    println!(
        "# Routing network scaling (simulator, seed {})\n",
        args.seed
    );
    kad(&args, &mut csv);
    gossip(&args, &mut csv);
    if let Some(path) = &args.csv {
        std::fs::write(path, csv).unwrap();
        eprintln!("wrote {}", path.display());
    }
}
