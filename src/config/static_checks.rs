//! Checks of the static file (`conf/pylon.yaml`) beyond its shape: listeners (addresses,
//! overlaps), the admin API, metrics, etcd and the keyring.

use std::net::SocketAddr;

use super::model::{self, StaticFile};
use super::Problem;

/// Checks static-file settings that parse but cannot be served.
pub fn check_static(s: &StaticFile) -> Vec<Problem> {
    let g = &s.gateway;
    let mut problems = Vec::new();
    if g.listen.is_empty() && g.tls_listen.is_empty() {
        problems.push(Problem::new(
            "gateway.listen",
            "at least one listener is required (listen or tls_listen)",
        ));
    }
    for (i, addr) in g.listen.iter().enumerate() {
        if addr.parse::<SocketAddr>().is_err() {
            problems.push(Problem::new(
                format!("gateway.listen[{i}]"),
                format!("{addr:?} is not an address of the form ip:port, e.g. 0.0.0.0:9080 (IPv6 as [::]:9080; host names are not resolved here)"),
            ));
        }
    }
    super::ssl::check_static(g, &mut problems);
    if let Some(Err(e)) = g
        .metrics_listen
        .as_deref()
        .map(crate::ops::metrics::listen_addr)
    {
        problems.push(Problem::new("gateway.metrics_listen", e));
    }
    if let Some(admin) = &g.admin {
        problems.extend(crate::admin::check_static(admin));
    }
    if g.threads == Some(0) {
        problems.push(Problem::new("gateway.threads", "must be at least 1"));
    }
    check_listener_overlaps(g, &mut problems);
    if let Some(e) = &g.etcd {
        problems.extend(crate::etcd::check_static(e));
    } else if g.config_provider == model::ConfigProvider::Etcd {
        problems.extend(crate::etcd::check_static(&Default::default()));
    }
    problems.extend(crate::etcd::crypt::check_static(&g.data_encryption));
    problems
}

/// Refuses two listeners on the same port where their addresses overlap (equal, or either
/// one the unspecified address `0.0.0.0`/`[::]`, which takes every address): the kernel
/// would split connections between them, sending admin calls (and their key) to the proxy.
fn check_listener_overlaps(g: &model::Gateway, problems: &mut Vec<Problem>) {
    let mut all: Vec<(String, SocketAddr)> = Vec::new();
    let mut add = |field: String, addr: Option<SocketAddr>| {
        if let Some(a) = addr {
            all.push((field, a));
        }
    };
    for (i, a) in g.listen.iter().enumerate() {
        add(format!("gateway.listen[{i}]"), a.parse().ok());
    }
    for (i, a) in g.tls_listen.iter().enumerate() {
        add(format!("gateway.tls_listen[{i}]"), a.parse().ok());
    }
    if let Some(m) = &g.metrics_listen {
        add(
            "gateway.metrics_listen".into(),
            crate::ops::metrics::listen_addr(m).ok(),
        );
    }
    if let Some(a) = &g.admin {
        add(
            "gateway.admin.listen".into(),
            crate::ops::metrics::listen_addr(&a.listen).ok(),
        );
    }
    for (j, (field, b)) in all.iter().enumerate() {
        let clash = all[..j].iter().find(|(_, a)| {
            a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        });
        if let Some((other, a)) = clash {
            problems.push(Problem::new(
                field.clone(),
                format!(
                    "{b} overlaps {other} ({a}): every listener needs its own address and port"
                ),
            ));
        }
    }
}
