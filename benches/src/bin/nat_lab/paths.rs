//! Direct against relayed, in the same run: connect time, 1 KiB round
//! trips and a bulk transfer from one public host to a peer on another,
//! over a direct connection and over a circuit through a relay on a third.
//!
//! Both ends are this program started again inside lab hosts (the roles
//! below): a Shoal service on TCP with the relay protocols, an echo
//! protocol and a sink, each allowed over relays.

use std::time::{Duration, Instant};

use clap::Subcommand;
use shoal::{DialOptions, ProtocolId, ProtocolMeta, RawStreams, ServiceBuilder, ServiceControl};
use shoal_identity::Keypair;
use shoal_lab::{Background, Lab, output_within};
use shoal_relay::{Config, Relay, RelayHandle};
use shoal_transport::{Multiaddr, TcpTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Args, WAIT, median_min, ms};

const ECHO: ProtocolId = ProtocolId(40);
const SINK: ProtocolId = ProtocolId(41);
const HOP: ProtocolId = ProtocolId(42);
const STOP: ProtocolId = ProtocolId(43);
/// The echo peer's port.
const PORT: u16 = 4002;

/// The two ends, run inside lab hosts.
#[derive(Subcommand, Debug)]
pub(crate) enum Role {
    /// A peer that echoes and sinks, reachable directly and through
    /// `relay`; prints its two addresses.
    #[command(hide = true)]
    EchoPeer {
        #[arg(long)]
        relay: Multiaddr,
    },
    /// Dials `target`, measures, prints one `result` line.
    #[command(hide = true)]
    Measure {
        #[arg(long)]
        target: Multiaddr,
        #[arg(long)]
        pings: usize,
        #[arg(long)]
        bytes: usize,
    },
}

pub(crate) fn run_role(role: &Role) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match role {
            Role::EchoPeer { relay } => echo_peer(relay.clone()).await,
            Role::Measure {
                target,
                pings,
                bytes,
            } => measure_one(target.clone(), *pings, *bytes).await,
        }
    });
}

struct Peer {
    control: ServiceControl,
    relay: RelayHandle,
    echo: RawStreams,
    sink: RawStreams,
}

async fn peer(relays: Vec<Multiaddr>) -> Peer {
    let mut relay = Relay::new(
        HOP,
        STOP,
        Config {
            relays,
            ..Config::default()
        },
    );
    let (echo_meta, echo) = ProtocolMeta::builder(ECHO, "/shoal-bench/echo")
        .over_relay(true)
        .raw_streams();
    let (sink_meta, sink) = ProtocolMeta::builder(SINK, "/shoal-bench/sink")
        .over_relay(true)
        .raw_streams();
    let builder = ServiceBuilder::new(Keypair::generate())
        .transport(TcpTransport::default())
        .protocol(echo_meta)
        .protocol(sink_meta);
    let service = relay.install(builder).build().unwrap();
    let control = service.control();
    tokio::spawn(service);
    let relay = relay.start(control.clone()).await;
    Peer {
        control,
        relay,
        echo,
        sink,
    }
}

async fn echo_peer(relay: Multiaddr) {
    let Peer {
        control,
        relay,
        mut echo,
        mut sink,
    } = peer(vec![relay]).await;
    let me = control.local_peer_id();
    control
        .listen(format!("/ip4/0.0.0.0/tcp/{PORT}").parse().unwrap())
        .await
        .unwrap();
    let mut addrs = relay.addrs();
    let relayed = tokio::time::timeout(WAIT, addrs.wait_for(|a| !a.is_empty()))
        .await
        .expect("a reservation in time")
        .unwrap()[0]
        .clone();
    println!("peer: {me}");
    println!("relayed: {}", relayed.with_peer_id(me));
    tokio::spawn(async move {
        while let Some(mut stream) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 16 << 10];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    while let Some(mut stream) = sink.accept().await {
        tokio::spawn(async move {
            // A length, that many bytes, then one byte back.
            let Ok(len) = stream.read_u64().await else {
                return;
            };
            let mut left = len;
            let mut buf = vec![0; 64 << 10];
            while left > 0 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left = left.saturating_sub(n as u64),
                }
            }
            let _ = stream.write_all(&[1]).await;
        });
    }
}

