//! [`ReachCore`]: the sans-IO reachability protocol, both roles.
//!
//! As a **requester**, it asks connected peers on distinct networks to
//! dial each candidate address back; an address is reachable once
//! [`Config::confirmations`] of them got through (their nonce arrived on a
//! connection to it), unreachable once as many could not. As a
//! **checker**, it dials back only the requester's own IP (the one its
//! session comes from), one check per requester at a time, a few per
//! network per minute, so nobody can aim it at a third party or use it to
//! scan.
//!
//! ```text
//!  check(candidates) ─▶ for each address without a fresh verdict:
//!     pick peers (direct sessions, distinct /24s, not the address's /24)
//!     ─▶ Check{nonce, addr} ─▶ … nonce_received(nonce) ─▶ reached
//!                            ─▶ Result{Unreachable}     ─▶ unreachable
//!     confirmations agree ─▶ Output::Changed(status)
//!  Check{nonce, addr} from a peer ─▶ addr's IP == session IP? rate ok?
//!     ─▶ Output::DialBack ─▶ (driver dials) ─▶ dial_back_done
//!     ─▶ Result{Reached | Unreachable}
//! ```

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal::{BoxError, Core, Now, Remote, Transmit};
use shoal_identity::PeerId;
use shoal_transport::{Multiaddr, subnet_of};

use crate::{
    Config,
    protocol::{ReachMessage, ResultCode, is_checkable},
};

/// Candidate addresses tracked at once; more are ignored.
pub const MAX_CANDIDATES: usize = 8;
/// Peers remembered as possible checkers.
pub const MAX_CHECKERS: usize = 256;

/// What the core asks of its driver, and tells its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Dial `addr` on a new connection, expecting `requester`, send
    /// `nonce` on the back protocol, and report with
    /// [`ReachCore::dial_back_done`].
    DialBack {
        /// Who asked.
        requester: PeerId,
        /// Its address to dial (its session's IP).
        addr: Multiaddr,
        /// What to send there.
        nonce: u64,
    },
    /// The verdicts changed.
    Changed(Status),
}

/// What the node knows of its own addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Addresses others reached.
    pub reachable: Vec<Multiaddr>,
    /// Addresses others could not reach.
    pub unreachable: Vec<Multiaddr>,
    /// Candidates without a verdict yet.
    pub unknown: Vec<Multiaddr>,
}

impl Status {
    /// Whether some address of the node can be dialled by others.
    pub fn is_reachable(&self) -> bool {
        !self.reachable.is_empty()
    }

    /// Whether every candidate was found unreachable (and there was one).
    pub fn is_unreachable(&self) -> bool {
        self.reachable.is_empty() && self.unknown.is_empty() && !self.unreachable.is_empty()
    }
}

#[derive(Debug, Default)]
struct Tally {
    reached: BTreeSet<PeerId>,
    unreachable: BTreeSet<PeerId>,
    /// Peers asked in this round that answered or are asked now (one that
    /// was busy may be asked again).
    asked: BTreeSet<PeerId>,
    /// Checks sent in this round: bounds the retries.
    attempts: usize,
    /// Their networks: one checker per network.
    networks: BTreeSet<IpAddr>,
    verdict: Option<bool>,
    /// When the verdict was reached (a new round starts after
    /// `recheck_interval`).
    decided: Option<Instant>,
}

#[derive(Debug)]
struct Probe {
    addr: Multiaddr,
    checker: PeerId,
    deadline: Instant,
    /// Its nonce came back: counted as reached. The probe stays until the
    /// checker's result, because until then the checker is busy with us.
    reached: bool,
}

#[derive(Debug)]
struct DialBack {
    nonce: u64,
    deadline: Instant,
}

