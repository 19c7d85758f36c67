//! Prometheus metrics (the `prometheus` crate) and the `/metrics` endpoint served on
//! `gateway.metrics_listen`.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `pylon_http_requests_total` | counter | `route`, `status` | requests answered; `route` is empty when none matched (APISIX's convention) |
//! | `pylon_http_request_duration_seconds` | histogram | `route` | from the request's start to the last byte logged |
//! | `pylon_upstream_response_duration_seconds` | histogram | `upstream` | from the first connection attempt to the end of the upstream response |
//! | `pylon_upstream_connect_failures_total` | counter | `upstream`, `cause` | failed connection attempts (TCP or TLS); see [`failure_cause`] |
//! | `pylon_upstream_node_healthy` | gauge | `upstream`, `node` | 1 healthy, 0 unhealthy: every node of every upstream; health checks move it through [`set_node_health`] |
//! | `pylon_certificate_expiry_timestamp_seconds` | gauge | `kind` (`ssl`, `ca_certificate`), `id` | earliest `notAfter` of the object's certificates, Unix time |
//! | `pylon_config_reloads_total` | counter | `result` (`ok`, `failed`) | resources-file reloads |
//! | `pylon_config_version` | gauge | | version of the configuration serving now (1 at start) |
//! | `pylon_http_connections_open` | gauge | | client connections open on the proxy listeners |
//! | `pylon_access_log_dropped_total` | counter | | access-log lines dropped because the writer fell behind |
//!
//! The metrics live in one registry created by [`init`]; before it (and in unit tests) every
//! recording function does nothing.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use log::warn;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::{Error, ErrorType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::inventory::Inventory;
use crate::table::{Route, Table};

/// Latency buckets in seconds: finer than Prometheus' defaults at the low end, where a
/// gateway spends its time.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    connect_failures: IntCounterVec,
    node_healthy: IntGaugeVec,
    cert_expiry: IntGaugeVec,
    reloads: IntCounterVec,
    config_version: IntGauge,
    connections: IntGauge,
    access_log_dropped: IntCounter,
    etcd_connected: IntGauge,
    skipped_items: IntGauge,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

fn histogram(name: &str, help: &str, label: &str) -> prometheus::Result<HistogramVec> {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        &[label],
    )
}

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let m = Metrics {
            registry: Registry::new(),
            requests: IntCounterVec::new(
                Opts::new("pylon_http_requests_total", "HTTP requests answered."),
                &["route", "status"],
            )?,
            request_duration: histogram(
                "pylon_http_request_duration_seconds",
                "Time from the start of a request to its end, in seconds.",
                "route",
            )?,
            upstream_duration: histogram(
                "pylon_upstream_response_duration_seconds",
                "Time from the first upstream connection attempt to the end of the upstream \
                 response, in seconds.",
                "upstream",
            )?,
            connect_failures: IntCounterVec::new(
                Opts::new(
                    "pylon_upstream_connect_failures_total",
                    "Failed upstream connection attempts (TCP or TLS), by cause.",
                ),
                &["upstream", "cause"],
            )?,
            node_healthy: IntGaugeVec::new(
                Opts::new(
                    "pylon_upstream_node_healthy",
                    "1 when the node is considered healthy, 0 when not.",
                ),
                &["upstream", "node"],
            )?,
            cert_expiry: IntGaugeVec::new(
                Opts::new(
                    "pylon_certificate_expiry_timestamp_seconds",
                    "Earliest notAfter of the certificates of an ssl or CA certificate object, \
                     as Unix time.",
                ),
                &["kind", "id"],
            )?,
            reloads: IntCounterVec::new(
                Opts::new(
                    "pylon_config_reloads_total",
                    "Reloads of the resources file, by result (ok, failed).",
                ),
                &["result"],
            )?,
            config_version: IntGauge::new(
                "pylon_config_version",
                "Version of the configuration now serving (1 at start, +1 per applied reload).",
            )?,
            connections: IntGauge::new(
                "pylon_http_connections_open",
                "Client connections open on the proxy listeners.",
            )?,
            access_log_dropped: IntCounter::new(
                "pylon_access_log_dropped_total",
                "Access-log lines dropped because the writer could not keep up.",
            )?,
            etcd_connected: IntGauge::new(
                "pylon_etcd_connected",
                "1 while etcd answers and is watched, 0 while it does not (config_provider: \
                 etcd; the last applied configuration keeps serving).",
            )?,
            skipped_items: IntGauge::new(
                "pylon_config_skipped_items",
                "Items of the configuration source not applied as stored (invalid, or refer \
                 to something missing): held at their previous value or left out.",
            )?,
        };
        let r = &m.registry;
        r.register(Box::new(m.requests.clone()))?;
        r.register(Box::new(m.request_duration.clone()))?;
        r.register(Box::new(m.upstream_duration.clone()))?;
        r.register(Box::new(m.connect_failures.clone()))?;
        r.register(Box::new(m.node_healthy.clone()))?;
        r.register(Box::new(m.cert_expiry.clone()))?;
        r.register(Box::new(m.reloads.clone()))?;
        r.register(Box::new(m.config_version.clone()))?;
        r.register(Box::new(m.connections.clone()))?;
        r.register(Box::new(m.access_log_dropped.clone()))?;
        r.register(Box::new(m.etcd_connected.clone()))?;
        r.register(Box::new(m.skipped_items.clone()))?;
        for result in ["ok", "failed"] {
            m.reloads.with_label_values(&[result]);
        }
        Ok(m)
    }
}

