//! The report as text for a terminal: one block per node, a step per line, the verdict
//! last.

use std::fmt::Write;

use super::report::{CertInfo, NodeReport, Report, Severity};

fn cert_line(c: &CertInfo) -> String {
    let sans = if c.sans.is_empty() {
        "no SANs".to_string()
    } else {
        format!("SANs {}", c.sans.join(", "))
    };
    let state = if c.expired {
        " EXPIRED"
    } else if c.not_yet_valid {
        " NOT YET VALID"
    } else {
        ""
    };
    format!(
        "{}, issued by {}, {sans}, valid {} to {}{state}",
        c.subject, c.issuer, c.not_before, c.not_after
    )
}

fn node(out: &mut String, n: &NodeReport) {
    let _ = writeln!(out, "  node {} ({})", n.node, n.field);
    let row = |out: &mut String, key: &str, value: &str| {
        let _ = writeln!(out, "    {key:<9} {value}");
    };
    let d = &n.dns;
    let dns = match (&d.error, d.ip_literal) {
        (Some(e), _) => format!("{}: does not resolve ({e})", d.host),
        (None, true) => format!("{} (IP address)", d.address.as_deref().unwrap_or(&d.host)),
        (None, false) => format!(
            "{} resolves to {}; the proxy uses {}",
            d.host,
            d.addresses.join(", "),
            d.address.as_deref().unwrap_or("no address yet")
        ),
    };
    row(out, "address", &dns);
    if let Some(t) = &n.tcp {
        let line = match &t.error {
            None => format!("connected in {} ms", t.ms),
            Some(e) => format!("failed after {} ms: {e}", t.ms),
        };
        row(out, "tcp", &line);
    }
    if let Some(t) = &n.tls {
        let sni = t.sni.as_deref().unwrap_or("none");
        let line = if t.completed {
            format!(
                "{}, {}, ALPN {}, SNI {sni}, handshake {} ms",
                t.version.as_deref().unwrap_or("?"),
                t.cipher.as_deref().unwrap_or("?"),
                t.alpn.as_deref().unwrap_or("none"),
                t.ms
            )
        } else {
            format!(
                "handshake failed after {} ms (SNI {sni}): {}",
                t.ms,
                t.error.as_deref().unwrap_or("?")
            )
        };
        row(out, "tls", &line);
        if let Some(p) = &t.plain_http {
            row(out, "", &format!("a plain HTTP request got: {p}"));
        }
        for (i, c) in t.server_chain.iter().enumerate() {
            row(out, if i == 0 { "server" } else { "" }, &cert_line(c));
        }
        let v = &t.verification;
        let verify = if !t.verify {
            "off (tls.verify: false)".to_string()
        } else if v.errors.is_empty() && t.completed {
            format!("ok against {}", v.trusted)
        } else if v.errors.is_empty() {
            format!("not reached (against {})", v.trusted)
        } else {
            let errs: Vec<String> = v
                .errors
                .iter()
                .map(|e| format!("{} (depth {})", e.reason, e.depth))
                .collect();
            format!("FAILED against {}: {}", v.trusted, errs.join("; "))
        };
        row(out, "verify", &verify);
        let cc = &t.client_cert;
        let asked = match (cc.requested, cc.acceptable_cas.is_empty()) {
            (false, _) if t.completed => "the upstream did not ask for a client certificate".into(),
            (false, _) => "no client certificate request seen".into(),
            (true, true) => {
                "the upstream asked for a client certificate (no CA names listed)".into()
            }
            (true, false) => format!(
                "the upstream asked for a client certificate issued by {}",
                cc.acceptable_cas.join("; ")
            ),
        };
        row(out, "client", &asked);
        match &cc.configured {
            Some(c) => {
                let chains = match cc.chains_to_acceptable {
                    Some(true) => ": chains to an accepted CA",
                    Some(false) => ": does NOT chain to an accepted CA",
                    None => "",
                };
                row(
                    out,
                    "",
                    &format!("configured: {} = {}{chains}", c.source, cert_line(&c.cert)),
                );
            }
            None => row(out, "", "configured: none"),
        }
        if let Some(r) = &cc.rejected {
            row(out, "", &format!("REFUSED: {r}"));
        }
    }
    if let Some(h) = &n.http {
        let result = match (&h.status, &h.error, &h.skipped) {
            (_, _, Some(s)) => format!("skipped: {s}"),
            (Some(s), _, _) => s.to_string(),
            (None, Some(e), _) => format!("no response: {e}"),
            (None, None, _) => "no response".into(),
        };
        row(
            out,
            "http",
            &format!("{} (Host: {}) -> {result}", h.request, h.host),
        );
    }
    for f in n.findings.iter().filter(|f| f.severity != Severity::Error) {
        let kind = match f.severity {
            Severity::Warning => "warning",
            _ => "note",
        };
        row(out, kind, &f.sentence());
    }
    let errors: Vec<_> = n
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    match errors.split_first() {
        None => row(out, "verdict", "healthy"),
        Some((first, rest)) => {
            row(out, "verdict", &format!("FAIL: {}", first.sentence()));
            for f in rest {
                row(out, "also", &f.sentence());
            }
        }
    }
}

/// Renders `report` for a terminal.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let (mut total, mut bad) = (0, 0);
    for u in &report.upstreams {
        let _ = writeln!(
            out,
            "upstream {} ({}), {}, {} node{}",
            u.id,
            u.field,
            u.scheme,
            u.nodes.len(),
            if u.nodes.len() == 1 { "" } else { "s" }
        );
        for n in &u.nodes {
            node(&mut out, n);
            total += 1;
            if !n.healthy {
                bad += 1;
            }
        }
        out.push('\n');
    }
    if bad == 0 {
        let _ = writeln!(out, "all {total} node(s) healthy");
    } else {
        let _ = writeln!(out, "{bad} of {total} node(s) unhealthy");
    }
    out
}