/// The reachability protocol's state (see the module docs).
#[derive(Debug)]
pub struct ReachCore {
    config: Config,
    rng: ChaCha8Rng,
    /// Peers with the protocol open over a direct session, and the IP of
    /// that session.
    peers: BTreeMap<PeerId, IpAddr>,
    /// Each candidate and what checkers said of it (at most
    /// [`MAX_CANDIDATES`]: a list).
    tallies: Vec<(Multiaddr, Tally)>,
    probes: HashMap<u64, Probe>,
    /// Checks we run for others, by requester.
    dial_backs: HashMap<PeerId, DialBack>,
    /// Dial-backs started per network in the current minute.
    rate: HashMap<IpAddr, (Instant, u32)>,
    out: VecDeque<Transmit>,
    outputs: VecDeque<Output>,
    last_status: Status,
}

impl ReachCore {
    /// A core with `config`; `seed` makes its nonces.
    pub fn new(config: Config, seed: u64) -> ReachCore {
        ReachCore {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            peers: BTreeMap::new(),
            tallies: Vec::new(),
            probes: HashMap::new(),
            dial_backs: HashMap::new(),
            rate: HashMap::new(),
            out: VecDeque::new(),
            outputs: VecDeque::new(),
            last_status: Status::default(),
        }
    }

    /// Stops answering others' checks (they get `Refused`): a node without
    /// a prober cannot dial back.
    pub fn stop_serving(&mut self) {
        self.config.serve = false;
    }

    /// The verdicts so far.
    pub fn status(&self) -> Status {
        let mut status = Status::default();
        for (addr, tally) in &self.tallies {
            match tally.verdict {
                Some(true) => status.reachable.push(addr.clone()),
                Some(false) => status.unreachable.push(addr.clone()),
                None => status.unknown.push(addr.clone()),
            }
        }
        status
    }

    /// The addresses to check (the node's announced direct addresses):
    /// new ones are checked, gone ones forgotten. Only `/ip…/tcp/…`
    /// addresses count, at most [`MAX_CANDIDATES`].
    pub fn set_candidates(&mut self, now: Now, candidates: &[Multiaddr]) {
        let wanted: Vec<Multiaddr> = candidates
            .iter()
            .map(Multiaddr::without_peer_id)
            .filter(is_checkable)
            .take(MAX_CANDIDATES)
            .collect();
        self.tallies.retain(|(addr, _)| wanted.contains(addr));
        self.probes.retain(|_, p| wanted.contains(&p.addr));
        for addr in wanted {
            if self.tally(&addr).is_none() {
                self.tallies.push((addr, Tally::default()));
            }
        }
        self.pump(now.instant);
        self.report();
    }

    /// A nonce arrived on a connection to one of our addresses; returns
    /// whether it is one of ours (only then is it echoed).
    pub fn nonce_received(&mut self, now: Now, nonce: u64) -> bool {
        let Some(probe) = self.probes.get_mut(&nonce) else {
            return false;
        };
        if !probe.reached {
            probe.reached = true;
            let (addr, checker) = (probe.addr.clone(), probe.checker);
            if let Some(tally) = self.tally(&addr) {
                tally.reached.insert(checker);
            }
            self.decide(now.instant);
        }
        true
    }

    /// The driver finished the dial-back for `requester`'s check `nonce`.
    pub fn dial_back_done(&mut self, _now: Now, requester: PeerId, nonce: u64, reached: bool) {
        if self
            .dial_backs
            .get(&requester)
            .is_some_and(|d| d.nonce == nonce)
        {
            self.dial_backs.remove(&requester);
            let code = if reached {
                ResultCode::Reached
            } else {
                ResultCode::Unreachable
            };
            self.send(requester, ReachMessage::Result { nonce, code });
        }
    }

    fn tally(&mut self, addr: &Multiaddr) -> Option<&mut Tally> {
        self.tallies
            .iter_mut()
            .find(|(a, _)| a == addr)
            .map(|(_, t)| t)
    }

    fn send(&mut self, peer: PeerId, message: ReachMessage) {
        self.out.push_back(Transmit {
            peer,
            bytes: message.encode(),
        });
    }

