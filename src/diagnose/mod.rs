//! `pylon probe`: why a connection to an upstream fails, and which field to change.
//!
//! Not to be confused with [`crate::upstream::probe`], the active health checks that run
//! inside the gateway: this module is the operator's diagnosis tool, run on demand from the
//! command line (`pylon probe`) or the admin API (`GET /apisix/admin/upstreams/<id>/probe`).
//!
//! For every node of the chosen upstreams it connects exactly as the proxy would, from the
//! compiled [`Table`]: the node's prebuilt peer (address, SNI from `tls.sni` or the
//! `pass_host` rules, client certificate chain and key, CA bundle, verify flag, ALPN) and the
//! upstream's timeouts (or the route's, with `--route`). [`connect`] does the connection with
//! OpenSSL directly, observing every step; [`verdict`] turns the observations into
//! [`Finding`]s in plain words, each naming the field to change ([`naming`]); the result is a
//! [`Report`] (`docs/probe.md` describes its JSON shape).
//!
//! Nothing here runs on the request path.

mod connect;
mod http;
pub mod naming;
pub mod report;
pub mod text;
mod verdict;

use std::sync::Arc;
use std::time::Duration;

use pingora_core::upstreams::peer::{HttpPeer, ALPN};
use thiserror::Error;

use crate::config::model;
use crate::router::host_without_port;
use crate::table::Table;
use crate::upstream::health::ProbeKind;
use crate::upstream::{PassHost, SniSource, Upstream};
pub use naming::{Naming, Style};
pub use report::{Finding, NodeReport, Report, Severity, UpstreamReport};

/// Why nothing could be probed.
#[derive(Debug, Error)]
pub enum DiagnoseError {
    /// `--upstream` names no upstream.
    #[error("no upstream with id {0:?}")]
    NoUpstream(String),
    /// `--route` names no route (or one without an upstream).
    #[error("no route with id {0:?} (or it has no upstream)")]
    NoRoute(String),
}

/// Which upstreams to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every upstream in use.
    All,
    /// The upstream with this id.
    Upstream(String),
    /// The upstream of the route with this id (`routes[N]` for one without), with the
    /// route's `timeout`.
    Route(String),
}

/// Probe settings.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The client `Host` header to assume where the proxy passes it on (`pass_host: pass`),
    /// which is also where the SNI comes from when `tls.sni` is not set. Default: the node's
    /// `host[:port]`.
    pub host: Option<String>,
}

/// Nodes probed at the same time, at most.
const PARALLEL: usize = 16;

/// Probes the selected upstreams of `table`; field names come from `naming`.
///
/// Errors: [`DiagnoseError`] when the selection names nothing.
pub fn probe(
    table: &Table,
    naming: &Naming,
    selection: &Selection,
    options: &Options,
) -> Result<Report, DiagnoseError> {
    let (wanted, route_timeouts) = match selection {
        Selection::All => (None, None),
        Selection::Upstream(id) => (Some(id.clone()), None),
        Selection::Route(id) => {
            let (up, t) = naming
                .route(id)
                .ok_or_else(|| DiagnoseError::NoRoute(id.clone()))?;
            (Some(up), t)
        }
    };
    let chosen: Vec<&Arc<Upstream>> = table
        .upstreams
        .iter()
        .filter(|u| !u.nodes.is_empty())
        .filter(|u| wanted.as_ref().is_none_or(|w| &u.id == w))
        .collect();
    if let (Some(w), true) = (&wanted, chosen.is_empty()) {
        return Err(match selection {
            Selection::Route(r) => DiagnoseError::NoRoute(r.clone()),
            _ => DiagnoseError::NoUpstream(w.clone()),
        });
    }
    let mut upstreams = Vec::new();
    for up in chosen
        .into_iter()
        .take(if wanted.is_some() { 1 } else { usize::MAX })
    {
        let names = naming.upstream(&up.id);
        let timeouts = route_timeouts.as_ref().map(|t| t.over(up.timeouts));
        let plans: Vec<NodePlan> = (0..up.nodes.len())
            .map(|i| plan(up, i, &names, timeouts, options))
            .collect();
        let mut facts = Vec::new();
        for batch in plans.chunks(PARALLEL) {
            std::thread::scope(|s| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|p| s.spawn(|| connect::probe(&p.plan)))
                    .collect();
                for h in handles {
                    facts.push(h.join().ok());
                }
            });
        }
        let mut nodes = Vec::new();
        for (i, (p, f)) in plans.iter().zip(facts).enumerate() {
            let Some(f) = f else { continue };
            let cx = verdict::Context {
                names: &names,
                index: i,
                label: &up.nodes[i].label,
                tls: up.tls,
                sni_from_request: p.sni_from_request,
                host_header: &p.plan.host_header,
                path: &p.plan.path,
                connect_timeout: p.plan.connect_timeout,
            };
            let findings = verdict::findings(&cx, &f);
            let healthy = !findings.iter().any(|f| f.severity == Severity::Error);
            nodes.push(NodeReport {
                node: up.nodes[i].label.clone(),
                field: names.node_field(i, ""),
                healthy,
                verdict: verdict::verdict(&findings),
                dns: f.dns,
                tcp: f.tcp,
                tls: f.tls,
                http: f.http,
                findings,
            });
        }
        upstreams.push(UpstreamReport {
            id: up.id.clone(),
            field: names.field(""),
            scheme: if up.tls { "https" } else { "http" },
            healthy: nodes.iter().all(|n| n.healthy),
            nodes,
        });
    }
    Ok(Report {
        healthy: upstreams.iter().all(|u| u.healthy),
        upstreams,
    })
}

