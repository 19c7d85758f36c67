//! From what the probe observed to findings in plain words, each naming the configuration
//! field to change. Errors come in the order a connection meets them (DNS, TCP, TLS,
//! verification, client certificate, HTTP), so the first one is what the proxy hits.

use std::time::Duration;

use super::connect::Facts;
use super::naming::UpstreamNames;
use super::report::{Cause, CertInfo, Finding, Severity, Tls};

/// What the verdict needs to know about the node besides the facts.
pub(super) struct Context<'a> {
    /// Field names around the upstream.
    pub names: &'a UpstreamNames,
    /// The node's index in the upstream.
    pub index: usize,
    /// `host:port` as configured.
    pub label: &'a str,
    /// `scheme: https`.
    pub tls: bool,
    /// The SNI comes from the request's Host (`pass_host: pass` without `tls.sni`).
    pub sni_from_request: bool,
    /// The Host header used.
    pub host_header: &'a str,
    /// The request path.
    pub path: &'a str,
    /// TCP + TLS time limit.
    pub connect_timeout: Duration,
}

fn finding(
    severity: Severity,
    cause: Cause,
    message: String,
    field: Option<String>,
    fix: Option<String>,
) -> Finding {
    Finding {
        cause,
        severity,
        message,
        field,
        fix,
    }
}

fn error(cause: Cause, message: String, field: Option<String>, fix: Option<String>) -> Finding {
    finding(Severity::Error, cause, message, field, fix)
}

/// The names a certificate is for: its DNS SANs, else its CN.
fn cert_names(c: &CertInfo) -> Vec<String> {
    if !c.sans.is_empty() {
        return c.sans.clone();
    }
    c.subject
        .split(", ")
        .filter_map(|p| p.strip_prefix("CN="))
        .map(str::to_string)
        .collect()
}

