//! Compiles one upstream: balancer, nodes (resolved here, once), Host and SNI rules, and the
//! TLS settings (client certificate, CA bundle, verify) baked into each node's peer.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use openssl::x509::X509;

use super::compile::Ctx;
use super::model::{self, Nodes};
use crate::upstream::balancer::{Balancer, BalancerKind};
use crate::upstream::health::{NodeHealth, ProbeKind};
use crate::upstream::load::NodeLoad;
use crate::upstream::peer::{self, PeerTls};
use crate::upstream::{HttpVersion, Node, PassHost, SniSource, Timeouts, Upstream};

pub(super) fn seconds(cx: &mut Ctx, path: &str, value: Option<f64>, default: Duration) -> Duration {
    match value {
        None => default,
        Some(v) if v.is_finite() && v > 0.0 && v < 1e9 => Duration::from_secs_f64(v),
        Some(v) => {
            cx.problem(path, format!("{v} is not a positive number of seconds"));
            default
        }
    }
}

pub(super) fn timeouts(cx: &mut Ctx, path: &str, t: &model::Timeout, base: Timeouts) -> Timeouts {
    Timeouts {
        connect: seconds(cx, &format!("{path}.connect"), t.connect, base.connect),
        send: seconds(cx, &format!("{path}.send"), t.send, base.send),
        read: seconds(cx, &format!("{path}.read"), t.read, base.read),
    }
}

fn is_ip(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
}

/// Splits `host:port`, `[v6]:port`, `host` (port `None`).
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Some((host.to_string(), Some(port.parse().ok()?)))
        }
        Some(_) => Some((text.to_string(), None)), // bare IPv6
        None => Some((text.to_string(), None)),
    }
}

/// `scheme` and `http2`: whether the nodes are reached over TLS, and in which HTTP version.
/// `grpc`/`grpcs` are APISIX's names for HTTP/2 in cleartext and over TLS; `http2` (Pylon)
/// lets an `https` upstream negotiate HTTP/2.
fn scheme(
    cx: &mut Ctx,
    path: &str,
    scheme: Option<&str>,
    http2: Option<bool>,
) -> (bool, HttpVersion) {
    let (tls, http) = match scheme {
        None | Some("http") => (false, HttpVersion::H1),
        Some("https") if http2 == Some(true) => (true, HttpVersion::H2OrH1),
        Some("https") => (true, HttpVersion::H1),
        Some("grpc") => (false, HttpVersion::H2),
        Some("grpcs") => (true, HttpVersion::H2),
        Some(s) => {
            cx.problem(
                format!("{path}.scheme"),
                format!("{s:?} is not supported: use http, https, grpc or grpcs"),
            );
            (false, HttpVersion::H1)
        }
    };
    match (scheme.unwrap_or("http"), http2) {
        ("http", Some(_)) => cx.problem(
            format!("{path}.http2"),
            "only applies to scheme: https (for HTTP/2 in cleartext use scheme: grpc)",
        ),
        ("grpc" | "grpcs", Some(false)) => cx.problem(
            format!("{path}.http2"),
            "gRPC needs HTTP/2: remove http2: false or use scheme: http/https",
        ),
        _ => {}
    }
    (tls, http)
}

