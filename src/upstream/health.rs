//! Node health: counters fed by active probes and by real traffic (passive checks), with
//! APISIX's `health_checker` semantics (lua-resty-healthcheck): a success resets the failure
//! counters, a failure resets the success counter; a healthy node turns unhealthy when one
//! failure counter reaches its threshold, an unhealthy node turns healthy after `successes`
//! consecutive successes. A status in neither list counts as nothing. A threshold of 0
//! disables that kind of failure.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// What one probe or one proxied request told about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response with this status.
    Status(u16),
    /// Connection refused or reset, TLS failure.
    TcpFailure,
    /// Connect or read timeout.
    Timeout,
    /// A gRPC health check answered `SERVING` (counts as a healthy status).
    Serving,
    /// A gRPC health check answered anything else, or a gRPC error (counts as an unhealthy
    /// status, against `http_failures`).
    NotServing,
}

/// Thresholds and status lists for one side (active or passive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Statuses counted as success.
    pub healthy_statuses: Vec<u16>,
    /// Consecutive successes to become healthy.
    pub successes: u32,
    /// Statuses counted as failure.
    pub unhealthy_statuses: Vec<u16>,
    /// Consecutive bad statuses to become unhealthy (0 = never).
    pub http_failures: u32,
    /// Consecutive connection failures to become unhealthy (0 = never).
    pub tcp_failures: u32,
    /// Consecutive timeouts to become unhealthy (0 = never).
    pub timeouts: u32,
}

/// How active probes are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// TCP connect only.
    Tcp,
    /// `GET http_path` over plain HTTP.
    Http,
    /// `GET http_path` over TLS, with the upstream's client certificate, CA, SNI and verify
    /// settings.
    Https,
    /// `grpc.health.v1.Health/Check` over HTTP/2: in cleartext, or over TLS (with the
    /// upstream's TLS settings) when the upstream's scheme is `grpcs` or `https`.
    Grpc,
}

/// `checks.active`, compiled.
#[derive(Debug, Clone)]
pub struct ActiveCheck {
    /// Probe kind.
    pub kind: ProbeKind,
    /// Time limit of one probe.
    pub timeout: Duration,
    /// Host header (and SNI, when the upstream gives none) of http(s) probes.
    pub host: Option<String>,
    /// Port to probe instead of the node's.
    pub port: Option<u16>,
    /// Request path of http(s) probes.
    pub path: String,
    /// The `service` field of gRPC probes ("" = the whole server).
    pub grpc_service: String,
    /// Verify the certificate of https probes.
    pub verify: bool,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Time between probes of a healthy node.
    pub healthy_interval: Duration,
    /// Time between probes of an unhealthy node.
    pub unhealthy_interval: Duration,
    /// Counting rules.
    pub rules: Rules,
}

/// `checks`, compiled.
#[derive(Debug, Clone, Default)]
pub struct HealthConfig {
    /// Probes, if configured.
    pub active: Option<ActiveCheck>,
    /// Rules applied to real traffic, if configured.
    pub passive: Option<Rules>,
}

/// The health of one node. Starts healthy.
#[derive(Debug)]
pub struct NodeHealth {
    healthy: AtomicBool,
    successes: AtomicU32,
    http_failures: AtomicU32,
    tcp_failures: AtomicU32,
    timeouts: AtomicU32,
    /// Milliseconds (on the prober's clock) when the next probe is due.
    pub next_probe_ms: AtomicU64,
    /// Whether a probe is in flight.
    pub probing: AtomicBool,
}

