//! The upstream maintenance background service: active health probes and re-resolution of
//! node host names. It reads the current [`Table`] on every tick, so a reload brings its
//! upstreams under watch without restarting anything; nothing here runs on the request path.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::warn;
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::{HttpPeer, Peer, Scheme};
use pingora_http::RequestHeader;

use super::grpc_health;
use super::health::{ActiveCheck, Outcome, ProbeKind};
use super::select::log_change;
use super::{PassHost, Upstream};
use crate::table::Table;

/// How often the service looks for due probes.
pub const TICK: Duration = Duration::from_millis(100);
/// How often node host names are resolved again.
pub const DNS_REFRESH: Duration = Duration::from_secs(30);

/// Runs active checks and DNS refresh for every upstream of the current table.
#[derive(Clone)]
pub struct Maintenance {
    table: Arc<ArcSwap<Table>>,
    connector: Arc<Connector>,
    epoch: Instant,
}

impl Maintenance {
    /// A service watching `table`.
    pub fn new(table: Arc<ArcSwap<Table>>) -> Self {
        Maintenance {
            table,
            connector: Arc::new(Connector::new(None)),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Starts the probes that are due.
    fn probe_due(&self) {
        let table = self.table.load_full();
        let now = self.now_ms();
        for up in &table.upstreams {
            let Some(active) = up.health.as_ref().and_then(|h| h.active.as_ref()) else {
                continue;
            };
            for (i, node) in up.nodes.iter().enumerate() {
                let h = &node.health;
                if node.weight == 0
                    || !node.resolved.load(Ordering::Relaxed)
                    || h.next_probe_ms.load(Ordering::Relaxed) > now
                    || h.probing.swap(true, Ordering::Relaxed)
                {
                    continue;
                }
                let (up, active, connector) = (up.clone(), active.clone(), self.connector.clone());
                let epoch = self.epoch;
                tokio::spawn(async move {
                    let outcome = probe(&connector, &up, i, &active).await;
                    let node = &up.nodes[i];
                    if let Some((healthy, why)) = node.health.record(outcome, &active.rules) {
                        log_change(&up.id, &node.label, healthy, &why, "active");
                    }
                    let interval = if node.health.is_healthy() {
                        active.healthy_interval
                    } else {
                        active.unhealthy_interval
                    };
                    let next = (epoch.elapsed() + interval).as_millis() as u64;
                    node.health.next_probe_ms.store(next, Ordering::Relaxed);
                    node.health.probing.store(false, Ordering::Relaxed);
                });
            }
        }
    }

    /// Resolves every named node again and swaps in a changed address.
    async fn refresh_dns(&self) {
        let table = self.table.load_full();
        for up in &table.upstreams {
            for node in &up.nodes {
                let Some((name, port)) = &node.dns_name else {
                    continue;
                };
                let addr = tokio::net::lookup_host((name.as_str(), *port))
                    .await
                    .ok()
                    .and_then(|mut a| a.next());
                match addr {
                    Some(addr) => {
                        node.resolved.store(true, Ordering::Relaxed);
                        let new = PeerAddr::Inet(addr);
                        if node.peer.load()._address != new {
                            let mut peer = HttpPeer::clone(&node.peer.load());
                            peer._address = new;
                            node.peer.store(Arc::new(peer));
                        }
                    }
                    // A failed lookup keeps the last good address (as nginx's resolver does
                    // until the TTL runs out); a node that never resolved stays skipped.
                    None => warn!(
                        "upstream {} node {}: {name} does not resolve; keeping the last address",
                        up.id, node.label
                    ),
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        let mut dns = tokio::time::interval(DNS_REFRESH);
        dns.tick().await; // names were resolved at load
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.probe_due(),
                _ = dns.tick() => {
                    // In its own task: a slow resolver must not hold up the probes.
                    let this = self.clone();
                    tokio::spawn(async move { this.refresh_dns().await });
                }
            }
        }
    }
}

/// One probe of node `i`.
async fn probe(connector: &Connector, up: &Upstream, i: usize, check: &ActiveCheck) -> Outcome {
    let node = &up.nodes[i];
    let mut peer = HttpPeer::clone(&node.peer.load());
    if let Some(port) = check.port {
        peer._address.set_port(port);
    }
    if check.kind == ProbeKind::Tcp {
        let addr = peer.address().as_inet().copied();
        let Some(addr) = addr else {
            return Outcome::TcpFailure;
        };
        return match tokio::time::timeout(check.timeout, tokio::net::TcpStream::connect(addr)).await
        {
            Ok(Ok(_)) => Outcome::Status(200),
            Ok(Err(_)) => Outcome::TcpFailure,
            Err(_) => Outcome::Timeout,
        };
    }
    let host = check
        .host
        .clone()
        .or_else(|| match &up.pass_host {
            PassHost::Rewrite(h) => h.to_str().ok().map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| node.host_header.to_str().unwrap_or("").to_string());
    // gRPC probes go over TLS when the upstream does (grpcs, or https with http2).
    let tls = match check.kind {
        ProbeKind::Https => true,
        ProbeKind::Grpc => up.tls,
        ProbeKind::Http | ProbeKind::Tcp => false,
    };
    if tls {
        peer.scheme = Scheme::HTTPS;
        if peer.sni.is_empty() {
            let name = crate::router::host_without_port(&host);
            if name.parse::<std::net::IpAddr>().is_err() {
                peer.sni = name.to_string();
            }
        }
        if !check.verify {
            peer.options.verify_cert = false;
            peer.options.verify_hostname = false;
        } else if peer.sni.is_empty() {
            // Pingora would skip verification for an empty SNI: fail the probe instead
            // (`pylon check` warns about this at load).
            return Outcome::TcpFailure;
        }
    } else {
        peer.scheme = Scheme::HTTP;
    }
    peer.options.connection_timeout = Some(check.timeout);
    peer.options.total_connection_timeout = Some(check.timeout);
    peer.options.read_timeout = Some(check.timeout);
    peer.options.write_timeout = Some(check.timeout);
    // gRPC probes speak HTTP/2 only, with one stream per connection so that the probe's
    // connection is not pooled: each probe makes a fresh connection and handshake, as http(s)
    // probes do. http(s) probes speak HTTP/1.1 whatever the upstream's version.
    if check.kind == ProbeKind::Grpc {
        super::peer::set_http_version(&mut peer, super::HttpVersion::H2);
        peer.options.max_h2_streams = 1;
    } else {
        super::peer::set_http_version(&mut peer, super::HttpVersion::H1);
    }
    let run = async {
        if check.kind == ProbeKind::Grpc {
            let (name, service) = (&host, &check.grpc_service);
            return grpc_health::check(connector, &peer, name, service, &check.headers).await;
        }
        let (mut session, _) = connector.get_http_session(&peer).await?;
        let mut req = RequestHeader::build("GET", check.path.as_bytes(), None)?;
        req.insert_header("host", host.as_str())?;
        req.insert_header("user-agent", "pylon-health-check")?;
        for (name, value) in &check.headers {
            req.append_header(name.clone(), value.as_str())?;
        }
        session.write_request_header(Box::new(req)).await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        Ok::<Outcome, Box<pingora_core::Error>>(Outcome::Status(
            session.response_header().map_or(0, |r| r.status.as_u16()),
        ))
    };
    match tokio::time::timeout(check.timeout, run).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e))
            if matches!(
                e.etype(),
                pingora_core::ErrorType::ConnectTimedout
                    | pingora_core::ErrorType::ReadTimedout
                    | pingora_core::ErrorType::TLSHandshakeTimedout
            ) =>
        {
            Outcome::Timeout
        }
        Ok(Err(_)) => Outcome::TcpFailure,
        Err(_) => Outcome::Timeout,
    }
}
