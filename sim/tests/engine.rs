//! The event loop with toy cores: determinism, latency, loss, crashes and
//! timers.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::time::{Duration, Instant};

use shoal::{BoxError, Core, Now, Remote, Transmit};
use shoal_identity::{Keypair, PeerId};
use shoal_sim::{Clock, NetworkModel, NodeIndex, Simulation};

/// Floods the first copy of each 8-byte message to its neighbours and
/// records when it arrived; ticks every `tick` if set.
#[derive(Default)]
struct Flood {
    neighbours: Vec<PeerId>,
    seen: Vec<(u64, Instant)>,
    out: Vec<Transmit>,
    tick: Option<Duration>,
    next_tick: Option<Instant>,
    ticks: u32,
}

impl Flood {
    fn publish(&mut self, now: Clock, id: u64) {
        self.seen.push((id, now.instant));
        for n in &self.neighbours {
            self.out.push(Transmit {
                peer: *n,
                bytes: id.to_be_bytes().to_vec().into(),
            });
        }
    }
}

impl Core for Flood {
    type Event = ();

    fn handle_message(&mut self, now: Now, _from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
        let id = u64::from_be_bytes(bytes.try_into()?);
        if self.seen.iter().any(|(s, _)| *s == id) {
            return Ok(());
        }
        self.seen.push((id, now.instant));
        for n in &self.neighbours {
            self.out.push(Transmit {
                peer: *n,
                bytes: bytes.to_vec().into(),
            });
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Now) {
        if let Some(tick) = self.tick {
            self.ticks += 1;
            self.next_tick = Some(now.instant + tick);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop()
    }

    fn poll_event(&mut self) -> Option<()> {
        None
    }
}

/// `n` nodes on a ring with chords: node i links to i±1 and i+7.
fn ring(seed: u64, n: usize, model: NetworkModel) -> Simulation<Flood> {
    let peers: Vec<PeerId> = (0..n)
        .map(|_| Keypair::generate().public().peer_id())
        .collect();
    let mut sim = Simulation::new(seed, model);
    for i in 0..n {
        let node = Flood {
            neighbours: vec![
                peers[(i + 1) % n],
                peers[(i + n - 1) % n],
                peers[(i + 7) % n],
            ],
            ..Flood::default()
        };
        sim.add_node(peers[i], node);
    }
    sim
}

fn reached(sim: &Simulation<Flood>, id: u64) -> usize {
    sim.alive()
        .filter(|i| sim.node(*i).seen.iter().any(|(s, _)| *s == id))
        .count()
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let run = |seed| {
        let mut sim = ring(seed, 200, NetworkModel::default().with_loss(0.05));
        sim.with_node(NodeIndex(0), |n, now| n.publish(now, 1));
        sim.run_for(Duration::from_secs(30));
        let start = sim.clock().instant - sim.elapsed();
        let arrivals: Vec<Vec<(u64, Duration)>> = sim
            .alive()
            .map(|i| {
                sim.node(i)
                    .seen
                    .iter()
                    .map(|(id, t)| (*id, *t - start))
                    .collect()
            })
            .collect();
        (sim.stats(), arrivals)
    };
    // Peer ids differ between runs, but only the indices and the seed
    // decide latencies and losses.
    let (a, b, c) = (run(5), run(5), run(6));
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
}

#[test]
fn flood_reaches_everyone_with_link_latencies() {
    let model = NetworkModel::default();
    let mut sim = ring(1, 300, model);
    let start = sim.clock().instant;
    sim.with_node(NodeIndex(0), |n, now| n.publish(now, 9));
    let done = sim.run_until(Duration::from_secs(60), |s| reached(s, 9) == 300);
    assert!(done);
    // Every node forwards once to 3 neighbours.
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.stats().sent, 300 * 3);
    assert_eq!(sim.stats().delivered, 300 * 3);
    // Arrival times are at least one minimal link away and bounded by the
    // ring's diameter in hops times the worst link.
    for i in sim.alive().skip(1) {
        let t = sim.node(i).seen[0].1 - start;
        assert!(t >= model.min_latency, "{t:?}");
        assert!(t <= (model.max_latency + model.jitter) * 300, "{t:?}");
    }
}

#[test]
fn crashed_nodes_receive_nothing_and_their_messages_vanish() {
    let mut sim = ring(2, 50, NetworkModel::default());
    for i in 10..20 {
        sim.crash(NodeIndex(i));
    }
    sim.with_node(NodeIndex(0), |n, now| n.publish(now, 3));
    sim.run_for(Duration::from_secs(30));
    assert!(sim.stats().to_crashed > 0);
    for i in 10..20 {
        assert!(sim.node(NodeIndex(i)).seen.is_empty());
        assert!(!sim.is_alive(NodeIndex(i)));
    }
    assert_eq!(reached(&sim, 3), 40, "chords route around the gap");
}

#[test]
fn loss_drops_about_the_configured_share() {
    let mut sim = ring(3, 500, NetworkModel::default().with_loss(0.2));
    for id in 0..4 {
        sim.with_node(NodeIndex(id * 100), |n, now| n.publish(now, id as u64));
    }
    sim.run_for(Duration::from_secs(60));
    let s = sim.stats();
    let share = s.lost as f64 / s.sent as f64;
    assert!((0.17..0.23).contains(&share), "{share}");
    assert_eq!(s.sent, s.lost + s.delivered + s.to_crashed + s.unroutable);
}

#[test]
fn timers_fire_on_virtual_time() {
    let peer = Keypair::generate().public().peer_id();
    let mut sim = Simulation::new(4, NetworkModel::default());
    let node = sim.add_node(
        peer,
        Flood {
            tick: Some(Duration::from_secs(1)),
            ..Flood::default()
        },
    );
    sim.with_node(node, |n, now| n.next_tick = Some(now.instant));
    let wall_start = sim.clock().unix_secs;
    sim.run_for(Duration::from_secs(3600));
    // Fires at 0 s, 1 s, ..., 3600 s.
    assert_eq!(sim.node(node).ticks, 3601);
    assert_eq!(sim.clock().unix_secs, wall_start + 3600);
}

#[test]
fn messages_to_unknown_peers_are_counted() {
    let mut sim = ring(5, 3, NetworkModel::default());
    let stranger = Keypair::generate().public().peer_id();
    sim.with_node(NodeIndex(0), |n, _| {
        n.out.push(Transmit {
            peer: stranger,
            bytes: vec![0; 8].into(),
        })
    });
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.stats().unroutable, 1);
}