    /// Starts checks where a verdict is missing or stale.
    fn pump(&mut self, now: Instant) {
        let needed = self.config.confirmations.max(1);
        let max_asked = self.config.checkers.max(needed) * 2;
        let recheck = self.config.recheck_interval;
        let addrs: Vec<Multiaddr> = self.tallies.iter().map(|(a, _)| a.clone()).collect();
        for addr in addrs {
            let in_flight = self
                .probes
                .values()
                .filter(|p| p.addr == addr && !p.reached)
                .count();
            let Some(tally) = self
                .tallies
                .iter_mut()
                .find(|(a, _)| *a == addr)
                .map(|(_, t)| t)
            else {
                continue;
            };
            if tally
                .decided
                .is_some_and(|at| now.saturating_duration_since(at) >= recheck)
            {
                // A new round; the old verdict stands until it ends.
                tally.reached.clear();
                tally.unreachable.clear();
                tally.asked.clear();
                tally.networks.clear();
                tally.attempts = 0;
                tally.decided = None;
            }
            if tally.decided.is_some() {
                continue;
            }
            let answered = tally.reached.len() + tally.unreachable.len();
            let own = addr.direct_ip().map(subnet_of);
            let mut want = self
                .config
                .checkers
                .saturating_sub(answered + in_flight)
                .min(max_asked.saturating_sub(tally.attempts));
            // A checker takes one check per requester at a time.
            let busy: BTreeSet<PeerId> = self.probes.values().map(|p| p.checker).collect();
            let candidates: Vec<(PeerId, IpAddr)> = self
                .peers
                .iter()
                .map(|(p, ip)| (*p, subnet_of(*ip)))
                .filter(|(p, net)| {
                    !busy.contains(p)
                        && !tally.asked.contains(p)
                        && !tally.networks.contains(net)
                        && Some(*net) != own
                })
                .collect();
            for (peer, net) in candidates {
                if want == 0 {
                    break;
                }
                if tally.networks.contains(&net) {
                    continue;
                }
                want -= 1;
                tally.attempts += 1;
                tally.asked.insert(peer);
                tally.networks.insert(net);
                let nonce = self.rng.random();
                self.probes.insert(
                    nonce,
                    Probe {
                        addr: addr.clone(),
                        checker: peer,
                        deadline: now + self.config.check_timeout,
                        reached: false,
                    },
                );
                self.out.push_back(Transmit {
                    peer,
                    bytes: ReachMessage::Check {
                        nonce,
                        addr: addr.clone(),
                    }
                    .encode(),
                });
            }
        }
    }

    /// Settles verdicts that enough checkers agree on.
    fn decide(&mut self, now: Instant) {
        let needed = self.config.confirmations.max(1);
        for (_, tally) in &mut self.tallies {
            if tally.decided.is_some() {
                continue;
            }
            if tally.reached.len() >= needed {
                tally.verdict = Some(true);
                tally.decided = Some(now);
            } else if tally.unreachable.len() >= needed {
                tally.verdict = Some(false);
                tally.decided = Some(now);
            }
        }
        self.pump(now);
        self.report();
    }

    fn report(&mut self) {
        let status = self.status();
        if status != self.last_status {
            self.last_status = status.clone();
            self.outputs.push_back(Output::Changed(status));
        }
    }

