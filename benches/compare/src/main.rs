//! Shoal against tentacle and rust-libp2p, on 127.0.0.1, in one run:
//!
//! 1. bulk throughput of one protocol stream: `--mib` MiB from client to
//!    server in `--chunk-kib` writes (or messages), the median of `--runs`
//!    interleaved runs;
//! 2. session setup: `--setups` sequential sessions, each timed from the
//!    dial to the first echo on a freshly negotiated protocol (plus the
//!    phases each stack lets an application observe on the way).
//!
//! Every stack runs a server and a client node in this process, encrypted
//! with its default cipher, with `TCP_NODELAY` on both ends, on one 2-worker
//! tokio runtime. Runs of the stacks are interleaved (run 1 of every stack,
//! then run 2, …) so that a change of machine load hits all of them alike.
//!
//! ```sh
//! cargo run --release --manifest-path benches/compare/Cargo.toml -- --help
//! ```

mod common;
mod cpu;
mod libp2p_stack;
mod shoal_stack;
mod tentacle_stack;

use std::time::Duration;

use clap::Parser;

use crate::common::{Description, Result, SetupSample, Stack, Transfer, median_p99};

/// The stacks this program knows, by command-line name.
const STACK_NAMES: [&str; 4] = ["shoal", "shoal-messages", "tentacle", "libp2p"];

#[derive(Parser, Debug)]
#[command(
    about = "Shoal against tentacle and rust-libp2p on loopback: bulk throughput of one \
                   protocol stream and session setup"
)]
struct Args {
    /// MiB sent in each bulk run.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Bulk runs per stack, interleaved (run 1 of each stack, then run 2
    /// of each, ...); the median counts, the minimum and maximum are shown.
    #[arg(long, default_value_t = 8)]
    runs: usize,
    /// Size of each write (or message) in the bulk runs, KiB.
    #[arg(long, default_value_t = 64)]
    chunk_kib: usize,
    /// Sequential session setups per stack.
    #[arg(long, default_value_t = 200)]
    setups: usize,
    /// Untimed setups per stack before the measured ones.
    #[arg(long, default_value_t = 20)]
    warmup_setups: usize,
    /// Stacks to run, comma-separated: shoal, shoal-messages, tentacle,
    /// libp2p.
    #[arg(long, value_delimiter = ',', default_values_t = STACK_NAMES.map(String::from))]
    stacks: Vec<String>,
}

/// Everything measured for one stack.
struct Measured {
    description: Description,
    bulk: Vec<Transfer>,
    setups: Vec<SetupSample>,
}

impl Measured {
    /// MiB/s of every bulk run, sorted.
    fn rates(&self, bytes: u64) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .bulk
            .iter()
            .map(|t| mib_per_sec(bytes, t.elapsed))
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// MiB/s of the median bulk run.
    fn median_mib_per_sec(&self, bytes: u64) -> f64 {
        median(&self.rates(bytes))
    }

    /// Process CPU seconds per GiB moved, median over the bulk runs.
    fn median_cpu_per_gib(&self, bytes: u64) -> Option<f64> {
        let mut v: Vec<f64> = self
            .bulk
            .iter()
            .filter_map(|t| t.cpu)
            .map(|cpu| cpu.as_secs_f64() / (bytes as f64 / GIB))
            .collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| median(&v))
    }

    /// Median and p99 of one setup phase.
    fn phase(&self, pick: impl Fn(&SetupSample) -> Duration) -> (Duration, Duration) {
        let samples: Vec<Duration> = self.setups.iter().map(pick).collect();
        median_p99(&samples)
    }
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Bytes in a GiB.
const GIB: f64 = (1u64 << 30) as f64;

fn mib_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64()
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Starts the stack named `name`; bulk runs will use `chunk`-byte writes.
async fn start(name: &str, chunk: usize) -> Result<Box<dyn Stack>> {
    Ok(match name {
        "shoal" => Box::new(shoal_stack::ShoalStack::start(shoal_stack::Api::RawStream).await?),
        "shoal-messages" => {
            Box::new(shoal_stack::ShoalStack::start(shoal_stack::Api::Messages).await?)
        }
        "tentacle" => Box::new(tentacle_stack::TentacleStack::start(chunk).await?),
        "libp2p" => Box::new(libp2p_stack::Libp2pStack::start().await?),
        other => {
            return Err(
                format!("unknown stack {other:?}; known: {}", STACK_NAMES.join(", ")).into(),
            );
        }
    })
}

/// The CPU model, for the report header.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

async fn run(args: Args) -> Result<()> {
    let chunk = args.chunk_kib.max(1) * 1024;
    let chunks = (args.mib * 1024 * 1024).div_ceil(chunk as u64).max(1);
    let bytes = chunks * chunk as u64;
    let warmup_chunks = chunks.min((64 * 1024 * 1024_u64).div_ceil(chunk as u64));

    let mut stacks = Vec::new();
    for name in &args.stacks {
        stacks.push(start(name, chunk).await?);
    }
    let mut measured: Vec<Measured> = stacks
        .iter()
        .map(|s| Measured {
            description: s.describe(),
            bulk: Vec::new(),
            setups: Vec::new(),
        })
        .collect();

    eprintln!("warming up");
    for stack in &mut stacks {
        stack.bulk_once(warmup_chunks, chunk).await?;
        for _ in 0..args.warmup_setups {
            stack.setup_once().await?;
        }
    }
    for run in 1..=args.runs.max(1) {
        for (stack, m) in stacks.iter_mut().zip(&mut measured) {
            let transfer = stack.bulk_once(chunks, chunk).await?;
            eprintln!(
                "bulk run {run}: {:<20} {:>8.0} MiB/s",
                m.description.name,
                mib_per_sec(bytes, transfer.elapsed)
            );
            m.bulk.push(transfer);
        }
    }
    eprintln!("{} sequential setups per stack", args.setups);
    for _ in 0..args.setups {
        for (stack, m) in stacks.iter_mut().zip(&mut measured) {
            m.setups.push(stack.setup_once().await?);
        }
    }

    report(&args, bytes, chunk, &measured);
    Ok(())
}

