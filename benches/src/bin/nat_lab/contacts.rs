//! First contacts between chat users in every pairing of NAT kinds.
//!
//! Each contact starts two fresh `chat` processes (new identities, empty
//! data directories) in the pairing's hosts: bob first, until he is in
//! the network (and, behind a NAT, reachable through a relay), then alice.
//! After [`SETTLE`], alice adds bob and writes to him; the first-message
//! latency runs from then until bob's chat prints her request. It covers
//! looking bob up in the DHT, dialling him (through a relay if he is behind
//! a NAT), the end-to-end handshakes and the first envelope. The contact
//! counts once bob has answered and alice's `/peers` says which path their
//! session took.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_lab::{Background, Host, Lab, LabError, Place};

use crate::{Args, LAB_RANGE, WAIT, median_min, ms};

/// How long both users are online before alice writes: bob's presence
/// record, republished 1 s after his relayed address appears, is stored
/// by then.
const SETTLE: Duration = Duration::from_secs(2);

/// A wait for a line of `chat`, named in the error (`who`, `what`).
fn expect(
    chat: &mut Background,
    who: &str,
    what: &str,
    want: impl FnMut(&str) -> bool,
) -> Result<String, String> {
    chat.wait_for(WAIT, want)
        .map_err(|e| format!("{who}: no {what}: {e}"))
}

/// One first contact.
struct Contact {
    first_message: Duration,
    relayed: bool,
}

/// What a pairing showed.
struct Pairing {
    places: (Place, Place),
    contacts: Vec<Contact>,
    failures: Vec<String>,
}

/// Runs `args.contacts` first contacts for every pairing and prints the
/// table.
pub(crate) fn measure(lab: &mut Lab, args: &Args, bin_dir: &Path, relays: [&str; 2]) {
    let network = [
        "--bootstrap",
        relays[0],
        "--relay",
        relays[0],
        "--relay",
        relays[1],
    ];
    let mut pairs = Vec::new();
    for (n, (a, b)) in Place::pairings().into_iter().enumerate() {
        pairs.push((
            (lab.add_host_at(&format!("a{n}"), a).unwrap(), a),
            (lab.add_host_at(&format!("b{n}"), b).unwrap(), b),
        ));
    }
    if !args.pairing.is_empty() {
        let mut n = 0;
        pairs.retain(|_| {
            n += 1;
            args.pairing.contains(&(n - 1))
        });
    }
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut results: Vec<Pairing> = Vec::new();
    for batch in pairs.chunks(args.at_once.max(1)) {
        results.extend(std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .map(|((a, a_place), (b, b_place))| {
                    let users = Users {
                        bin_dir,
                        root: root.path(),
                        network: &network,
                        log_dir: args.log_dir.as_deref(),
                    };
                    scope.spawn(move || users.pairing((a, *a_place), (b, *b_place), args.contacts))
                })
                .collect();
            running
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        }));
    }
    print_table(args, &results, started.elapsed());
}

/// What every chat of the run shares.
#[derive(Clone, Copy)]
struct Users<'a> {
    bin_dir: &'a Path,
    root: &'a Path,
    network: &'a [&'a str],
    /// Where each chat's debug log goes, if anywhere.
    log_dir: Option<&'a Path>,
}

