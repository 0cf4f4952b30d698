//! Churn of the nodes that keep mailboxes: sessions and downtimes of
//! Weibull lengths (heavy-tailed, as measured in deployed peer-to-peer
//! networks), some session ends for good, and new nodes arriving as a
//! Poisson process that makes up for those that left.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::NodeIndex;

/// How nodes come and go.
#[derive(Debug, Clone, Copy)]
pub struct ChurnModel {
    /// Median time a node stays online.
    pub session_median: Duration,
    /// Weibull shape of session lengths (below 1: heavy-tailed).
    pub session_shape: f64,
    /// Median time a node that comes back stays away.
    pub downtime_median: Duration,
    /// Weibull shape of downtimes.
    pub downtime_shape: f64,
    /// Chance that a session end is for good (the node never returns).
    pub departure: f64,
    /// The first nodes of the network never leave (bootstrap nodes).
    pub stable: usize,
}

impl Default for ChurnModel {
    /// Sessions and downtimes Weibull with shape 0.5 and median 2 hours;
    /// a third of session ends are departures; 3 stable bootstrap nodes.
    fn default() -> ChurnModel {
        ChurnModel {
            session_median: Duration::from_secs(2 * 3600),
            session_shape: 0.5,
            downtime_median: Duration::from_secs(2 * 3600),
            downtime_shape: 0.5,
            departure: 1.0 / 3.0,
            stable: 3,
        }
    }
}

/// A Weibull length with this median and shape.
fn weibull(rng: &mut ChaCha8Rng, median: Duration, shape: f64) -> Duration {
    // Scale from the median: median = scale * ln(2)^(1/shape).
    let scale = median.as_secs_f64() / std::f64::consts::LN_2.powf(1.0 / shape);
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    Duration::from_secs_f64((scale * (-u.ln()).powf(1.0 / shape)).min(1e9))
}

/// The gamma function (Lanczos approximation), for Weibull means.
fn gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma(1.0 - x));
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = G[1..]
        .iter()
        .enumerate()
        .fold(G[0], |acc, (i, g)| acc + g / (x + i as f64 + 1.0));
    (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * sum
}

impl ChurnModel {
    /// The mean session length.
    pub fn mean_session(&self) -> Duration {
        let scale = self.session_median.as_secs_f64()
            / std::f64::consts::LN_2.powf(1.0 / self.session_shape);
        Duration::from_secs_f64(scale * gamma(1.0 + 1.0 / self.session_shape))
    }

    /// New nodes per hour that keep `online` nodes online on average: each
    /// node is online for `mean_session / departure` in its life.
    pub fn arrivals_per_hour(&self, online: usize) -> f64 {
        online as f64 * self.departure * 3600.0 / self.mean_session().as_secs_f64().max(1.0)
    }
}

/// What happens next to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Its session ends: for good, or until it returns.
    Leave(NodeIndex),
    /// It comes back, with what it stored.
    Return(NodeIndex),
}

/// The schedule of changes, and the arrivals.
#[derive(Debug)]
pub(crate) struct Churn {
    pub(crate) model: ChurnModel,
    rng: ChaCha8Rng,
    schedule: BTreeMap<(Duration, u64), Change>,
    seq: u64,
    next_arrival: Duration,
    arrival_gap_mean: f64,
}

impl Churn {
    /// Churn of a network of `online` nodes, from time `now`.
    pub(crate) fn new(model: ChurnModel, online: usize, seed: u64, now: Duration) -> Churn {
        let mut churn = Churn {
            model,
            rng: rand::SeedableRng::seed_from_u64(seed),
            schedule: BTreeMap::new(),
            seq: 0,
            next_arrival: now,
            arrival_gap_mean: 3600.0 / model.arrivals_per_hour(online).max(1e-9),
        };
        churn.next_arrival = now + churn.arrival_gap();
        churn
    }

    fn arrival_gap(&mut self) -> Duration {
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        Duration::from_secs_f64(-u.ln() * self.arrival_gap_mean)
    }

    fn at(&mut self, when: Duration, change: Change) {
        self.seq += 1;
        self.schedule.insert((when, self.seq), change);
    }

    /// `node` starts a session at `now`.
    pub(crate) fn online(&mut self, node: NodeIndex, now: Duration) {
        let session = weibull(
            &mut self.rng,
            self.model.session_median,
            self.model.session_shape,
        );
        self.at(now + session, Change::Leave(node));
    }

    /// `node` left at `now`: whether for good; if not, its return is
    /// scheduled.
    pub(crate) fn left(&mut self, node: NodeIndex, now: Duration) -> bool {
        if self.rng.random_bool(self.model.departure) {
            return true;
        }
        let away = weibull(
            &mut self.rng,
            self.model.downtime_median,
            self.model.downtime_shape,
        );
        self.at(now + away, Change::Return(node));
        false
    }

    /// The changes due by `now`, in order.
    pub(crate) fn due(&mut self, now: Duration) -> Vec<Change> {
        let later = self.schedule.split_off(&(now, u64::MAX));
        std::mem::replace(&mut self.schedule, later)
            .into_values()
            .collect()
    }

    /// How many new nodes arrive by `now`.
    pub(crate) fn arrivals(&mut self, now: Duration) -> usize {
        let mut n = 0;
        while self.next_arrival <= now {
            n += 1;
            let gap = self.arrival_gap();
            self.next_arrival += gap;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn weibull_lengths_have_the_median_asked_for() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let median = Duration::from_secs(7200);
        let mut v: Vec<Duration> = (0..20_001)
            .map(|_| weibull(&mut rng, median, 0.5))
            .collect();
        v.sort();
        let m = v[10_000].as_secs_f64();
        assert!((m - 7200.0).abs() < 400.0, "median {m}");
        // Heavy-tailed: the mean is far above the median (2 / ln(2)^2 times).
        let mean = ChurnModel::default().mean_session().as_secs_f64();
        assert!((mean / 7200.0 - 2.0 / std::f64::consts::LN_2.powi(2)).abs() < 0.01);
        assert!((gamma(5.0) - 24.0).abs() < 1e-9);
    }
}
