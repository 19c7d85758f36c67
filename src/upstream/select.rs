//! Picking a node for one try of one request: healthy nodes first, never a node this request
//! already tried, every node when none is healthy (logged once per episode).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::warn;

use super::health::Outcome;
use super::Upstream;

/// Nodes a request has tried, as a bit set over the first 256 node indexes (nodes beyond
/// that are not tracked and may be tried twice).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tried([u64; 4]);

impl Tried {
    /// Whether node `i` was tried.
    pub fn contains(&self, i: usize) -> bool {
        i < 256 && self.0[i / 64] & (1 << (i % 64)) != 0
    }
    /// Marks node `i` tried.
    pub fn insert(&mut self, i: usize) {
        if i < 256 {
            self.0[i / 64] |= 1 << (i % 64);
        }
    }
}

impl Upstream {
    /// A node for the next try, or `None` when every node with an address was tried.
    /// `key` is the chash key (ignored by other balancers).
    pub fn pick(&self, key: &[u8], tried: &Tried) -> Option<usize> {
        let select = |usable: &dyn Fn(usize) -> bool| {
            self.balancer.select(
                key,
                usable,
                |i| self.nodes[i].load.inflight.load(Ordering::Relaxed),
                |i| self.nodes[i].load.ewma_ns(),
            )
        };
        if let Some(i) = select(&|i| !tried.contains(i) && self.nodes[i].is_up()) {
            if self.health.is_some() {
                self.all_down.store(false, Ordering::Relaxed);
            }
            return Some(i);
        }
        let resolved = |i: usize| self.nodes[i].resolved.load(Ordering::Relaxed);
        let any = select(&|i| !tried.contains(i) && resolved(i));
        if any.is_some()
            && self.health.is_some()
            && !self.nodes.iter().any(|n| n.is_up())
            && !self.all_down.swap(true, Ordering::Relaxed)
        {
            warn!(
                "upstream {}: every node is unhealthy; sending traffic to all of them anyway",
                self.id
            );
        }
        any
    }

    /// Whether a node with an address remains that this request has not tried.
    pub fn has_untried(&self, tried: &Tried) -> bool {
        (0..self.nodes.len()).any(|i| {
            !tried.contains(i)
                && self.nodes[i].weight > 0
                && self.nodes[i].resolved.load(Ordering::Relaxed)
        })
    }

    /// Counts what real traffic told about node `i` (passive checks), logging state changes.
    pub fn report_passive(&self, i: usize, outcome: Outcome) {
        let Some(rules) = self.health.as_ref().and_then(|h| h.passive.as_ref()) else {
            return;
        };
        let node = &self.nodes[i];
        if let Some((healthy, why)) = node.health.record(outcome, rules) {
            log_change(&self.id, &node.label, healthy, &why, "passive");
        }
    }
}

/// Logs one line for a node's health change.
pub fn log_change(upstream: &str, node: &str, healthy: bool, why: &str, source: &str) {
    crate::ops::metrics::set_node_health(upstream, node, healthy);
    let state = if healthy { "healthy" } else { "unhealthy" };
    warn!("upstream {upstream} node {node} is now {state} ({why}, {source} check)");
}

/// A request in flight on a node: counted while alive (least_conn, ewma).
pub struct Inflight {
    upstream: Arc<Upstream>,
    node: usize,
}

impl Inflight {
    /// Counts a request on `node` until the value is dropped.
    pub fn start(upstream: Arc<Upstream>, node: usize) -> Self {
        upstream.nodes[node]
            .load
            .inflight
            .fetch_add(1, Ordering::Relaxed);
        Inflight { upstream, node }
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.upstream.nodes[self.node]
            .load
            .inflight
            .fetch_sub(1, Ordering::Relaxed);
    }
}