/// Creates the registry and every metric. Call once at start; later calls do nothing.
///
/// Errors: a metric definition the `prometheus` crate rejects (a programming error).
pub fn init() -> prometheus::Result<()> {
    if METRICS.get().is_none() {
        let _ = METRICS.set(Metrics::new()?);
    }
    Ok(())
}

/// Status codes as label text, made once.
static STATUS_TEXT: LazyLock<Vec<String>> =
    LazyLock::new(|| (0..1000).map(|c| c.to_string()).collect());

fn status_text(code: u16) -> &'static str {
    STATUS_TEXT
        .get(usize::from(code))
        .map_or("other", String::as_str)
}

/// Statuses whose per-route counters are cached in [`RouteHandles`].
const CACHED_STATUSES: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 429, 499, 500, 502, 503, 504,
];

/// A route's metric handles, looked up in the metric families on first use and then kept with
/// the compiled route: recording a request on a route takes no lock and hashes no labels
/// (the `prometheus` crate's label lookup takes a read lock on every call).
#[derive(Default)]
pub struct RouteHandles {
    duration: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
    by_status: [OnceLock<IntCounter>; CACHED_STATUSES.len()],
}

impl std::fmt::Debug for RouteHandles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteHandles")
    }
}

/// Records one finished request on a matched route, through the route's cached handles.
pub fn route_request(route: &Route, status: u16, total: Duration, upstream: Option<Duration>) {
    let Some(m) = METRICS.get() else { return };
    let h = &route.metrics;
    match CACHED_STATUSES.iter().position(|&s| s == status) {
        Some(i) => {
            let c = h.by_status[i].get_or_init(|| {
                m.requests
                    .with_label_values(&[route.id.as_str(), status_text(status)])
            });
            c.inc();
        }
        None => request_counter(m, &route.id, status),
    }
    h.duration
        .get_or_init(|| m.request_duration.with_label_values(&[route.id.as_str()]))
        .observe(total.as_secs_f64());
    if let Some(d) = upstream {
        h.upstream
            .get_or_init(|| {
                m.upstream_duration
                    .with_label_values(&[route.upstream.id.as_str()])
            })
            .observe(d.as_secs_f64());
    }
}

fn request_counter(m: &Metrics, route: &str, status: u16) {
    if let Ok(c) = m
        .requests
        .get_metric_with_label_values(&[route, status_text(status)])
    {
        c.inc();
    }
}

/// Records one finished request: count by route and status, total duration by route, and the
/// upstream's response duration when there was one. Used when no route matched (route `""`);
/// matched routes go through [`route_request`].
pub fn request(route: &str, status: u16, total: Duration, upstream: Option<(&str, Duration)>) {
    let Some(m) = METRICS.get() else { return };
    if let Ok(c) = m
        .requests
        .get_metric_with_label_values(&[route, status_text(status)])
    {
        c.inc();
    }
    if let Ok(h) = m.request_duration.get_metric_with_label_values(&[route]) {
        h.observe(total.as_secs_f64());
    }
    if let Some((id, d)) = upstream {
        if let Ok(h) = m.upstream_duration.get_metric_with_label_values(&[id]) {
            h.observe(d.as_secs_f64());
        }
    }
}

/// The `cause` label for a failed upstream connection attempt: `refused`, `timeout`,
/// `no_route`, `tls_handshake`, `tls_timeout`, `tls_certificate` (verification failed),
/// `h2_handshake` (the HTTP/2 handshake after connecting), `closed` or `other`.
pub fn failure_cause(e: &Error) -> &'static str {
    match e.etype() {
        ErrorType::ConnectRefused => "refused",
        ErrorType::ConnectTimedout => "timeout",
        ErrorType::ConnectNoRoute => "no_route",
        ErrorType::TLSHandshakeFailure => "tls_handshake",
        ErrorType::HandshakeError => "h2_handshake",
        ErrorType::TLSHandshakeTimedout => "tls_timeout",
        ErrorType::InvalidCert => "tls_certificate",
        ErrorType::ConnectionClosed => "closed",
        _ => "other",
    }
}

