//! Compiles `ssls` entries of `type: server` (the default) into the downstream
//! [`CertStore`], and checks the static file's HTTPS listener settings.
//!
//! Field rules (APISIX `ssl` schema): `sni` or `snis` (not both) name what the entry serves;
//! `cert`/`key` plus `certs`/`keys` give at most one certificate per key type; `ssl_protocols`
//! is a subset of `TLSv1.2`, `TLSv1.3` (default both); `client` turns on downstream mTLS;
//! `status: 0` keeps the entry out of the store (it is still checked).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use openssl::ssl::SslVersion;
use openssl::x509::store::X509StoreBuilder;
use pingora_core::utils::tls::CertKey;
use regex::RegexSet;

use super::compile::Ctx;
use super::model::{self, Gateway};
use super::Problem;
use crate::tls::client_cert::ClientCertHeaders;
use crate::tls::inspect::check_client_auth;
use crate::tls::store::{cert_covers, CertStore, ClientAuth, ServerSsl, SniPattern};

/// `client.depth` when not given (APISIX's default; nginx `ssl_verify_depth` 1).
pub const DEFAULT_CLIENT_DEPTH: u32 = 1;

/// Compiles one server entry at `path` whose certificate/key pairs loaded as `pairs`
/// (`(field path of the certificate, pair)`), and adds it to the store being built.
pub(super) fn compile_server(
    cx: &mut Ctx,
    path: &str,
    ssl: &model::Ssl,
    pairs: &[(String, Arc<CertKey>)],
) {
    let before = cx.problems.len();
    if let Some(s) = ssl.status.filter(|s| *s > 1) {
        cx.problem(
            format!("{path}.status"),
            format!("{s} is not valid: use 1 (enabled) or 0 (disabled)"),
        );
    }
    let names = names(cx, path, ssl);
    let mut key_types = HashSet::new();
    for (cert_path, pair) in pairs {
        if !key_types.insert(pair.key().id().as_raw()) {
            cx.problem(
                cert_path.as_str(),
                "another certificate of this ssl has the same key type: give at most one per \
                 key type (e.g. one RSA and one ECDSA)",
            );
        }
    }
    for (field, name) in &names {
        if !pairs.is_empty() && !pairs.iter().any(|(_, p)| cert_covers(p.leaf(), name)) {
            cx.warn(
                field.as_str(),
                format!(
                    "no certificate of this ssl lists {name} in its subjectAltName: clients \
                     that check names will refuse it"
                ),
            );
        }
    }
    let (min_version, max_version) = protocols(cx, path, ssl.ssl_protocols.as_deref());
    let client = ssl
        .client
        .as_ref()
        .and_then(|c| client_auth(cx, &format!("{path}.client"), c));
    if ssl.status == Some(0) {
        return;
    }
    let (client, session_context) = match client {
        Some((auth, context)) => (Some(auth), context),
        None => (None, openssl::sha::sha256(b"pylon: no client certificates")),
    };
    let entry = (cx.problems.len() == before).then(|| {
        Arc::new(ServerSsl {
            id: ssl.id.to_string(),
            certs: pairs.iter().map(|(_, p)| p.clone()).collect(),
            min_version,
            max_version,
            client,
            session_context,
        })
    });
    let patterns: Vec<SniPattern> = names.iter().map(|(_, n)| n.clone()).collect();
    for (i, other) in cx.server_ssls.add(path, &patterns, entry) {
        let (field, name) = &names[i];
        cx.problem(
            field.as_str(),
            format!("{name} is already served by {other}: each name may have one ssl"),
        );
    }
}

/// Refuses, at each certificate's field, a `type: client` certificate that may not be used
/// for TLS client authentication ([`check_client_auth`]): it would fail every handshake with
/// an upstream that verifies it ("unsupported certificate purpose").
pub(super) fn check_client_purpose(cx: &mut Ctx, pairs: &[(String, Arc<CertKey>)]) {
    for (cert_path, pair) in pairs {
        if let Err(e) = check_client_auth(pair.leaf()) {
            cx.problem(cert_path.as_str(), e);
        }
    }
}

fn names(cx: &mut Ctx, path: &str, ssl: &model::Ssl) -> Vec<(String, SniPattern)> {
    let raw: Vec<(String, &String)> = match (&ssl.sni, &ssl.snis) {
        (Some(_), Some(_)) => {
            cx.problem(format!("{path}.snis"), "give either sni or snis, not both");
            return vec![];
        }
        (None, None) => {
            cx.problem(
                format!("{path}.snis"),
                "required for type server: the names this certificate serves (sni or snis)",
            );
            return vec![];
        }
        (Some(one), None) => vec![(format!("{path}.sni"), one)],
        (None, Some(list)) => {
            if list.is_empty() {
                cx.problem(format!("{path}.snis"), "must not be empty");
            }
            list.iter()
                .enumerate()
                .map(|(i, n)| (format!("{path}.snis[{i}]"), n))
                .collect()
        }
    };
    let mut seen = HashSet::new();
    raw.into_iter()
        .filter_map(|(field, name)| match SniPattern::parse(name) {
            Ok(p) => seen.insert(p.clone()).then_some((field, p)),
            Err(e) => {
                cx.problem(field, e);
                None
            }
        })
        .collect()
}