/// Prints the markdown report.
fn report(args: &Args, bytes: u64, chunk: usize, measured: &[Measured]) {
    let reference = measured
        .iter()
        .find(|m| m.description.name == "Shoal (raw stream)");
    let shoal_mib = reference.map(|m| m.median_mib_per_sec(bytes));
    let shoal_echo = reference
        .filter(|m| !m.setups.is_empty())
        .map(|m| m.phase(|s| s.first_echo).0);

    println!("# Shoal, tentacle and rust-libp2p on loopback\n");
    println!(
        "{} × {}, tokio multi-thread runtime with 2 workers, 127.0.0.1, TCP_NODELAY on both ends, each stack's default cipher.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    println!(
        "Bulk: {} MiB one way through one protocol stream in {} KiB writes/messages, median of {} interleaved runs. Setup: {} sequential sessions (after {} warm-up ones).\n",
        bytes / (1024 * 1024),
        chunk / 1024,
        args.runs.max(1),
        args.setups,
        args.warmup_setups
    );

    println!("## Summary\n");
    println!(
        "Ratios are Shoal (raw stream) relative to the row, oriented so that > 1 means Shoal is better: MiB/s of Shoal ÷ MiB/s of the row; setup median of the row ÷ setup median of Shoal. Setup = dial → first echo on a freshly negotiated protocol.\n"
    );
    println!(
        "| stack | version | cipher | MiB/s | Shoal/this MiB/s | setup median ms | setup p99 ms | this/Shoal setup |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for m in measured {
        let mib = m.median_mib_per_sec(bytes);
        let (median, p99) = m.phase(|s| s.first_echo);
        let speed_ratio = shoal_mib.map_or("–".to_owned(), |s| format!("{:.2}", s / mib));
        let setup_ratio = shoal_echo.map_or("–".to_owned(), |s| {
            format!("{:.2}", median.as_secs_f64() / s.as_secs_f64())
        });
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            m.description.name,
            m.description.version,
            m.description.cipher,
            mib,
            speed_ratio,
            ms(median),
            ms(p99),
            setup_ratio
        );
    }

    println!("\n## Session setup phases (ms from the dial, median / p99)\n");
    println!(
        "connected = the dialing application learns the secure, multiplexed connection is up; protocol open = it learns the protocol substream is negotiated; first echo = one byte sent on it came back.\n"
    );
    println!("| stack | connected | protocol open | first echo |");
    println!("|---|---:|---:|---:|");
    for m in measured {
        let cell = |(median, p99): (Duration, Duration)| format!("{} / {}", ms(median), ms(p99));
        println!(
            "| {} | {} | {} | {} |",
            m.description.name,
            cell(m.phase(|s| s.connected)),
            cell(m.phase(|s| s.protocol_open)),
            cell(m.phase(|s| s.first_echo))
        );
    }

    println!("\n## Bulk runs\n");
    println!(
        "CPU s/GiB = user + system CPU time of the whole process (both nodes) per GiB moved, median of the runs.\n"
    );
    println!(
        "| stack | bulk API | MiB/s median | min | max | MiB/s per run, in order | CPU s/GiB |"
    );
    println!("|---|---|---:|---:|---:|---|---:|");
    for m in measured {
        let runs: Vec<String> = m
            .bulk
            .iter()
            .map(|t| format!("{:.0}", mib_per_sec(bytes, t.elapsed)))
            .collect();
        let rates = m.rates(bytes);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} |",
            m.description.name,
            m.description.bulk_api,
            m.median_mib_per_sec(bytes),
            rates.first().copied().unwrap_or_default(),
            rates.last().copied().unwrap_or_default(),
            runs.join(", "),
            m.median_cpu_per_gib(bytes)
                .map_or("–".to_owned(), |c| format!("{c:.2}"))
        );
    }

    let Some(shoal_mib) = shoal_mib else {
        return;
    };
    println!("\n## Targets\n");
    let verdict = |met: bool| if met { "met" } else { "not met" };
    for m in measured
        .iter()
        .filter(|m| !m.description.name.starts_with("Shoal"))
    {
        let ratio = shoal_mib / m.median_mib_per_sec(bytes);
        print!(
            "- vs {}: throughput {ratio:.2}× (target ≥ 1.25×: {})",
            m.description.name,
            verdict(ratio >= 1.25)
        );
        match shoal_echo {
            Some(shoal_echo) if !m.setups.is_empty() => {
                let echo = m.phase(|s| s.first_echo).0;
                println!(
                    ", setup median {} vs {} ms (target: Shoal faster: {})",
                    ms(shoal_echo),
                    ms(echo),
                    verdict(shoal_echo < echo)
                );
            }
            _ => println!(),
        }
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    let result = runtime.block_on(run(args));
    // Server and client tasks never end by themselves: don't wait for them.
    runtime.shutdown_timeout(Duration::from_secs(2));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