pub(super) fn compile_upstream(
    cx: &mut Ctx,
    path: &str,
    id: &str,
    u: &model::Upstream,
) -> Option<Upstream> {
    let before = cx.problems.len();
    let kind = match u.kind.as_deref() {
        None | Some("roundrobin") => BalancerKind::RoundRobin,
        Some("chash") => BalancerKind::Chash,
        Some("least_conn") => BalancerKind::LeastConn,
        Some("ewma") => BalancerKind::Ewma,
        Some(t) => {
            cx.problem(
                format!("{path}.type"),
                format!("{t:?} is not a balancer type: use roundrobin, chash, least_conn or ewma"),
            );
            BalancerKind::RoundRobin
        }
    };
    let hash_key = (kind == BalancerKind::Chash)
        .then(|| super::checks::hash_key(cx, path, u.hash_on.as_deref(), u.key.as_deref()))
        .flatten();
    let (tls, http) = scheme(cx, path, u.scheme.as_deref(), u.http2);
    let health = u.checks.as_ref().map(|c| {
        Arc::new(super::checks::compile_checks(
            cx,
            &format!("{path}.checks"),
            c,
        ))
    });
    let pass_host = match (u.pass_host.as_deref(), &u.upstream_host) {
        (None | Some("pass"), _) => PassHost::Pass,
        (Some("node"), _) => PassHost::Node,
        (Some("rewrite"), Some(h)) if !h.is_empty() => match http::HeaderValue::from_str(h) {
            Ok(v) => PassHost::Rewrite(v),
            Err(_) => {
                cx.problem(
                    format!("{path}.upstream_host"),
                    format!("{h:?} is not a valid Host value"),
                );
                PassHost::Pass
            }
        },
        (Some("rewrite"), _) => {
            cx.problem(
                format!("{path}.upstream_host"),
                "required with pass_host: rewrite",
            );
            PassHost::Pass
        }
        (Some(other), _) => {
            cx.problem(
                format!("{path}.pass_host"),
                format!("{other:?} is not valid: use pass, node or rewrite"),
            );
            PassHost::Pass
        }
    };
    let mut t = Timeouts::default();
    if let Some(tt) = &u.timeout {
        t = timeouts(cx, &format!("{path}.timeout"), tt, t);
    }
    let idle = u.keepalive_pool.and_then(|k| {
        if k.size.is_some() || k.requests.is_some() {
            cx.warn(
                format!("{path}.keepalive_pool"),
                "size and requests are not enforced per upstream (see gateway.upstream_keepalive_pool_size)",
            );
        }
        k.idle_timeout
            .map(|v| seconds(cx, &format!("{path}.keepalive_pool.idle_timeout"), Some(v), Duration::ZERO))
    });

    let retry_timeout = match u.retry_timeout {
        None => None,
        Some(0.0) => None,
        Some(v) => Some(seconds(
            cx,
            &format!("{path}.retry_timeout"),
            Some(v),
            Duration::ZERO,
        )),
    };
    let (peer_tls, tls_sni) = upstream_tls(cx, path, tls, u.tls.as_ref());
    let sni_source = match (&tls_sni, &pass_host) {
        (None, PassHost::Pass) => SniSource::RequestHost,
        _ => SniSource::Fixed,
    };

    let nodes: Vec<(String, String, Option<u16>, u32)> = match &u.nodes {
        Nodes::List(list) => list
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    format!("{path}.nodes[{i}]"),
                    n.host.clone(),
                    n.port,
                    n.weight,
                )
            })
            .collect(),
        Nodes::Map(map) => map
            .iter()
            .filter_map(|(key, &w)| match split_host_port(key) {
                Some((h, p)) => Some((format!("{path}.nodes.{key:?}"), h, p, w)),
                None => {
                    cx.problem(format!("{path}.nodes"), format!("{key:?} is not host:port"));
                    None
                }
            })
            .collect(),
    };
    if nodes.is_empty() {
        cx.problem(format!("{path}.nodes"), "at least one node is required");
    }
    // APISIX: 443 for https and grpcs, 80 otherwise.
    let default_port = if tls { 443 } else { 80 };
    let mut compiled = Vec::new();
    let mut unnamed = Vec::new();
    for (npath, host, port, weight) in &nodes {
        let port = port.unwrap_or(default_port);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        // Resolved once here; names are re-resolved in the background, never per request.
        let resolved = (bare, port).to_socket_addrs().map(|mut a| a.next());
        let addr = match resolved {
            Ok(Some(a)) => Some(a),
            Ok(None) => {
                cx.warn(
                    format!("{npath}.host"),
                    format!("{host:?} has no address: node skipped until it resolves"),
                );
                None
            }
            Err(e) => {
                cx.warn(
                    format!("{npath}.host"),
                    format!("cannot resolve {host:?} ({e}): node skipped until it resolves"),
                );
                None
            }
        };
        if port == 0 {
            cx.problem(format!("{npath}.port"), "must be 1-65535");
        }
        let host_part = if bare.contains(':') {
            format!("[{bare}]")
        } else {
            bare.to_string()
        };
        let host_text = if port == default_port {
            host_part.clone()
        } else {
            format!("{host_part}:{port}")
        };
        let Ok(host_header) = http::HeaderValue::from_str(&host_text) else {
            cx.problem(
                format!("{npath}.host"),
                format!("{host:?} is not a valid host name"),
            );
            continue;
        };
        let sni = match (&tls_sni, &pass_host) {
            (Some(s), _) => s.clone(),
            (None, PassHost::Node) if !is_ip(bare) => bare.to_string(),
            (None, PassHost::Rewrite(h)) => {
                let name = crate::router::host_without_port(h.to_str().unwrap_or(""));
                if is_ip(name) {
                    String::new()
                } else {
                    name.to_string()
                }
            }
            _ => String::new(),
        };
        if tls && peer_tls.verify && sni_source == SniSource::Fixed && sni.is_empty() {
            unnamed.push(format!("{host_part}:{port}"));
        }
        let placeholder = SocketAddr::from(([0, 0, 0, 0], port));
        let mut p = peer::build(
            addr.unwrap_or(placeholder),
            tls.then_some(&peer_tls),
            &sni,
            &t,
            http,
        );
        p.options.idle_timeout = idle;
        compiled.push(Node {
            label: format!("{host_part}:{port}"),
            host_header,
            peer: ArcSwap::from_pointee(p),
            resolved: AtomicBool::new(addr.is_some()),
            dns_name: (!is_ip(bare)).then(|| (bare.to_string(), port)),
            weight: *weight,
            health: NodeHealth::default(),
            load: NodeLoad::default(),
            h2_connect: Arc::default(),
        });
    }
    let all_ip = nodes.iter().all(|(_, host, _, _)| is_ip(host));
    if tls && peer_tls.verify && sni_source == SniSource::RequestHost && all_ip {
        cx.warn(
            format!("{path}.tls.sni"),
            "not set, so the SNI (and the name verified) is the client's Host: requests whose Host is an IP address (e.g. curl http://127.0.0.1:9080/…) will get 502; set tls.sni to the upstream's certificate name",
        );
    }
    if !unnamed.is_empty() {
        cx.warn(
            format!("{path}.tls.sni"),
            format!(
                "no host name to verify for node(s) {}: requests will fail with 502; set tls.sni or upstream_host",
                unnamed.join(", ")
            ),
        );
    }
    if let Some(a) = health.as_ref().and_then(|h| h.active.as_ref()) {
        let over_tls = a.kind == ProbeKind::Https || (a.kind == ProbeKind::Grpc && tls);
        if over_tls && a.verify {
            let unnamed: Vec<&str> = compiled
                .iter()
                .filter(|n| {
                    let probe_host = a.host.as_deref().or(match &pass_host {
                        PassHost::Rewrite(h) => h.to_str().ok(),
                        _ => None,
                    });
                    let name = crate::router::host_without_port(
                        probe_host.unwrap_or(n.host_header.to_str().unwrap_or("")),
                    );
                    n.peer.load().sni.is_empty() && is_ip(name)
                })
                .map(|n| n.label.as_str())
                .collect();
            if !unnamed.is_empty() {
                cx.warn(
                    format!("{path}.checks.active.host"),
                    format!(
                        "TLS probes of node(s) {} have no host name to verify and will fail: set checks.active.host or tls.sni",
                        unnamed.join(", ")
                    ),
                );
            }
        }
    }
    let weights: Vec<u32> = compiled.iter().map(|n| n.weight).collect();
    let selectable = weights.iter().filter(|&&w| w > 0).count();
    let ids: Vec<String> = compiled.iter().map(|n| n.label.clone()).collect();
    let balancer = Balancer::new(kind, &ids, &weights);
    if balancer.is_none() && !compiled.is_empty() {
        cx.problem(
            format!("{path}.nodes"),
            "every node has weight 0: no node can be selected",
        );
    }
    if cx.problems.len() > before {
        return None;
    }
    Some(Upstream {
        id: id.to_string(),
        nodes: compiled,
        balancer: balancer?,
        hash_key,
        health,
        all_down: AtomicBool::new(false),
        pass_host,
        tls,
        http,
        verify: tls && peer_tls.verify,
        sni: sni_source,
        timeouts: t,
        retries: u.retries.unwrap_or(selectable.saturating_sub(1) as u32),
        retry_timeout,
    })
}