impl Users<'_> {
    fn pairing(self, a: (&Host, Place), b: (&Host, Place), contacts: usize) -> Pairing {
        let mut pairing = Pairing {
            places: (a.1, b.1),
            contacts: Vec::new(),
            failures: Vec::new(),
        };
        for i in 0..contacts {
            match self.first_contact(a, b, i) {
                Ok(contact) => pairing.contacts.push(contact),
                Err(e) => pairing.failures.push(e),
            }
        }
        pairing
    }

    /// A fresh user in `host`: its process, user id and peer id.
    fn user(
        self,
        (host, place): (&Host, Place),
        name: &str,
    ) -> Result<(Background, String, String), String> {
        let tag = format!("{}-{name}", host.name());
        let dir: PathBuf = self.root.join(&tag);
        let mut cmd = host.command(self.bin_dir.join("chat"));
        cmd.arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "/ip4/0.0.0.0/tcp/0"])
            .args(["--global-range", LAB_RANGE])
            .args(match place {
                Place::Public => &self.network[..2],
                Place::Behind(_) => self.network,
            });
        match self.log_dir {
            Some(logs) => {
                let log = std::fs::File::create(logs.join(format!("{tag}.log")))
                    .map_err(|e| format!("{tag}: log: {e}"))?;
                cmd.env("RUST_LOG", "debug").stderr(log);
            }
            None => {
                cmd.stderr(std::process::Stdio::null());
            }
        }
        let mut chat = Background::spawn_interactive(cmd).map_err(|e| e.to_string())?;
        let id = value(&mut chat, &tag, "user id:")?;
        let addr = value(&mut chat, &tag, "listening on:")?;
        let peer = addr.rsplit('/').next().unwrap_or_default().to_owned();
        if place != Place::Public {
            expect(&mut chat, &tag, "reservation", |l| {
                l.starts_with("relay: reachable through")
            })?;
        }
        Ok((chat, id, peer))
    }

    fn first_contact(
        self,
        a: (&Host, Place),
        b: (&Host, Place),
        i: usize,
    ) -> Result<Contact, String> {
        let (mut bob, bob_id, bob_peer) = self.user(b, &format!("bob{i}"))?;
        let (mut alice, alice_id, _) = self.user(a, &format!("alice{i}"))?;
        std::thread::sleep(SETTLE);
        let typing = |e: LabError| e.to_string();
        let started = Instant::now();
        alice
            .type_line(&format!("/add {bob_id} bob"))
            .map_err(typing)?;
        alice
            .type_line("/msg bob hello from behind")
            .map_err(typing)?;
        expect(&mut bob, "bob", "request", |l| {
            l.starts_with("message request from ")
        })?;
        let first_message = started.elapsed();
        bob.type_line(&format!("/add {alice_id} alice"))
            .map_err(typing)?;
        expect(&mut bob, "bob", "message", |l| {
            l == "alice: hello from behind"
        })?;
        expect(&mut alice, "alice", "delivery", |l| {
            l == "delivered to bob: hello from behind"
        })?;
        alice.type_line("/peers").map_err(typing)?;
        let line = expect(&mut alice, "alice", "peer line", |l| {
            l.starts_with("peer: ") && l.contains(&bob_peer)
        })?;
        Ok(Contact {
            first_message,
            relayed: line.contains("(through relay "),
        })
    }
}

/// The rest of the first line starting with `prefix`, trimmed.
fn value(chat: &mut Background, who: &str, prefix: &str) -> Result<String, String> {
    let line = expect(chat, who, prefix, |l| l.starts_with(prefix))?;
    Ok(line[prefix.len()..].trim().to_owned())
}

fn print_table(args: &Args, results: &[Pairing], took: Duration) {
    println!();
    println!(
        "First contacts, {} per pairing, {} pairings at a time, {} ms one way per internet crossing ({:.0} s):",
        args.contacts,
        args.at_once,
        args.delay_ms,
        took.as_secs_f64()
    );
    println!();
    println!("| alice | bob | delivered | path | first message, median | min | max |");
    println!("|---|---|---|---|---|---|---|");
    let mut by_path: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for p in results {
        let times: Vec<Duration> = p.contacts.iter().map(|c| c.first_message).collect();
        let relayed = p.contacts.iter().filter(|c| c.relayed).count();
        for c in &p.contacts {
            by_path[usize::from(c.relayed)].push(c.first_message);
        }
        let path = match (relayed, p.contacts.len() - relayed) {
            (0, 0) => "-".to_owned(),
            (_, 0) => "relay".to_owned(),
            (0, _) => "direct".to_owned(),
            (r, d) => format!("relay {r}, direct {d}"),
        };
        let (median, min, max) = match median_min(&times) {
            Some((median, min)) => (ms(median), ms(min), ms(*times.iter().max().unwrap())),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {}/{} | {path} | {median} | {min} | {max} |",
            p.places.0.name(),
            p.places.1.name(),
            p.contacts.len(),
            p.contacts.len() + p.failures.len(),
        );
    }
    println!();
    for (name, times) in [("direct", &by_path[0]), ("relayed", &by_path[1])] {
        if let Some(stats) = shoal_benches::latency::stats(times.iter().copied()) {
            println!(
                "{name}: {} first contacts, median {}, p90 {}, min {}, max {}",
                times.len(),
                ms(stats.median),
                ms(stats.p90),
                ms(*times.iter().min().unwrap()),
                ms(stats.max)
            );
        }
    }
    for p in results {
        for failure in &p.failures {
            println!(
                "failed ({} / {}): {failure}",
                p.places.0.name(),
                p.places.1.name()
            );
        }
    }
}