impl Default for NodeHealth {
    fn default() -> Self {
        NodeHealth {
            healthy: AtomicBool::new(true),
            successes: AtomicU32::new(0),
            http_failures: AtomicU32::new(0),
            tcp_failures: AtomicU32::new(0),
            timeouts: AtomicU32::new(0),
            next_probe_ms: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }
}

impl NodeHealth {
    /// Whether the node takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Counts `outcome` under `rules`. Returns `Some(new_state)` when the node changed state
    /// (`true` = now healthy), with a short reason.
    pub fn record(&self, outcome: Outcome, rules: &Rules) -> Option<(bool, String)> {
        let failure = |counter: &AtomicU32, threshold: u32, what: &str| {
            self.successes.store(0, Ordering::Relaxed);
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            (threshold > 0 && n >= threshold && self.healthy.swap(false, Ordering::Relaxed))
                .then(|| (false, format!("{n} consecutive {what}")))
        };
        match outcome {
            Outcome::Status(code) if rules.healthy_statuses.contains(&code) => self.success(rules),
            Outcome::Serving => self.success(rules),
            Outcome::Status(code) if rules.unhealthy_statuses.contains(&code) => failure(
                &self.http_failures,
                rules.http_failures,
                "bad HTTP statuses",
            ),
            Outcome::NotServing => failure(
                &self.http_failures,
                rules.http_failures,
                "gRPC health checks not SERVING",
            ),
            Outcome::Status(_) => None,
            Outcome::TcpFailure => failure(&self.tcp_failures, rules.tcp_failures, "TCP failures"),
            Outcome::Timeout => failure(&self.timeouts, rules.timeouts, "timeouts"),
        }
    }

    /// Counts a success: resets the failure counters; turns healthy after `successes`.
    fn success(&self, rules: &Rules) -> Option<(bool, String)> {
        self.http_failures.store(0, Ordering::Relaxed);
        self.tcp_failures.store(0, Ordering::Relaxed);
        self.timeouts.store(0, Ordering::Relaxed);
        let n = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
        (n >= rules.successes.max(1) && !self.healthy.swap(true, Ordering::Relaxed))
            .then(|| (true, format!("{n} consecutive successes")))
    }
}

/// APISIX's default active rules.
pub fn default_active_rules() -> Rules {
    Rules {
        healthy_statuses: vec![200, 302],
        successes: 2,
        unhealthy_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
        http_failures: 5,
        tcp_failures: 2,
        timeouts: 3,
    }
}

/// APISIX's default passive rules.
pub fn default_passive_rules() -> Rules {
    let mut ok: Vec<u16> = (200..=208).collect();
    ok.push(226);
    ok.extend(300..=308);
    Rules {
        healthy_statuses: ok,
        successes: 5,
        unhealthy_statuses: vec![429, 500, 503],
        http_failures: 5,
        tcp_failures: 2,
        timeouts: 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_then_successes_flip_state_once_each() {
        let rules = default_active_rules();
        let h = NodeHealth::default();
        assert_eq!(h.record(Outcome::TcpFailure, &rules), None);
        let change = h.record(Outcome::TcpFailure, &rules);
        assert_eq!(change.map(|c| c.0), Some(false));
        assert!(!h.is_healthy());
        assert_eq!(h.record(Outcome::TcpFailure, &rules), None, "already down");
        assert_eq!(h.record(Outcome::Status(200), &rules), None);
        assert_eq!(
            h.record(Outcome::Status(302), &rules).map(|c| c.0),
            Some(true)
        );
        assert!(h.is_healthy());
    }

    #[test]
    fn a_success_resets_failures_and_unlisted_statuses_count_nothing() {
        let rules = default_passive_rules();
        let h = NodeHealth::default();
        for _ in 0..4 {
            h.record(Outcome::Status(500), &rules);
        }
        h.record(Outcome::Status(200), &rules);
        for _ in 0..4 {
            assert_eq!(h.record(Outcome::Status(503), &rules), None);
        }
        assert_eq!(h.record(Outcome::Status(418), &rules), None);
        assert!(h.is_healthy());
        assert_eq!(
            h.record(Outcome::Status(503), &rules).map(|c| c.0),
            Some(false)
        );
    }

    #[test]
    fn grpc_outcomes_count_as_statuses() {
        let rules = default_active_rules();
        let h = NodeHealth::default();
        for _ in 0..4 {
            assert_eq!(h.record(Outcome::NotServing, &rules), None);
        }
        let down = h.record(Outcome::NotServing, &rules);
        assert_eq!(down.map(|c| c.0), Some(false), "5 = http_failures");
        assert_eq!(h.record(Outcome::Serving, &rules), None);
        assert_eq!(h.record(Outcome::Serving, &rules).map(|c| c.0), Some(true));
    }

    #[test]
    fn zero_threshold_disables_that_failure_kind() {
        let rules = Rules {
            timeouts: 0,
            ..default_active_rules()
        };
        let h = NodeHealth::default();
        for _ in 0..10 {
            assert_eq!(h.record(Outcome::Timeout, &rules), None);
        }
        assert!(h.is_healthy());
    }
}