#[test]
fn a_new_connection_costs_its_round_trips_once_until_a_crash() {
    // Two nodes on one fixed 20 ms link, connections costing 2 round trips.
    let model = NetworkModel {
        min_latency: Duration::from_millis(20),
        max_latency: Duration::from_millis(20),
        jitter: Duration::ZERO,
        loss: 0.0,
        connect_round_trips: 2,
    };
    let (a, b) = (Keypair::generate(), Keypair::generate());
    let mut sim = Simulation::new(6, model);
    let (a, b) = (a.public().peer_id(), b.public().peer_id());
    let na = sim.add_node(a, Flood::default());
    let nb = sim.add_node(b, Flood::default());
    let send = |sim: &mut Simulation<Flood>, id: u64| {
        let start = sim.clock().instant;
        sim.with_node(na, |n, _| {
            n.out.push(Transmit {
                peer: b,
                bytes: id.to_be_bytes().to_vec().into(),
            })
        });
        sim.run_for(Duration::from_secs(1));
        let seen = sim.node(nb).seen.iter().find(|(s, _)| *s == id).unwrap().1;
        seen - start
    };
    // The first message waits for the connection: 2 × 40 ms, then 20 ms.
    assert_eq!(send(&mut sim, 1), Duration::from_millis(100));
    // The next ones use it.
    assert_eq!(send(&mut sim, 2), Duration::from_millis(20));
    // After a crash of either end, the connection is made again.
    sim.crash(nb);
    sim.revive(nb);
    assert_eq!(send(&mut sim, 3), Duration::from_millis(100));
    assert_eq!(send(&mut sim, 4), Duration::from_millis(20));
}