fn protocols(cx: &mut Ctx, path: &str, list: Option<&[String]>) -> (SslVersion, SslVersion) {
    let Some(list) = list else {
        return (SslVersion::TLS1_2, SslVersion::TLS1_3);
    };
    if list.is_empty() {
        cx.problem(
            format!("{path}.ssl_protocols"),
            "must not be empty (leave it out for TLSv1.2 and TLSv1.3)",
        );
    }
    let (mut v12, mut v13) = (false, false);
    for (i, p) in list.iter().enumerate() {
        match p.as_str() {
            "TLSv1.2" => v12 = true,
            "TLSv1.3" => v13 = true,
            "TLSv1" | "TLSv1.1" => cx.problem(
                format!("{path}.ssl_protocols[{i}]"),
                format!("{p} is not supported (insecure): use TLSv1.2 and/or TLSv1.3"),
            ),
            other => cx.problem(
                format!("{path}.ssl_protocols[{i}]"),
                format!("{other:?} is not a TLS version: use TLSv1.2 and/or TLSv1.3"),
            ),
        }
    }
    match (v12, v13) {
        (true, false) => (SslVersion::TLS1_2, SslVersion::TLS1_2),
        (false, true) => (SslVersion::TLS1_3, SslVersion::TLS1_3),
        _ => (SslVersion::TLS1_2, SslVersion::TLS1_3),
    }
}

/// The compiled `client` and its session context: a digest of the CAs and depth, equal for
/// entries that verify clients the same way.
fn client_auth(cx: &mut Ctx, path: &str, c: &model::SslClient) -> Option<(ClientAuth, [u8; 32])> {
    let cas = cx.certs(&format!("{path}.ca"), &c.ca);
    let mut skip = Vec::new();
    for (i, re) in c.skip_mtls_uri_regex.iter().flatten().enumerate() {
        match regex::Regex::new(re) {
            Ok(_) => skip.push(re.as_str()),
            Err(e) => cx.problem(
                format!("{path}.skip_mtls_uri_regex[{i}]"),
                format!("not a valid regular expression: {e}"),
            ),
        }
    }
    if c.skip_mtls_uri_regex.as_ref().is_some_and(|l| l.is_empty()) {
        cx.problem(
            format!("{path}.skip_mtls_uri_regex"),
            "must not be empty (leave it out to require a certificate on every path)",
        );
    }
    let cas = cas?;
    let built = (|| {
        let mut store = X509StoreBuilder::new()?;
        let mut names = Vec::new();
        for ca in &cas {
            store.add_cert(ca.clone())?;
            names.push(ca.subject_name().to_owned()?);
        }
        Ok::<_, openssl::error::ErrorStack>((store.build(), names))
    })();
    let (store, ca_names) = match built {
        Ok(b) => b,
        Err(e) => {
            cx.problem(
                format!("{path}.ca"),
                format!("cannot build a CA store: {e}"),
            );
            return None;
        }
    };
    let skip_uri = if skip.is_empty() {
        None
    } else {
        match RegexSet::new(&skip) {
            Ok(set) => Some(set),
            Err(e) => {
                cx.problem(format!("{path}.skip_mtls_uri_regex"), e.to_string());
                return None;
            }
        }
    };
    let depth = c.depth.unwrap_or(DEFAULT_CLIENT_DEPTH);
    let mut ders: Vec<Vec<u8>> = cas.iter().filter_map(|c| c.to_der().ok()).collect();
    ders.sort();
    ders.dedup();
    let mut data = b"pylon: client certificates\0".to_vec();
    data.extend_from_slice(&depth.to_be_bytes());
    for der in ders {
        data.extend_from_slice(&der);
    }
    let auth = ClientAuth {
        store,
        ca_names,
        depth,
        skip_uri,
    };
    Some((auth, openssl::sha::sha256(&data)))
}

/// Checks `gateway.tls_listen`, `gateway.fallback_sni` and `gateway.client_cert_headers`.
pub(super) fn check_static(g: &Gateway, problems: &mut Vec<Problem>) {
    for (i, addr) in g.tls_listen.iter().enumerate() {
        if addr.parse::<SocketAddr>().is_err() {
            problems.push(Problem::new(
                format!("gateway.tls_listen[{i}]"),
                format!("{addr:?} is not an address of the form ip:port, e.g. 0.0.0.0:9443 (IPv6 as [::]:9443; host names are not resolved here)"),
            ));
        }
    }
    if let Some(name) = &g.fallback_sni {
        match SniPattern::parse(name) {
            Ok(SniPattern::Exact(_)) => {}
            Ok(SniPattern::Wildcard(_)) => problems.push(Problem::new(
                "gateway.fallback_sni",
                "must be a host name, not a wildcard (it is looked up like a client's SNI)",
            )),
            Err(e) => problems.push(Problem::new("gateway.fallback_sni", e)),
        }
    }
    let h = &g.client_cert_headers;
    if let Err((field, msg)) = ClientCertHeaders::new(h.subject_dn.as_deref(), h.serial.as_deref())
    {
        problems.push(Problem::new(
            format!("gateway.client_cert_headers.{field}"),
            msg,
        ));
    }
}

/// Warnings that need both files: HTTPS listeners without certificates, a fallback name
/// that no entry serves.
pub fn listener_warnings(g: &Gateway, store: &CertStore) -> Vec<Problem> {
    let mut out = Vec::new();
    if g.tls_listen.is_empty() {
        return out;
    }
    if store.is_empty() {
        out.push(Problem::new(
            "ssls",
            "gateway.tls_listen is set but there is no enabled ssl of type server: every \
             HTTPS handshake will fail",
        ));
    } else if let Some(name) = &g.fallback_sni {
        if store.lookup_raw(name.as_bytes()).is_none() {
            out.push(Problem::new(
                "ssls",
                format!(
                    "no ssl serves gateway.fallback_sni {name:?}: clients that send no SNI \
                     will fail the handshake"
                ),
            ));
        }
    }
    out
}
