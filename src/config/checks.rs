//! Compiles `upstreams[].checks` (APISIX `health_checker`) and the chash key
//! (`hash_on` + `key`).

use std::time::Duration;

use super::compile::Ctx;
use super::model;
use super::upstream::seconds;
use crate::upstream::health::{
    default_active_rules, default_passive_rules, ActiveCheck, HealthConfig, ProbeKind, Rules,
};
use crate::upstream::HashKey;

fn statuses(cx: &mut Ctx, path: &str, list: &Option<Vec<u16>>, default: Vec<u16>) -> Vec<u16> {
    match list {
        None => default,
        Some(l) => {
            if let Some(bad) = l.iter().find(|c| !(200..=599).contains(*c)) {
                cx.problem(path, format!("{bad} is not an HTTP status (200-599)"));
            }
            l.clone()
        }
    }
}

/// Compiles `checks` at `path`.
pub(super) fn compile_checks(cx: &mut Ctx, path: &str, c: &model::Checks) -> HealthConfig {
    let active = c.active.as_ref().map(|a| {
        let ap = format!("{path}.active");
        let kind = match a.kind.as_deref() {
            None | Some("http") => ProbeKind::Http,
            Some("https") => ProbeKind::Https,
            Some("tcp") => ProbeKind::Tcp,
            Some("grpc") => ProbeKind::Grpc,
            Some(other) => {
                cx.problem(
                    format!("{ap}.type"),
                    format!("{other:?} is not valid: use http, https, tcp or grpc"),
                );
                ProbeKind::Http
            }
        };
        let d = default_active_rules();
        let h = a.healthy.clone().unwrap_or_default();
        let u = a.unhealthy.clone().unwrap_or_default();
        let one = Duration::from_secs(1);
        let mut headers = Vec::new();
        for (i, line) in a.req_headers.iter().flatten().enumerate() {
            match line.split_once(':') {
                Some((name, value)) if !name.trim().is_empty() => {
                    headers.push((name.trim().to_string(), value.trim().to_string()))
                }
                _ => cx.problem(
                    format!("{ap}.req_headers[{i}]"),
                    format!("{line:?} is not \"Name: value\""),
                ),
            }
        }
        if a.grpc_service.is_some() && kind != ProbeKind::Grpc {
            cx.warn(
                format!("{ap}.grpc_service"),
                "ignored: only grpc probes send it (set type: grpc)",
            );
        }
        let path_ok = a.http_path.as_deref().unwrap_or("/");
        if !path_ok.starts_with('/') {
            cx.problem(format!("{ap}.http_path"), "must start with \"/\"");
        }
        ActiveCheck {
            kind,
            timeout: seconds(cx, &format!("{ap}.timeout"), a.timeout, one),
            host: a.host.clone(),
            port: a.port,
            path: path_ok.to_string(),
            grpc_service: a.grpc_service.clone().unwrap_or_default(),
            verify: a.https_verify_certificate.unwrap_or(true),
            headers,
            healthy_interval: seconds(cx, &format!("{ap}.healthy.interval"), h.interval, one),
            unhealthy_interval: seconds(cx, &format!("{ap}.unhealthy.interval"), u.interval, one),
            rules: Rules {
                healthy_statuses: statuses(
                    cx,
                    &format!("{ap}.healthy.http_statuses"),
                    &h.http_statuses,
                    d.healthy_statuses,
                ),
                successes: h.successes.unwrap_or(d.successes),
                unhealthy_statuses: statuses(
                    cx,
                    &format!("{ap}.unhealthy.http_statuses"),
                    &u.http_statuses,
                    d.unhealthy_statuses,
                ),
                http_failures: u.http_failures.unwrap_or(d.http_failures),
                tcp_failures: u.tcp_failures.unwrap_or(d.tcp_failures),
                timeouts: u.timeouts.unwrap_or(d.timeouts),
            },
        }
    });
    let passive = c.passive.as_ref().map(|p| {
        let pp = format!("{path}.passive");
        if let Some(k) = p
            .kind
            .as_deref()
            .filter(|k| !["http", "https", "tcp"].contains(k))
        {
            cx.problem(
                format!("{pp}.type"),
                format!("{k:?} is not valid: use http, https or tcp"),
            );
        }
        let d = default_passive_rules();
        let h = p.healthy.clone().unwrap_or_default();
        let u = p.unhealthy.clone().unwrap_or_default();
        Rules {
            healthy_statuses: statuses(
                cx,
                &format!("{pp}.healthy.http_statuses"),
                &h.http_statuses,
                d.healthy_statuses,
            ),
            successes: h.successes.unwrap_or(d.successes),
            unhealthy_statuses: statuses(
                cx,
                &format!("{pp}.unhealthy.http_statuses"),
                &u.http_statuses,
                d.unhealthy_statuses,
            ),
            http_failures: u.http_failures.unwrap_or(d.http_failures),
            tcp_failures: u.tcp_failures.unwrap_or(d.tcp_failures),
            timeouts: u.timeouts.unwrap_or(d.timeouts),
        }
    });
    if passive.is_some() && active.is_none() {
        cx.warn(
            path,
            "passive checks without active checks: a node marked unhealthy only gets traffic again when every node is unhealthy",
        );
    }
    HealthConfig { active, passive }
}

/// Compiles `hash_on` (default `vars`) and `key` (default `remote_addr`) of a chash upstream.
pub(super) fn hash_key(
    cx: &mut Ctx,
    path: &str,
    hash_on: Option<&str>,
    key: Option<&str>,
) -> Option<HashKey> {
    let key = key.unwrap_or("remote_addr");
    let lower = key.to_ascii_lowercase();
    match hash_on.unwrap_or("vars") {
        "vars" => match lower.as_str() {
            "remote_addr" => Some(HashKey::RemoteAddr),
            "uri" | "request_uri" => Some(HashKey::Uri),
            "server_name" | "host" => Some(HashKey::Host),
            _ => {
                if let Some(name) = key.strip_prefix("arg_") {
                    Some(HashKey::Arg(name.to_string()))
                } else if let Some(name) = lower.strip_prefix("http_") {
                    Some(HashKey::Header(name.replace('_', "-")))
                } else if let Some(name) = key.strip_prefix("cookie_") {
                    Some(HashKey::Cookie(name.to_string()))
                } else {
                    cx.problem(
                        format!("{path}.key"),
                        format!("{key:?} is not supported: use remote_addr, uri, server_name, arg_NAME, http_NAME or cookie_NAME"),
                    );
                    None
                }
            }
        },
        "header" => Some(HashKey::Header(lower)),
        "cookie" => Some(HashKey::Cookie(key.to_string())),
        other => {
            cx.problem(
                format!("{path}.hash_on"),
                format!("{other:?} is not supported: use vars, header or cookie"),
            );
            None
        }
    }
}
