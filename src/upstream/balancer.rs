//! Node selection.
//!
//! `roundrobin` is nginx's smooth weighted round robin (ngx_http_upstream_round_robin.c):
//! each pick adds every node's weight to its running score, takes the node with the highest
//! score and subtracts the total weight from it. Weights 5,1,1,1,1 give A,B,A,C,A,D,A,E,A —
//! the heavy node interleaved, never in a burst — and over any full cycle each node is picked
//! exactly `weight` times. The cycle is computed once at config load; a request then costs one
//! atomic increment and no lock.
//!
//! [`Balancer`] puts the four APISIX types behind one `select`: `roundrobin`, `chash`
//! (see [`super::chash`]), `least_conn` and `ewma` (see [`super::load`]).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest precomputed cycle. Larger weight sums are scaled down (after dividing by their
/// greatest common divisor), keeping every non-zero weight at least 1.
pub const MAX_CYCLE: u64 = 1 << 16;

/// A smooth weighted round-robin schedule over node indexes.
#[derive(Debug)]
pub struct RoundRobin {
    cycle: Vec<u32>,
    next: AtomicUsize,
}

impl RoundRobin {
    /// Builds the schedule for `weights` (one per node, in node order). Nodes of weight 0 are
    /// never picked. `None` when every weight is 0.
    pub fn new(weights: &[u32]) -> Option<Self> {
        let weights = reduce(weights);
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        if total == 0 {
            return None;
        }
        let mut score = vec![0i64; weights.len()];
        let mut cycle = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, &w) in weights.iter().enumerate() {
                score[i] += i64::from(w);
                if w > 0 && (weights[best] == 0 || score[i] > score[best]) {
                    best = i;
                }
            }
            score[best] -= total;
            cycle.push(best as u32);
        }
        Some(RoundRobin {
            cycle,
            next: AtomicUsize::new(0),
        })
    }

    /// The next node index.
    pub fn next(&self) -> usize {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.cycle[n % self.cycle.len()] as usize
    }

    /// The next node that `usable` accepts, skipping others in schedule order; `None` after
    /// one full cycle without a usable node.
    pub fn select(&self, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.cycle.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|k| self.cycle[(start + k) % len] as usize)
            .find(|&i| usable(i))
    }

    /// The precomputed cycle (node indexes), for inspection and tests.
    pub fn cycle(&self) -> &[u32] {
        &self.cycle
    }
}

/// Divides the weights by their gcd and, when the sum still exceeds [`MAX_CYCLE`], scales them
/// down proportionally (non-zero weights stay at least 1).
fn reduce(weights: &[u32]) -> Vec<u32> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = weights.iter().fold(0, |acc, &w| gcd(acc, w)).max(1);
    let mut reduced: Vec<u32> = weights.iter().map(|&w| w / g).collect();
    let total: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
    if total > MAX_CYCLE {
        for w in reduced.iter_mut().filter(|w| **w > 0) {
            *w = ((u64::from(*w) * MAX_CYCLE / total) as u32).max(1);
        }
    }
    reduced
}

/// How an upstream picks a node (APISIX `type`).
#[derive(Debug)]
pub enum Balancer {
    /// Smooth weighted round robin.
    RoundRobin(RoundRobin),
    /// Ketama consistent hashing on a per-request key.
    Chash(super::chash::Chash),
    /// Fewest requests in flight per unit of weight.
    LeastConn {
        /// Node weights.
        weights: Vec<u32>,
        /// Rotates the tie-break start.
        tie: AtomicUsize,
    },
    /// Lowest decayed response time × requests in flight, per unit of weight.
    Ewma {
        /// Node weights.
        weights: Vec<u32>,
        /// Rotates the tie-break start.
        tie: AtomicUsize,
    },
}

impl Balancer {
    /// Builds the balancer of `kind` (`roundrobin`, `chash`, `least_conn`, `ewma`) over nodes
    /// named `ids` with `weights`. `None` when every weight is 0.
    pub fn new(kind: BalancerKind, ids: &[String], weights: &[u32]) -> Option<Self> {
        if weights.iter().all(|&w| w == 0) {
            return None;
        }
        Some(match kind {
            BalancerKind::RoundRobin => Balancer::RoundRobin(RoundRobin::new(weights)?),
            BalancerKind::Chash => Balancer::Chash(super::chash::Chash::new(ids, weights)?),
            BalancerKind::LeastConn => Balancer::LeastConn {
                weights: weights.to_vec(),
                tie: AtomicUsize::new(0),
            },
            BalancerKind::Ewma => Balancer::Ewma {
                weights: weights.to_vec(),
                tie: AtomicUsize::new(0),
            },
        })
    }

    /// Picks a node among those `usable` accepts. `key` is the hash key (chash only);
    /// `inflight(i)` and `ewma_ns(i)` give node `i`'s live load.
    pub fn select(
        &self,
        key: &[u8],
        usable: impl Fn(usize) -> bool,
        inflight: impl Fn(usize) -> usize,
        ewma_ns: impl Fn(usize) -> f64,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(rr) => rr.select(usable),
            Balancer::Chash(ring) => ring.select(key, usable),
            Balancer::LeastConn { weights, tie } => {
                let start = tie.fetch_add(1, Ordering::Relaxed);
                super::load::pick_min(weights, start, usable, |i| (inflight(i) + 1) as f64)
            }
            Balancer::Ewma { weights, tie } => {
                let start = tie.fetch_add(1, Ordering::Relaxed);
                // A node without samples yet costs 0 and is tried first.
                super::load::pick_min(weights, start, usable, |i| {
                    ewma_ns(i) * (inflight(i) + 1) as f64
                })
            }
        }
    }
}

/// The balancer types (APISIX `upstream.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalancerKind {
    /// `roundrobin`
    RoundRobin,
    /// `chash`
    Chash,
    /// `least_conn`
    LeastConn,
    /// `ewma`
    Ewma,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(weights: &[u32], n: usize) -> String {
        let rr = RoundRobin::new(weights).unwrap();
        (0..n).map(|_| (b'A' + rr.next() as u8) as char).collect()
    }

    #[test]
    fn smooth_sequence_matches_nginx() {
        assert_eq!(picks(&[5, 1, 1, 1, 1], 9), "ABACADAEA");
        assert_eq!(picks(&[3, 1], 8), "AABAAABA");
        assert_eq!(picks(&[5, 1, 1], 7), "AABACAA");
    }

    #[test]
    fn weight_zero_is_never_picked_and_counts_match_weights() {
        let s = picks(&[3, 0, 1], 40);
        assert!(!s.contains('B'));
        assert_eq!(s.matches('A').count(), 30);
        assert_eq!(s.matches('C').count(), 10);
        assert!(RoundRobin::new(&[0, 0]).is_none());
    }

    #[test]
    fn select_skips_unusable_nodes_in_schedule_order() {
        let rr = RoundRobin::new(&[1, 1, 1]).unwrap();
        let picks: Vec<usize> = (0..4).map(|_| rr.select(|i| i != 1).unwrap()).collect();
        assert!(!picks.contains(&1));
        assert!(rr.select(|_| false).is_none());
    }

    #[test]
    fn equal_large_weights_reduce_to_alternation() {
        let rr = RoundRobin::new(&[100, 100]).unwrap();
        assert_eq!(rr.cycle(), &[0, 1]);
        let big = RoundRobin::new(&[u32::MAX, 1]).unwrap();
        assert!(big.cycle().len() as u64 <= MAX_CYCLE + 1);
        assert!(big.cycle().contains(&1));
    }
}