async fn measure_one(target: Multiaddr, pings: usize, bytes: usize) {
    let Peer { control, .. } = peer(Vec::new()).await;
    let started = Instant::now();
    let session = tokio::time::timeout(WAIT, control.dial(target, DialOptions::default()))
        .await
        .expect("connected in time")
        .expect("connected");
    let connect = started.elapsed();
    let mut echo = control.open_raw_stream(session.id, ECHO).await.unwrap();
    let (ping, mut back) = (vec![7u8; 1024], vec![0u8; 1024]);
    let mut round_trips = Vec::with_capacity(pings);
    for _ in 0..pings {
        let t = Instant::now();
        echo.write_all(&ping).await.unwrap();
        tokio::time::timeout(WAIT, echo.read_exact(&mut back))
            .await
            .expect("echo in time")
            .unwrap();
        round_trips.push(t.elapsed());
    }
    let mut sink = control.open_raw_stream(session.id, SINK).await.unwrap();
    let chunk = vec![9u8; 64 << 10];
    let t = Instant::now();
    sink.write_u64(bytes as u64).await.unwrap();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        sink.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    sink.flush().await.unwrap();
    tokio::time::timeout(WAIT, sink.read_u8())
        .await
        .expect("the sink's answer in time")
        .unwrap();
    let bulk = t.elapsed();
    round_trips.sort();
    println!(
        "result {} {} {} {}",
        connect.as_micros(),
        round_trips[round_trips.len() / 2].as_micros(),
        bulk.as_micros(),
        session.is_relayed()
    );
}

/// What one measurement gave.
struct Sample {
    connect: Duration,
    round_trip: Duration,
    bulk: Duration,
}

fn parse(stdout: &[u8]) -> Option<(Sample, bool)> {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().find(|l| l.starts_with("result "))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let us = |i: usize| f.get(i)?.parse().ok().map(Duration::from_micros);
    Some((
        Sample {
            connect: us(1)?,
            round_trip: us(2)?,
            bulk: us(3)?,
        },
        *f.get(4)? == "true",
    ))
}

/// Runs the measurement and prints its table.
pub(crate) fn measure(lab: &mut Lab, args: &Args, relay: &str) {
    let exe = std::env::current_exe().unwrap();
    let (a, b) = (
        lab.add_public_host("pa").unwrap(),
        lab.add_public_host("pb").unwrap(),
    );
    let mut cmd = b.command(&exe);
    cmd.args(["echo-peer", "--relay", relay]);
    let mut echo = Background::spawn(cmd).unwrap();
    let line = echo.wait_for(WAIT, |l| l.starts_with("peer: ")).unwrap();
    let peer = line["peer: ".len()..].to_owned();
    let line = echo.wait_for(WAIT, |l| l.starts_with("relayed: ")).unwrap();
    let relayed = line["relayed: ".len()..].to_owned();
    let direct = format!("/ip4/{}/tcp/{PORT}/p2p/{peer}", b.ip());
    let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
    for run in 0..args.path_runs {
        // Alternate which goes first, so neither always meets a warmer
        // machine.
        let order = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let target = [&direct, &relayed][which];
            let mut cmd = a.command(&exe);
            cmd.args(["measure", "--target", target])
                .args(["--pings", &args.pings.to_string()])
                .args(["--bytes", &args.bulk_bytes.to_string()]);
            let out = output_within(&mut cmd, WAIT * 2).unwrap();
            let (sample, was_relayed) = parse(&out.stdout).unwrap_or_else(|| {
                panic!("measure {target}: {}", String::from_utf8_lossy(&out.stderr))
            });
            assert_eq!(was_relayed, which == 1, "{target}");
            samples[which].push(sample);
        }
    }
    print_table(args, &samples);
}

fn print_table(args: &Args, samples: &[Vec<Sample>; 2]) {
    let column = |which: usize, f: fn(&Sample) -> Duration| -> (Duration, Duration) {
        let values: Vec<Duration> = samples[which].iter().map(f).collect();
        median_min(&values).unwrap()
    };
    let mib = args.bulk_bytes as f64 / f64::from(1 << 20);
    println!();
    println!(
        "Direct against relayed, {} runs each, interleaved ({} ms one way per internet crossing):",
        args.path_runs, args.delay_ms
    );
    println!();
    println!("| | direct, median (min) | relayed, median (min) | relayed / direct (medians) |");
    println!("|---|---|---|---|");
    type Field = fn(&Sample) -> Duration;
    let rows: [(&str, Field); 2] = [
        ("connect (TCP, secio, yamux)", |s| s.connect),
        ("1 KiB round trip", |s| s.round_trip),
    ];
    for (name, f) in rows {
        let (d, r) = (column(0, f), column(1, f));
        println!(
            "| {name} | {} ({}) | {} ({}) | {:.2} |",
            ms(d.0),
            ms(d.1),
            ms(r.0),
            ms(r.1),
            r.0.as_secs_f64() / d.0.as_secs_f64()
        );
    }
    let rates = |which: usize| -> (f64, f64) {
        let mut v: Vec<f64> = samples[which]
            .iter()
            .map(|s| mib / s.bulk.as_secs_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0])
    };
    let (d, r) = (rates(0), rates(1));
    println!(
        "| {mib:.0} MiB bulk, MiB/s | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.2} |",
        d.0,
        d.1,
        r.0,
        r.1,
        r.0 / d.0
    );
}