    /// A check from `from`: dial back only its own IP, within the limits.
    fn checked_by(&mut self, now: Instant, from: &Remote, nonce: u64, addr: Multiaddr) {
        let refuse = |core: &mut ReachCore, code| {
            core.send(from.peer, ReachMessage::Result { nonce, code });
        };
        if !self.config.serve {
            return refuse(self, ResultCode::Refused);
        }
        let (Some(session_ip), Some(asked_ip)) = (from.addr.direct_ip(), addr.direct_ip()) else {
            return refuse(self, ResultCode::Refused);
        };
        if session_ip != asked_ip {
            tracing::debug!(peer = %from.peer, %addr, "refused a check of an address not the requester's");
            return refuse(self, ResultCode::Refused);
        }
        if self.dial_backs.contains_key(&from.peer)
            || self.dial_backs.len() >= self.config.max_dial_backs
        {
            return refuse(self, ResultCode::Busy);
        }
        let net = subnet_of(session_ip);
        let window = Duration::from_secs(60);
        let (start, count) = self.rate.entry(net).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= window {
            *start = now;
            *count = 0;
        }
        if *count >= self.config.dial_backs_per_network_per_minute {
            return refuse(self, ResultCode::Busy);
        }
        *count += 1;
        if self.rate.len() > MAX_CHECKERS * 4 {
            self.rate
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        }
        self.dial_backs.insert(
            from.peer,
            DialBack {
                nonce,
                deadline: now + self.config.dial_back_timeout,
            },
        );
        self.outputs.push_back(Output::DialBack {
            requester: from.peer,
            addr,
            nonce,
        });
    }
}

impl Core for ReachCore {
    type Event = Output;

    fn peer_connected(&mut self, now: Now, remote: &Remote) {
        if let Some(ip) = remote.addr.direct_ip()
            && (self.peers.len() < MAX_CHECKERS || self.peers.contains_key(&remote.peer))
        {
            self.peers.insert(remote.peer, ip);
            self.pump(now.instant);
        }
    }

    fn peer_disconnected(&mut self, _now: Now, peer: PeerId) {
        self.peers.remove(&peer);
    }

    fn handle_message(&mut self, now: Now, from: &Remote, bytes: &[u8]) -> Result<(), BoxError> {
        match ReachMessage::decode(bytes)? {
            ReachMessage::Check { nonce, addr } => self.checked_by(now.instant, from, nonce, addr),
            ReachMessage::Result { nonce, code } => {
                let ours = self
                    .probes
                    .get(&nonce)
                    .is_some_and(|p| p.checker == from.peer);
                if ours && let Some(probe) = self.probes.remove(&nonce) {
                    // Reached counts only with the nonce in hand (see
                    // `nonce_received`); a claim without it counts for
                    // nothing, like a refusal.
                    let net = self.peers.get(&from.peer).copied().map(subnet_of);
                    if let Some(tally) = self.tally(&probe.addr) {
                        match code {
                            ResultCode::Unreachable if !probe.reached => {
                                tally.unreachable.insert(from.peer);
                            }
                            // Busy (or an unknown answer): ask it again,
                            // or another on its network, later.
                            ResultCode::Busy | ResultCode::Other(_) => {
                                tally.asked.remove(&from.peer);
                                if let Some(net) = net {
                                    tally.networks.remove(&net);
                                }
                            }
                            ResultCode::Reached | ResultCode::Unreachable | ResultCode::Refused => {
                            }
                        }
                    }
                    self.decide(now.instant);
                }
            }
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Now) {
        let now = now.instant;
        self.probes.retain(|_, p| p.deadline > now);
        let expired: Vec<(PeerId, u64)> = self
            .dial_backs
            .iter()
            .filter(|(_, d)| d.deadline <= now)
            .map(|(p, d)| (*p, d.nonce))
            .collect();
        for (peer, nonce) in expired {
            self.dial_backs.remove(&peer);
            self.send(
                peer,
                ReachMessage::Result {
                    nonce,
                    code: ResultCode::Unreachable,
                },
            );
        }
        self.decide(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let probes = self.probes.values().map(|p| p.deadline);
        let backs = self.dial_backs.values().map(|d| d.deadline);
        let rechecks = self
            .tallies
            .iter()
            .map(|(_, t)| t)
            .filter_map(|t| t.decided.map(|at| at + self.config.recheck_interval));
        probes.chain(backs).chain(rechecks).min()
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod tests;