fn or_list(names: &[String]) -> String {
    match names {
        [] => "no name".into(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The findings for one node.
pub(super) fn findings(cx: &Context, f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    let n = cx.names;
    let Some(tcp) = &f.tcp else {
        let why = f.dns.error.clone().unwrap_or_else(|| "no address".into());
        let field = n.node_field(cx.index, "host");
        out.push(error(
            Cause::DnsFailed,
            format!("the node's host {} does not resolve ({why})", f.dns.host),
            Some(field.clone()),
            Some(format!("correct {field}, or the name's DNS record")),
        ));
        return out;
    };
    let addr = f
        .dns
        .address
        .clone()
        .unwrap_or_else(|| cx.label.to_string());
    if !tcp.connected {
        let err = tcp.error.clone().unwrap_or_default();
        let port_rel = if n
            .nodes
            .get(cx.index)
            .is_some_and(|p| !p.starts_with("nodes["))
        {
            ""
        } else {
            "port"
        };
        out.push(match tcp.failure {
            Some("refused") => {
                let field = n.node_field(cx.index, port_rel);
                error(
                    Cause::ConnectionRefused,
                    format!("nothing listens on {addr} (connection refused)"),
                    Some(field.clone()),
                    Some(format!("start the upstream on {addr}, or correct {field}")),
                )
            }
            Some("timeout") => {
                let field = n.field("timeout.connect");
                error(
                    Cause::ConnectTimeout,
                    format!("no TCP answer from {addr} within {:?}", cx.connect_timeout),
                    Some(field.clone()),
                    Some(format!(
                        "check the address and any firewall on the way; raise {field} only if the upstream is slow"
                    )),
                )
            }
            _ => error(
                Cause::ConnectFailed,
                format!("cannot connect to {addr}: {err}"),
                Some(n.node_field(cx.index, "")),
                None,
            ),
        });
        return out;
    }
    match &f.tls {
        None if cx.tls => {}
        None => {
            if f.http.as_ref().is_some_and(|h| h.status == Some(400))
                && f.body.contains("plain HTTP request was sent to HTTPS port")
            {
                let field = n.field("scheme");
                out.push(error(
                    Cause::TlsExpected,
                    format!("{addr} speaks HTTPS, but the upstream's scheme is http"),
                    Some(field.clone()),
                    Some(format!("set {field}: https")),
                ));
            }
        }
        Some(tls) => tls_findings(cx, tls, &addr, &mut out),
    }
    http_findings(cx, f, &mut out);
    out.sort_by_key(|f| f.severity);
    out
}

fn tls_findings(cx: &Context, tls: &Tls, addr: &str, out: &mut Vec<Finding>) {
    let n = cx.names;
    if !tls.completed {
        let err = tls.error.clone().unwrap_or_default();
        if let Some(line) = &tls.plain_http {
            let field = n.field("scheme");
            out.push(error(
                Cause::PlainHttp,
                format!(
                    "{addr} speaks plain HTTP, not TLS (it answered a plain request with \"{line}\")"
                ),
                Some(field.clone()),
                Some(format!(
                    "set {field}: http, or point {} at the upstream's HTTPS port",
                    n.node_field(cx.index, "")
                )),
            ));
            return;
        }
        if err.starts_with("timed out") {
            let field = n.field("timeout.connect");
            out.push(error(
                Cause::TlsTimeout,
                format!(
                    "the TLS handshake with {addr} did not finish within {:?}: the node accepts TCP but does not answer TLS",
                    cx.connect_timeout
                ),
                Some(field),
                None,
            ));
            return;
        }
        match tls.alert.as_deref() {
            Some("unrecognized name") => {
                let field = n.field("tls.sni");
                out.push(error(
                    Cause::UnrecognizedName,
                    format!(
                        "the upstream does not serve the name {} (TLS alert: unrecognized name)",
                        tls.sni.as_deref().unwrap_or("(no SNI)")
                    ),
                    Some(field.clone()),
                    Some(format!("set {field} to a name the upstream serves")),
                ));
            }
            Some("protocol version") => out.push(error(
                Cause::HandshakeFailed,
                "no TLS version in common with the upstream (TLS alert: protocol version); Pylon offers TLS 1.0 to 1.3".into(),
                None,
                None,
            )),
            _ if tls.client_cert.rejected.is_some() => {}
            Some(alert) => out.push(error(
                Cause::HandshakeFailed,
                format!("the TLS handshake failed: the upstream sent the alert \"{alert}\""),
                None,
                None,
            )),
            None => out.push(error(
                Cause::HandshakeFailed,
                format!("the TLS handshake failed: {err}"),
                None,
                None,
            )),
        }
    }
    verify_findings(cx, tls, out);
    client_findings(cx, tls, out);
}

fn verify_findings(cx: &Context, tls: &Tls, out: &mut Vec<Finding>) {
    let n = cx.names;
    let names = tls.server_chain.first().map(cert_names).unwrap_or_default();
    let for_names = if names.is_empty() {
        String::new()
    } else {
        format!("the upstream certificate is for {}", or_list(&names))
    };
    let suggestion = names
        .iter()
        .find(|s| !s.contains('*') && s.parse::<std::net::IpAddr>().is_err())
        .cloned();
    let sni_field = n.field("tls.sni");
    let sni_fix = Some(match &suggestion {
        Some(s) => format!("set {sni_field}: {s}"),
        None => format!("set {sni_field} to a name in the upstream's certificate"),
    });
    if !tls.verify {
        let field = n.field("tls.verify");
        let would = tls
            .verification
            .errors
            .first()
            .map(|e| format!("; it would not verify: {}", e.reason))
            .unwrap_or_default();
        out.push(finding(
            Severity::Warning,
            Cause::VerifyOff,
            format!("{field} is false: the upstream's certificate is not checked{would}"),
            Some(field.clone()),
            Some(format!("set {field}: true once the CA bundle verifies it")),
        ));
        return;
    }
    if tls.sni.is_none() {
        let ip = crate::router::host_without_port(cx.host_header);
        let whence = if cx.sni_from_request {
            "the client's Host header, which is where the SNI comes from with pass_host: pass and no tls.sni"
        } else {
            "the node's address; neither tls.sni nor upstream_host gives a host name"
        };
        let lead = if for_names.is_empty() {
            "the upstream certificate names no host".to_string()
        } else {
            for_names.clone()
        };
        out.push(error(
            Cause::NoSni,
            format!(
                "{lead} but SNI was {ip} ({whence}): an IP address cannot be sent as SNI nor verified, so the proxy answers 502"
            ),
            Some(sni_field.clone()),
            sni_fix.clone(),
        ));
    }
    let mut chain_reported = false;
    for e in &tls.verification.errors {
        let at = tls.server_chain.get(e.depth as usize);
        let subject = at.map_or(e.subject.clone(), |c| c.subject.clone());
        match e.code {
            // X509_V_ERR_HOSTNAME_MISMATCH
            62 => out.push(error(
                Cause::HostnameMismatch,
                format!(
                    "{} but SNI was {}",
                    if for_names.is_empty() { "the upstream certificate has no name".into() } else { for_names.clone() },
                    tls.sni.as_deref().unwrap_or("(none)")
                ),
                Some(sni_field.clone()),
                sni_fix.clone(),
            )),
            // UNABLE_TO_GET_ISSUER_CERT(_LOCALLY), CERT_SIGNATURE_FAILURE, DEPTH_ZERO_SELF_SIGNED,
            // SELF_SIGNED_IN_CHAIN, UNABLE_TO_VERIFY_LEAF_SIGNATURE
            2 | 7 | 18 | 19 | 20 | 21 if !chain_reported => {
                chain_reported = true;
                let issuer = match (e.code, at) {
                    (19, Some(c)) => c.subject.clone(),
                    (_, Some(c)) => c.issuer.clone(),
                    _ => "an unknown CA".into(),
                };
                let leaf = tls.server_chain.first().map_or(subject.clone(), |c| c.subject.clone());
                let message = if e.code == 7 {
                    format!(
                        "the upstream certificate {leaf} names {issuer} as its issuer, but the CA of that name in {} did not sign it: another CA with the same name (OpenSSL: {})",
                        tls.verification.trusted, e.reason
                    )
                } else if e.code == 18 {
                    format!(
                        "the upstream certificate {leaf} is self-signed and not in {} (OpenSSL: {})",
                        tls.verification.trusted, e.reason
                    )
                } else {
                    format!(
                        "the upstream certificate {leaf} is issued by {issuer}, which {} does not hold (OpenSSL: {})",
                        tls.verification.trusted, e.reason
                    )
                };
                let id_field = n.field("tls.ca_certificate_id");
                let (field, fix) = match &n.ca {
                    Some(ca) => (
                        ca.cert_field.clone(),
                        format!(
                            "put the certificate of {issuer} in {}, or set {id_field} to a ca_certificate that holds it",
                            ca.cert_field
                        ),
                    ),
                    None => (
                        id_field.clone(),
                        format!("set {id_field} to a ca_certificate that holds {issuer}"),
                    ),
                };
                out.push(error(Cause::UntrustedServerCert, message, Some(field), Some(fix)));
            }
            2 | 7 | 18 | 19 | 20 | 21 => {}
            // CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
            9 | 10 => {
                let date = at.map(|c| if e.code == 10 { format!("expired on {}", c.not_after) } else { format!("is not valid before {}", c.not_before) }).unwrap_or_else(|| e.reason.clone());
                out.push(error(
                    Cause::ServerCertExpired,
                    format!("the upstream certificate {subject} {date}"),
                    None,
                    Some("renew the certificate on the upstream".into()),
                ));
            }
            _ => out.push(error(
                Cause::ServerCertInvalid,
                format!(
                    "the upstream certificate {subject} does not verify: {} (OpenSSL error {}, depth {})",
                    e.reason, e.code, e.depth
                ),
                None,
                None,
            )),
        }
    }
}

fn client_findings(cx: &Context, tls: &Tls, out: &mut Vec<Finding>) {
    let n = cx.names;
    let cc = &tls.client_cert;
    let accepting = if cc.acceptable_cas.is_empty() {
        String::new()
    } else {
        format!(" issued by {}", or_list(&cc.acceptable_cas))
    };
    let id_field = n.field("tls.client_cert_id");
    let cert_field = n
        .client_cert
        .as_ref()
        .map_or(id_field.clone(), |c| c.cert_field.clone());
    match (cc.rejected.as_deref(), cc.configured.as_ref()) {
        (Some(how), None) if cc.requested => out.push(error(
            Cause::ClientCertMissing,
            format!(
                "the upstream requires a client certificate{accepting} and none is configured ({how})"
            ),
            Some(id_field.clone()),
            Some(format!(
                "set {id_field} to an ssl of type: client{}",
                if accepting.is_empty() { String::new() } else { format!(" whose certificate is{accepting}") }
            )),
        )),
        (Some(how), None) => out.push(error(
            Cause::ClosedAfterHandshake,
            format!("the upstream refused the connection after the handshake: {how}"),
            None,
            None,
        )),
        (Some(how), Some(c)) => {
            let subject = &c.cert.subject;
            let source = &c.source;
            if c.cert.expired || c.cert.not_yet_valid {
                let when = if c.cert.expired {
                    format!("expired on {}", c.cert.not_after)
                } else {
                    format!("is not valid before {}", c.cert.not_before)
                };
                out.push(error(
                    Cause::ClientCertExpired,
                    format!("client certificate {subject} ({source}) {when}; the upstream refused it ({how})"),
                    Some(cert_field.clone()),
                    Some(format!("renew it: put a current certificate and its key in {cert_field}")),
                ));
            } else if cc.chains_to_acceptable == Some(false) {
                out.push(error(
                    Cause::ClientCertUntrusted,
                    format!(
                        "the upstream accepts client certificates from {} only; {source} is issued by {} ({how})",
                        or_list(&cc.acceptable_cas),
                        c.cert.issuer
                    ),
                    Some(cert_field.clone()),
                    Some(format!(
                        "put a client certificate issued by {} in {cert_field} (or set {id_field} to one), or make the upstream trust {}",
                        cc.acceptable_cas.first().cloned().unwrap_or_default(),
                        c.cert.issuer
                    )),
                ));
            } else if !cc.requested {
                out.push(error(
                    Cause::ClosedAfterHandshake,
                    format!("the upstream refused the connection after the handshake without asking for a client certificate: {how}"),
                    None,
                    None,
                ));
            } else {
                out.push(error(
                    Cause::ClientCertRejected,
                    format!("the upstream refused the client certificate {subject} ({source}), issued by {}: {how}", c.cert.issuer),
                    Some(cert_field.clone()),
                    Some(format!(
                        "check that the upstream trusts {} (and its intermediates are in {cert_field}), and that the certificate allows client authentication",
                        c.cert.issuer
                    )),
                ));
            }
        }
        (None, Some(c)) if tls.completed => {
            if c.cert.expired {
                out.push(finding(
                    Severity::Warning,
                    Cause::ClientCertExpired,
                    format!(
                        "client certificate {} ({}) expired on {}; the upstream did not refuse it{}",
                        c.cert.subject,
                        c.source,
                        c.cert.not_after,
                        if cc.requested { "" } else { " (it did not ask for it)" }
                    ),
                    Some(cert_field.clone()),
                    Some(format!("renew it in {cert_field}")),
                ));
            }
            if !cc.requested {
                out.push(finding(
                    Severity::Note,
                    Cause::ClientCertNotRequested,
                    format!(
                        "a client certificate is configured ({}) but the upstream did not ask for one, so it was not sent",
                        c.source
                    ),
                    None,
                    None,
                ));
            } else if cc.chains_to_acceptable == Some(false) {
                out.push(finding(
                    Severity::Warning,
                    Cause::ClientCertUntrusted,
                    format!(
                        "the upstream lists {} as acceptable client certificate issuers; {} is issued by {} (it was accepted anyway)",
                        or_list(&cc.acceptable_cas),
                        c.source,
                        c.cert.issuer
                    ),
                    Some(cert_field),
                    None,
                ));
            }
        }
        _ => {}
    }
}

fn http_findings(cx: &Context, f: &Facts, out: &mut Vec<Finding>) {
    let Some(http) = &f.http else {
        return;
    };
    let no_sni = out.iter().any(|f| f.cause == Cause::NoSni);
    if cx.sni_from_request && !no_sni {
        out.push(finding(
            Severity::Note,
            Cause::SniFromRequest,
            format!(
                "the SNI and the name verified come from each request's Host header (pass_host: pass without tls.sni); this probe used {} (see --host)",
                cx.host_header
            ),
            Some(cx.names.field("tls.sni")),
            None,
        ));
    }
    if f.tls
        .as_ref()
        .is_some_and(|t| t.client_cert.rejected.is_some())
    {
        // The refusal is the explanation, found above.
        return;
    }
    match http.status {
        Some(s) if s >= 500 => out.push(error(
            Cause::HttpStatus,
            format!("the upstream answered {s} to GET {}", cx.path),
            None,
            Some("see the upstream's own logs".into()),
        )),
        Some(_) => {}
        None if http.skipped.is_some() => {}
        None => {
            let why = http.error.clone().unwrap_or_default();
            let field = why
                .contains("timeout.read")
                .then(|| cx.names.field("timeout.read"));
            out.push(error(
                Cause::HttpFailed,
                format!("GET {} got no HTTP response: {why}", cx.path),
                field,
                None,
            ));
        }
    }
}

/// The verdict line: `healthy`, or the first error's sentence (and how many more).
pub(super) fn verdict(findings: &[Finding]) -> String {
    let errors: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    match errors.as_slice() {
        [] => "healthy".into(),
        [one] => one.sentence(),
        [first, rest @ ..] => format!(
            "{} (and {} more problem{})",
            first.sentence(),
            rest.len(),
            if rest.len() == 1 { "" } else { "s" }
        ),
    }
}
