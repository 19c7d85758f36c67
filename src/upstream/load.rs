//! Load-aware selection: `least_conn` (fewest requests in flight per unit of weight, as
//! nginx's `least_conn`) and `ewma` (lowest exponentially decayed response time, scaled by
//! requests in flight, with APISIX's 10-second decay time).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Decay time constant of the EWMA (APISIX's `DECAY_TIME`).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Live load figures of one node, shared by all requests.
#[derive(Debug, Default)]
pub struct NodeLoad {
    /// Requests in flight.
    pub inflight: AtomicUsize,
    /// EWMA of response time, nanoseconds, as f64 bits (0 = no sample yet).
    ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated, nanoseconds since [`epoch`].
    updated_ns: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

impl NodeLoad {
    /// Adds a response-time sample.
    pub fn observe(&self, rtt: Duration) {
        let now = now_ns();
        let last = self.updated_ns.swap(now, Ordering::Relaxed);
        let old = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let sample = rtt.as_nanos() as f64;
        let value = if old == 0.0 {
            sample
        } else {
            let dt = now.saturating_sub(last) as f64;
            let w = (-dt / EWMA_DECAY.as_nanos() as f64).exp();
            old * w + sample * (1.0 - w)
        };
        self.ewma_ns.store(value.to_bits(), Ordering::Relaxed);
    }

    /// The current EWMA in nanoseconds (0 before any sample).
    pub fn ewma_ns(&self) -> f64 {
        f64::from_bits(self.ewma_ns.load(Ordering::Relaxed))
    }
}

/// Picks the usable node with the lowest `cost(i) / weight(i)`; ties go to the first one at
/// or after `start` (rotate `start` to spread ties). Weight-0 nodes are never picked.
pub fn pick_min(
    weights: &[u32],
    start: usize,
    usable: impl Fn(usize) -> bool,
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    let n = weights.len();
    let mut best: Option<(usize, f64)> = None;
    for k in 0..n {
        let i = (start + k) % n;
        if weights[i] == 0 || !usable(i) {
            continue;
        }
        let score = cost(i) / f64::from(weights[i]);
        if best.is_none_or(|(_, s)| score < s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_conn_prefers_idle_and_heavier_nodes() {
        let inflight = [3usize, 1, 1];
        let cost = |i: usize| (inflight[i] + 1) as f64;
        assert_eq!(pick_min(&[1, 1, 1], 0, |_| true, cost), Some(1));
        assert_eq!(pick_min(&[1, 1, 1], 2, |_| true, cost), Some(2));
        assert_eq!(pick_min(&[10, 1, 1], 0, |_| true, cost), Some(0));
        assert_eq!(pick_min(&[1, 0, 1], 0, |i| i != 2, cost), Some(0));
        assert_eq!(pick_min(&[1, 1], 0, |_| false, cost), None);
    }

    #[test]
    fn ewma_moves_towards_samples() {
        let l = NodeLoad::default();
        assert_eq!(l.ewma_ns(), 0.0);
        l.observe(Duration::from_millis(10));
        assert_eq!(l.ewma_ns(), 10e6);
        l.observe(Duration::from_millis(20));
        let v = l.ewma_ns();
        assert!((10e6..=20e6).contains(&v), "{v}");
    }
}