/// Resolves `tls` into the peer settings and the `tls.sni` override.
fn upstream_tls(
    cx: &mut Ctx,
    path: &str,
    https: bool,
    t: Option<&model::UpstreamTls>,
) -> (PeerTls, Option<String>) {
    let default = PeerTls {
        verify: true,
        ..PeerTls::default()
    };
    let Some(t) = t else {
        return (default, None);
    };
    let tp = format!("{path}.tls");
    if !https {
        cx.warn(
            &tp,
            "ignored: the upstream's scheme is cleartext (set scheme: https or grpcs)",
        );
    }
    let mut out = PeerTls {
        verify: t.verify.unwrap_or(true),
        ..PeerTls::default()
    };
    match (&t.client_cert_id, &t.client_cert, &t.client_key) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => cx.problem(
            format!("{tp}.client_cert_id"),
            "give either client_cert_id or client_cert/client_key, not both",
        ),
        (Some(id), None, None) => match cx.client_certs.get(&id.to_string()) {
            None => cx.problem(
                format!("{tp}.client_cert_id"),
                format!("no ssl with id {:?}", id.to_string()),
            ),
            Some((false, _)) => cx.problem(
                format!("{tp}.client_cert_id"),
                format!(
                    "ssl {:?} has type server; a client certificate needs type: client",
                    id.to_string()
                ),
            ),
            // A broken ssl object was reported at its own path.
            Some((true, ck)) => out.client_cert = ck.clone(),
        },
        (None, Some(c), Some(k)) => {
            out.client_cert = cx.cert_key(
                (&format!("{tp}.client_cert"), c),
                (&format!("{tp}.client_key"), k),
                t.client_key_passphrase.as_deref(),
                "client_key_passphrase",
            )
        }
        (None, Some(_), None) => {
            cx.problem(format!("{tp}.client_key"), "required with client_cert")
        }
        (None, None, Some(_)) => {
            cx.problem(format!("{tp}.client_cert"), "required with client_key")
        }
        (None, None, None) => {}
    }
    let mut bundle: Vec<X509> = Vec::new();
    let mut any_ca = false;
    if let Some(id) = &t.ca_certificate_id {
        any_ca = true;
        match cx.cas.get(&id.to_string()) {
            Some(Some(certs)) => bundle.extend(certs.iter().cloned()),
            Some(None) => {} // reported at the CA certificate's own path
            None => cx.problem(
                format!("{tp}.ca_certificate_id"),
                format!("no ca_certificate with id {:?}", id.to_string()),
            ),
        }
    }
    for (i, pem) in t.ca_certs.iter().flatten().enumerate() {
        any_ca = true;
        if let Some(certs) = cx.certs(&format!("{tp}.ca_certs[{i}]"), pem) {
            bundle.extend(certs);
        }
    }
    if any_ca && !bundle.is_empty() {
        out.ca = Some(Arc::new(bundle.into_boxed_slice()));
    }
    if !out.verify && any_ca {
        cx.warn(format!("{tp}.verify"), "false: the CA bundle is not used");
    }
    let sni = t.sni.as_ref().and_then(|s| {
        if is_ip(s) {
            cx.problem(
                format!("{tp}.sni"),
                format!("{s:?} is an IP address; SNI must be a host name"),
            );
            None
        } else if s.is_empty() {
            None
        } else {
            Some(s.clone())
        }
    });
    (out, sni)
}