/// Counts a failed connection attempt to `upstream` with the given cause label.
pub fn upstream_failure(upstream: &str, cause: &str) {
    if let Some(m) = METRICS.get() {
        if let Ok(c) = m
            .connect_failures
            .get_metric_with_label_values(&[upstream, cause])
        {
            c.inc();
        }
    }
}

/// Sets the health gauge of one node (`node` is its `host:port` label). For health checks.
pub fn set_node_health(upstream: &str, node: &str, healthy: bool) {
    if let Some(m) = METRICS.get() {
        if let Ok(g) = m
            .node_healthy
            .get_metric_with_label_values(&[upstream, node])
        {
            g.set(i64::from(healthy));
        }
    }
}

/// Publishes what a newly applied configuration holds: its version, the health of every node
/// of every upstream (nodes start healthy; nodes no longer configured disappear), and
/// certificate expiry.
pub fn config_applied(version: u64, table: &Table, inventory: &Inventory) {
    let Some(m) = METRICS.get() else { return };
    m.config_version
        .set(i64::try_from(version).unwrap_or(i64::MAX));
    m.node_healthy.reset();
    for up in &table.upstreams {
        for node in &up.nodes {
            if let Ok(g) = m
                .node_healthy
                .get_metric_with_label_values(&[&up.id, &node.label])
            {
                g.set(i64::from(node.health.is_healthy()));
            }
        }
    }
    m.cert_expiry.reset();
    for e in &inventory.cert_expiry {
        if let Ok(g) = m
            .cert_expiry
            .get_metric_with_label_values(&[e.kind.label(), &e.id])
        {
            g.set(e.not_after);
        }
    }
}

/// Counts a reload attempt of the resources file.
pub fn reload_result(ok: bool) {
    if let Some(m) = METRICS.get() {
        m.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }
}

/// Sets whether etcd answers (`pylon_etcd_connected`).
pub fn etcd_connected(up: bool) {
    if let Some(m) = METRICS.get() {
        m.etcd_connected.set(i64::from(up));
    }
}

/// Sets how many items are skipped now (`pylon_config_skipped_items`).
pub fn skipped_items(n: usize) {
    if let Some(m) = METRICS.get() {
        m.skipped_items.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Adds `delta` (±1) to the open-connections gauge.
pub fn connections_add(delta: i64) {
    if let Some(m) = METRICS.get() {
        m.connections.add(delta);
    }
}

/// Counts one access-log line dropped.
pub fn access_log_dropped() {
    if let Some(m) = METRICS.get() {
        m.access_log_dropped.inc();
    }
}

/// The registry's current state in Prometheus' text format.
pub fn render() -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(m) = METRICS.get() {
        if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
            warn!("metrics: cannot encode: {e}");
        }
    }
    out
}

/// Reads `gateway.metrics_listen`: `host:port`, or a bare port meaning `127.0.0.1:port`.
///
/// Errors: the text is neither (message for the config problem).
pub fn listen_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = text.trim().parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| {
        format!("{text:?} is not host:port (e.g. 127.0.0.1:9091) or a port number (loopback)")
    })
}

/// The `/metrics` HTTP application: `GET /metrics` answers the text format, any other path
/// 404.
pub struct MetricsApp;

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        session.set_pipelining_enabled(true);
        let (status, ctype, body) = if session.req_header().uri.path() == "/metrics" {
            (200, "text/plain; version=0.0.4; charset=utf-8", render())
        } else {
            (404, "text/plain", b"not found: try /metrics\n".to_vec())
        };
        super::http_response(status, ctype, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_forms() {
        assert_eq!(listen_addr("9091").unwrap().to_string(), "127.0.0.1:9091");
        assert_eq!(
            listen_addr("0.0.0.0:9091").unwrap().to_string(),
            "0.0.0.0:9091"
        );
        assert_eq!(listen_addr("[::1]:9091").unwrap().to_string(), "[::1]:9091");
        assert!(listen_addr("localhost").is_err());
    }

    #[test]
    fn causes() {
        let e = Error::new(ErrorType::ConnectRefused);
        assert_eq!(failure_cause(&e), "refused");
        let e = Error::new(ErrorType::InvalidCert);
        assert_eq!(failure_cause(&e), "tls_certificate");
    }

    #[test]
    fn status_labels() {
        assert_eq!(status_text(200), "200");
        assert_eq!(status_text(1200), "other");
    }
}
