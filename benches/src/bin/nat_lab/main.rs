//! Users behind NAT routers, measured in the lab of network namespaces
//! (`shoal-lab`), with a delay added to every packet crossing the lab's
//! internet.
//!
//! ```sh
//! cargo build --release -p shoal-examples -p shoal-benches
//! sudo target/release/nat_lab --contacts 20 --delay-ms 20
//! ```
//!
//! Needs root (it makes namespaces) and the `chat` and `node` binaries
//! next to its own (`--bin-dir` says where else). Two parts, each printing
//! a Markdown table:
//!
//! 1. **First contacts** (module `contacts`): for every pairing of public,
//!    endpoint-independent, symmetric and double NAT, `--contacts` times: a
//!    fresh bob and a fresh alice start (`chat`), alice adds bob and writes;
//!    the time until bob's chat shows her request is the first-message
//!    latency. Which path the session took comes from alice's `/peers`.
//! 2. **Direct against relayed** (module `paths`): one peer on a public host
//!    that also holds a reservation on a relay; another dials it directly
//!    and through the relay, in alternation, and measures connect time,
//!    1 KiB round trips and a bulk transfer over each.
//!
//! The shaper delays each packet once on its way across the internet
//! (`--delay-ms` one way); a relayed path crosses it twice each way.

#![allow(clippy::unwrap_used)]

mod contacts;
mod paths;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shoal_lab::{Background, Host, Lab, Shaping};

#[derive(Parser, Debug)]
#[command(about = "First contacts, and direct against relayed paths, in the NAT lab")]
struct Args {
    /// First contacts per pairing of NAT kinds.
    #[arg(long, default_value_t = 20)]
    contacts: usize,
    /// Pairings measured side by side.
    #[arg(long, default_value_t = 4)]
    at_once: usize,
    /// Delay added to each packet crossing the lab's internet, one way.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// Direct and relayed measurements of the second part, each.
    #[arg(long, default_value_t = 7)]
    path_runs: usize,
    /// Bytes of each bulk transfer (a circuit carries at most 4 MiB each
    /// way by default).
    #[arg(long, default_value_t = 2 << 20)]
    bulk_bytes: usize,
    /// 1 KiB round trips per measurement.
    #[arg(long, default_value_t = 50)]
    pings: usize,
    /// Where `chat` and `node` are (default: next to this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Only these pairings (0 public/public ... 9 double/double, in the
    /// table's order); repeatable. Default: all ten.
    #[arg(long)]
    pairing: Vec<usize>,
    /// Write each chat's debug log (`RUST_LOG=debug`) into this directory.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Skip the first contacts.
    #[arg(long)]
    no_contacts: bool,
    /// Skip direct against relayed.
    #[arg(long)]
    no_paths: bool,
    #[command(subcommand)]
    role: Option<paths::Role>,
}

/// The lab's "internet": nodes and chats treat it as global.
const LAB_RANGE: &str = "198.18.0.0/15";

/// Bound on any one wait for a program's output.
const WAIT: Duration = Duration::from_secs(60);

fn main() {
    let args = Args::parse();
    if let Some(role) = &args.role {
        paths::run_role(role);
        return;
    }
    let bin_dir = args.bin_dir.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_owned()
    });
    for needed in ["chat", "node"] {
        assert!(
            bin_dir.join(needed).exists(),
            "no {needed} in {}: cargo build --release -p shoal-examples",
            bin_dir.display()
        );
    }
    let mut lab = Lab::new().expect("the lab needs root and iproute2, iptables");
    lab.shape(Shaping {
        one_way_delay: Duration::from_millis(args.delay_ms),
        loss: 0.0,
        seed: 1,
    })
    .unwrap();
    let boot_host = lab.add_public_host("boot").unwrap();
    let relay_host = lab.add_public_host("relay").unwrap();
    let (_boot, boot_addr) = relay_node(&boot_host, &bin_dir);
    let (_relay, relay_addr) = relay_node(&relay_host, &bin_dir);
    println!(
        "lab: {} ms one way across the internet; relays {boot_addr} and {relay_addr}",
        args.delay_ms
    );
    if !args.no_paths {
        paths::measure(&mut lab, &args, &relay_addr);
    }
    if !args.no_contacts {
        contacts::measure(&mut lab, &args, &bin_dir, [&boot_addr, &relay_addr]);
    }
    if let Some(stats) = lab.shaper_stats() {
        println!(
            "shaper: {} packets delayed, {} overflowed",
            stats.accepted, stats.overflowed
        );
    }
}

/// A `node` serving as relay and bootstrap in `host`, and its address.
fn relay_node(host: &Host, bin_dir: &std::path::Path) -> (Background, String) {
    let mut cmd = host.command(bin_dir.join("node"));
    cmd.args(["--listen", "/ip4/0.0.0.0/tcp/4001", "--serve-relay"])
        .args(["--global-range", LAB_RANGE])
        .stderr(std::process::Stdio::null());
    let mut node = Background::spawn(cmd).unwrap();
    let line = node
        .wait_for(WAIT, |l| l.starts_with("listening on:"))
        .unwrap();
    let addr = line["listening on:".len()..].trim().to_owned();
    node.wait_for(WAIT, |l| l.starts_with("relay: serving"))
        .unwrap();
    node.discard_further_output();
    (node, addr)
}

/// Median and minimum of `values`, `None` if empty.
fn median_min(values: &[Duration]) -> Option<(Duration, Duration)> {
    let stats = shoal_benches::latency::stats(values.iter().copied())?;
    Some((stats.median, values.iter().copied().min()?))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