/// The probe of upstream `id` for the admin API: `value` is the upstream object as the API
/// holds it (for the field names).
///
/// Errors: [`DiagnoseError::NoUpstream`].
pub fn admin_report(
    table: &Table,
    id: &str,
    value: &serde_json::Value,
) -> Result<Report, DiagnoseError> {
    let naming = serde_json::from_value::<model::Upstream>(value.clone())
        .map(|u| Naming::single(id, &u))
        .unwrap_or_default();
    probe(
        table,
        &naming,
        &Selection::Upstream(id.to_string()),
        &Options::default(),
    )
}

/// `; run `pylon probe -c CONF --route ID` for the cause and the fix`, appended to the
/// proxy's error line after a 502 from a TLS upstream. Arguments are quoted for a POSIX
/// shell when they hold anything but `A-Za-z0-9_.,:/=+@-`.
pub fn command_hint(conf: &str, route: &str) -> String {
    fn quote(s: &str) -> String {
        let plain = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.,:/=+@-".contains(c));
        if plain {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    }
    format!(
        "; run `pylon probe -c {} --route {}` for the cause and the fix",
        quote(conf),
        quote(route)
    )
}

struct NodePlan {
    plan: connect::Plan,
    sni_from_request: bool,
}

/// ALPN in wire format as Pingora offers it.
fn alpn_wire(alpn: &ALPN) -> Option<&'static [u8]> {
    match alpn {
        ALPN::H1 => Some(b"\x08http/1.1"),
        ALPN::H2 => Some(b"\x02h2"),
        ALPN::H2H1 => Some(b"\x02h2\x08http/1.1"),
        _ => None,
    }
}

fn plan(
    up: &Upstream,
    i: usize,
    names: &naming::UpstreamNames,
    timeouts: Option<crate::upstream::Timeouts>,
    options: &Options,
) -> NodePlan {
    let node = &up.nodes[i];
    let mut peer = HttpPeer::clone(&node.peer.load());
    if let Some(t) = &timeouts {
        crate::upstream::peer::apply_timeouts(&mut peer, t);
    }
    let (host, port) = match &node.dns_name {
        Some((h, p)) => (h.clone(), *p),
        None => match node.label.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().unwrap_or(0)),
            None => (node.label.clone(), 0),
        },
    };
    let active = up
        .health
        .as_ref()
        .and_then(|h| h.active.as_ref())
        .filter(|a| a.kind != ProbeKind::Tcp);
    let node_host = node.host_header.to_str().unwrap_or_default().to_string();
    let host_header = match &up.pass_host {
        PassHost::Node => node_host,
        PassHost::Rewrite(v) => v.to_str().unwrap_or_default().to_string(),
        PassHost::Pass => options
            .host
            .clone()
            .or_else(|| active.and_then(|a| a.host.clone()))
            .unwrap_or(node_host),
    };
    let sni_from_request = up.tls && up.sni == SniSource::RequestHost;
    let mut sni = peer.sni.clone();
    if sni_from_request {
        let name = host_without_port(&host_header).trim_end_matches('.');
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_err() {
            sni = name.to_string();
        }
    }
    let opts = &peer.options;
    let tls = up.tls.then(|| {
        let trusted = match (&opts.ca, &names.ca) {
            (Some(ca), named) => {
                let subjects: Vec<String> = ca
                    .iter()
                    .map(|c| connect::name_text(c.subject_name()))
                    .collect();
                let label = named
                    .as_ref()
                    .map_or("the configured CA bundle".to_string(), |n| n.label.clone());
                format!("{label} ({})", subjects.join("; "))
            }
            (None, _) => "the system CA store".to_string(),
        };
        connect::TlsPlan {
            sni,
            verify: opts.verify_cert,
            client_cert: peer.client_cert_key.clone(),
            ca: opts.ca.clone(),
            alpn: alpn_wire(&opts.alpn),
            trusted,
            client_cert_source: names
                .client_cert
                .as_ref()
                .map_or("the configured client certificate".into(), |c| {
                    c.label.clone()
                }),
        }
    });
    let sixty = Duration::from_secs(60);
    let ip_literal = node.dns_name.is_none();
    let addr = node
        .resolved
        .load(std::sync::atomic::Ordering::Relaxed)
        .then(|| peer._address.as_inet().copied())
        .flatten();
    NodePlan {
        plan: connect::Plan {
            host,
            ip_literal,
            port,
            addr,
            tls,
            host_header,
            path: active.map_or("/".to_string(), |a| a.path.clone()),
            connect_timeout: opts.connection_timeout.unwrap_or(sixty),
            read_timeout: opts.read_timeout.unwrap_or(sixty),
            write_timeout: opts.write_timeout.unwrap_or(sixty),
        },
        sni_from_request,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_quotes_what_a_shell_would_split() {
        assert_eq!(
            command_hint("conf/pylon.yaml", "hello"),
            "; run `pylon probe -c conf/pylon.yaml --route hello` for the cause and the fix"
        );
        assert_eq!(
            command_hint("/etc/my pylon/p.yaml", "routes[0]"),
            "; run `pylon probe -c '/etc/my pylon/p.yaml' --route 'routes[0]'` for the cause and the fix"
        );
        assert!(command_hint("c", "it's").contains("'it'\\''s'"));
    }
}
