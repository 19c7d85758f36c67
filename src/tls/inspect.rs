//! What a certificate and its key are, in facts a person checks before saving them: subject,
//! names, issuer, validity, key type, extended key usage, and whether the key belongs to the
//! certificate. Used by the admin API's `POST /apisix/admin/certificates/inspect` (the
//! dashboard's certificate forms) and by the configuration checks of `ssls` of
//! `type: client` ([`check_client_auth`]).
//!
//! Only PEM text is inspected, never a file path (the endpoint must not read server files),
//! and nothing of a private key is returned but its type and whether it matches.

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, Id, PKeyRef};
use openssl::x509::{X509ExtendedKeyUsage, X509Ref, X509};
use serde::{Deserialize, Serialize};

use super::{check_key_matches, holds_private_key, parse_certs, parse_key, PemSource};

/// The body of `POST /apisix/admin/certificates/inspect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InspectRequest {
    /// PEM certificates, leaf first (an `ssls` `cert`, or a `ca_certificates` `cert`).
    pub cert: String,
    /// The PEM private key of the leaf, if any (an `ssls` `key`).
    #[serde(default)]
    pub key: Option<String>,
    /// The key's passphrase, when it is encrypted (`ssls` `key_passphrase`).
    #[serde(default)]
    pub key_passphrase: Option<String>,
    /// What the certificate is for: `server` (default) and `client` as in `ssls` `type`, or
    /// `ca` for a `ca_certificates` entry.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// Facts about one certificate.
#[derive(Debug, Clone, Serialize)]
pub struct CertFacts {
    /// Subject, e.g. `CN=client, O=Example`.
    pub subject: String,
    /// Issuer, in the same form.
    pub issuer: String,
    /// subjectAltName entries as `DNS:test.com`, `IP:127.0.0.1`, `email:…`, `URI:…`.
    pub sans: Vec<String>,
    /// Serial number, hexadecimal.
    pub serial: String,
    /// notBefore, RFC 3339 (UTC).
    pub not_before: String,
    /// notAfter, RFC 3339 (UTC).
    pub not_after: String,
    /// Whole days from now to notAfter (negative once expired).
    pub days_left: i64,
    /// Whether notAfter is in the past.
    pub expired: bool,
    /// Public key, e.g. `RSA 2048`, `EC P-256`, `Ed25519`.
    pub key_type: String,
    /// Signature algorithm, e.g. `sha256WithRSAEncryption`.
    pub signature: String,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// Subject equals issuer.
    pub self_signed: bool,
    /// Extended key usage purposes (`serverAuth`, `clientAuth`, …, RFC 5280 §4.2.1.12
    /// names); `null` when the extension is absent (no restriction).
    pub extended_key_usage: Option<Vec<&'static str>>,
    /// SHA-256 fingerprint of the DER encoding, `AB:CD:…`.
    pub sha256: String,
}

/// Facts about the private key (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct KeyFacts {
    /// e.g. `RSA 2048`.
    pub key_type: String,
    /// Whether it is the private key of the first (leaf) certificate.
    pub matches: bool,
}

/// Something wrong with one field, worded as the admin API words it when saving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// The field of the object: `cert`, `key`, `key_passphrase`, `type`.
    pub field: String,
    /// The message.
    pub message: String,
}

/// The answer of the inspect endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The certificates, in the order given (leaf first).
    pub certificates: Vec<CertFacts>,
    /// The key, when one was given and parses.
    pub key: Option<KeyFacts>,
    /// Reasons the admin API would refuse these values (empty: it would accept them).
    pub problems: Vec<FieldProblem>,
    /// Things worth knowing that do not stop a save (expiry, a CA entry that is no CA).
    pub warnings: Vec<FieldProblem>,
}

fn problem(field: &str, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.into(),
        message: message.into(),
    }
}

/// Inspects `req` (see [`InspectRequest`]). Never fails: what cannot be read is reported in
/// [`Inspection::problems`] under its field.
pub fn inspect(req: &InspectRequest) -> Inspection {
    let mut out = Inspection {
        certificates: Vec::new(),
        key: None,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let kind = req.kind.as_deref().unwrap_or("server");
    if !matches!(kind, "server" | "client" | "ca") {
        out.problems.push(problem(
            "type",
            format!("{kind:?} is not a type: use server, client or ca"),
        ));
        return out;
    }
    let certs = pem_certs(&req.cert, &mut out.problems);
    for c in &certs {
        out.certificates.push(facts(c));
    }
    if let Some(leaf) = certs.first() {
        for (c, f) in certs.iter().zip(&out.certificates) {
            if f.expired {
                out.warnings.push(problem(
                    "cert",
                    format!("certificate {} expired on {}", f.subject, c.not_after()),
                ));
            } else if f.days_left < 30 {
                out.warnings.push(problem(
                    "cert",
                    format!("certificate {} expires in {} days", f.subject, f.days_left),
                ));
            }
        }
        if kind == "client" {
            if let Err(e) = check_client_auth(leaf) {
                out.problems.push(problem("cert", e));
            }
        }
        if kind == "ca" && !out.certificates.iter().any(|f| f.is_ca) {
            out.warnings.push(problem(
                "cert",
                "no certificate here is a CA (basicConstraints CA:TRUE): it can verify only \
                 itself",
            ));
        }
    }
    match (&req.key, kind) {
        (Some(_), "ca") => out
            .problems
            .push(problem("key", "a CA certificate entry takes no key")),
        (Some(key), _) => inspect_key(req, key, certs.first(), &mut out),
        // Without a key only the certificate is described (an ssl already saved, whose key
        // the API never returns); saving a new ssl without one is refused by the API.
        (None, _) => {}
    }
    out
}

fn inspect_key(req: &InspectRequest, key: &str, leaf: Option<&X509>, out: &mut Inspection) {
    if !key.trim_start().starts_with("-----BEGIN") {
        out.problems.push(problem("key", "not PEM text"));
        return;
    }
    let pem = PemSource {
        text: key.as_bytes().to_vec(),
        path: None,
    };
    let pkey = match parse_key(&pem, req.key_passphrase.as_deref(), "key_passphrase") {
        Ok(k) => k,
        Err(e) => {
            out.problems.push(problem("key", e.to_string()));
            return;
        }
    };
    let matches = match leaf {
        Some(leaf) => match check_key_matches(leaf, &pkey) {
            Ok(()) => true,
            Err(e) => {
                out.problems.push(problem("key", e.to_string()));
                false
            }
        },
        None => false,
    };
    out.key = Some(KeyFacts {
        key_type: key_type(&pkey),
        matches,
    });
}

fn pem_certs(text: &str, problems: &mut Vec<FieldProblem>) -> Vec<X509> {
    if !text.trim_start().starts_with("-----BEGIN") {
        problems.push(problem(
            "cert",
            "not PEM text (paste the certificate, starting with -----BEGIN CERTIFICATE-----)",
        ));
        return Vec::new();
    }
    let pem = PemSource {
        text: text.as_bytes().to_vec(),
        path: None,
    };
    if holds_private_key(&pem.text) {
        // The same words as the configuration check (config::compile).
        problems.push(problem(
            "cert",
            "holds a private key: a certificate field takes certificates only (put the key in \
             its key field)",
        ));
        return Vec::new();
    }
    parse_certs(&pem).unwrap_or_else(|e| {
        problems.push(problem("cert", e.to_string()));
        Vec::new()
    })
}

/// Checks that a client certificate (`ssls` of `type: client`) may be used for TLS client
/// authentication: an extendedKeyUsage extension, when present, must list `clientAuth` (or
/// `anyExtendedKeyUsage`) — RFC 5280 §4.2.1.12; OpenSSL servers (nginx `ssl_verify_client`)
/// otherwise refuse it with "unsupported certificate purpose". A certificate without the
/// extension is unrestricted and passes.
///
/// Errors: the message to show at the `cert` field.
pub fn check_client_auth(leaf: &X509Ref) -> Result<(), String> {
    match leaf.extended_key_usage() {
        Some(eku)
            if !eku.intersects(X509ExtendedKeyUsage::SSL_CLIENT | X509ExtendedKeyUsage::ANYEKU) =>
        {
            let listed = eku_names(eku);
            let listed = if listed.is_empty() {
                "no TLS purpose".to_string()
            } else {
                listed.join(", ")
            };
            Err(format!(
                "not a client certificate: its extended key usage ({listed}) lacks clientAuth, \
                 and upstreams that verify client certificates refuse it (\"unsupported \
                 certificate purpose\"); issue it with extendedKeyUsage = clientAuth"
            ))
        }
        _ => Ok(()),
    }
}

fn eku_names(eku: X509ExtendedKeyUsage) -> Vec<&'static str> {
    [
        (X509ExtendedKeyUsage::SSL_SERVER, "serverAuth"),
        (X509ExtendedKeyUsage::SSL_CLIENT, "clientAuth"),
        (X509ExtendedKeyUsage::SMIME, "emailProtection"),
        (X509ExtendedKeyUsage::CODE_SIGN, "codeSigning"),
        (X509ExtendedKeyUsage::OCSP_SIGN, "OCSPSigning"),
        (X509ExtendedKeyUsage::TIMESTAMP, "timeStamping"),
        (X509ExtendedKeyUsage::DVCS, "DVCS"),
        (X509ExtendedKeyUsage::SGC, "serverGatedCrypto"),
        (X509ExtendedKeyUsage::ANYEKU, "anyExtendedKeyUsage"),
    ]
    .into_iter()
    .filter(|(flag, _)| eku.contains(*flag))
    .map(|(_, name)| name)
    .collect()
}

/// Facts about one certificate.
pub fn facts(c: &X509Ref) -> CertFacts {
    let not_after = unix(c.not_after());
    let now = chrono::Utc::now().timestamp();
    let sans = c
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    if let Some(d) = n.dnsname() {
                        Some(format!("DNS:{d}"))
                    } else if let Some(ip) = n.ipaddress() {
                        ip_text(ip).map(|ip| format!("IP:{ip}"))
                    } else if let Some(e) = n.email() {
                        Some(format!("email:{e}"))
                    } else {
                        n.uri().map(|u| format!("URI:{u}"))
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let issuer = name_string(c.issuer_name());
    let subject = name_string(c.subject_name());
    CertFacts {
        self_signed: issuer == subject,
        subject,
        issuer,
        sans,
        serial: c
            .serial_number()
            .to_bn()
            .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
            .unwrap_or_default(),
        not_before: rfc3339(unix(c.not_before())),
        not_after: rfc3339(not_after),
        days_left: (not_after - now).div_euclid(86_400),
        expired: not_after < now,
        key_type: c
            .public_key()
            .map(|k| key_type(&k))
            .unwrap_or_else(|_| "unknown".into()),
        signature: c
            .signature_algorithm()
            .object()
            .nid()
            .short_name()
            .unwrap_or("unknown")
            .to_string(),
        is_ca: is_ca(c),
        extended_key_usage: c.extended_key_usage().map(eku_names),
        sha256: c
            .digest(MessageDigest::sha256())
            .map(|d| {
                d.iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .unwrap_or_default(),
    }
}

/// basicConstraints CA:TRUE, read from OpenSSL's text form (the crate exposes no accessor).
fn is_ca(c: &X509Ref) -> bool {
    c.to_text()
        .map(|t| String::from_utf8_lossy(&t).contains("CA:TRUE"))
        .unwrap_or(false)
}

fn name_string(name: &openssl::x509::X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// Seconds since the Unix epoch of an ASN.1 time (0 when OpenSSL cannot compare it).
fn unix(t: &Asn1TimeRef) -> i64 {
    let Ok(epoch) = Asn1Time::from_unix(0) else {
        return 0;
    };
    epoch
        .diff(t)
        .map(|d| i64::from(d.days) * 86_400 + i64::from(d.secs))
        .unwrap_or(0)
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A key's algorithm and size: `RSA 2048`, `EC P-256`, `Ed25519`.
pub fn key_type<T: HasPublic>(k: &PKeyRef<T>) -> String {
    match k.id() {
        Id::RSA => format!("RSA {}", k.bits()),
        Id::EC => {
            let curve = k
                .ec_key()
                .ok()
                .and_then(|ec| ec.group().curve_name())
                .map(|nid| match nid {
                    Nid::X9_62_PRIME256V1 => "P-256".to_string(),
                    Nid::SECP384R1 => "P-384".to_string(),
                    Nid::SECP521R1 => "P-521".to_string(),
                    other => other.short_name().unwrap_or("?").to_string(),
                })
                .unwrap_or_else(|| "?".into());
            format!("EC {curve}")
        }
        Id::ED25519 => "Ed25519".into(),
        Id::ED448 => "Ed448".into(),
        Id::DSA => format!("DSA {}", k.bits()),
        _ => format!("other ({} bits)", k.bits()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{self, Role};

    fn pem(c: &X509) -> String {
        String::from_utf8(c.to_pem().unwrap()).unwrap()
    }

    fn key_pem(i: &certs::Issued) -> String {
        String::from_utf8(i.key.private_key_to_pem_pkcs8().unwrap()).unwrap()
    }

    fn req(cert: String, key: Option<String>, kind: &str) -> InspectRequest {
        InspectRequest {
            cert,
            key,
            key_passphrase: None,
            kind: Some(kind.into()),
        }
    }

    #[test]
    fn facts_of_a_client_certificate_and_its_key() {
        let ca = certs::make_ca("ROOTCA", 30).unwrap();
        let client = certs::issue(&ca, "client", Role::Client, 10).unwrap();
        let chain = pem(&client.cert) + &pem(&ca.cert);
        let out = inspect(&req(chain, Some(key_pem(&client)), "client"));
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let leaf = &out.certificates[0];
        assert_eq!(leaf.subject, "CN=client");
        assert_eq!(leaf.issuer, "CN=ROOTCA");
        assert_eq!(leaf.key_type, "RSA 2048");
        assert_eq!(leaf.extended_key_usage, Some(vec!["clientAuth"]));
        assert!((9..=10).contains(&leaf.days_left), "{}", leaf.days_left);
        assert!(!leaf.is_ca && out.certificates[1].is_ca);
        assert!(out.certificates[1].self_signed);
        assert!(out.key.as_ref().unwrap().matches);
        // Ten days left: a warning, not a refusal.
        assert!(out.warnings[0].message.contains("expires in"), "{out:?}");
        let json = serde_json::to_string(&out).unwrap();
        assert!(!json.contains("PRIVATE"), "{json}");
    }

    #[test]
    fn a_wrong_key_and_a_server_certificate_as_client_are_refused() {
        let ca = certs::make_ca("ROOTCA", 30).unwrap();
        let server = certs::issue(&ca, "test.com", Role::Server, 30).unwrap();
        let other = certs::issue(&ca, "other", Role::Client, 30).unwrap();
        let out = inspect(&req(pem(&server.cert), Some(key_pem(&other)), "server"));
        assert_eq!(
            out.problems,
            vec![problem(
                "key",
                "private key does not match certificate (subject CN=test.com)"
            )]
        );
        assert_eq!(out.certificates[0].sans, vec!["DNS:test.com"]);
        assert!(!out.key.unwrap().matches);
        let out = inspect(&req(pem(&server.cert), Some(key_pem(&server)), "client"));
        assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
        assert_eq!(out.problems[0].field, "cert");
        assert!(
            out.problems[0]
                .message
                .contains("(serverAuth) lacks clientAuth"),
            "{:?}",
            out.problems
        );
        assert!(check_client_auth(&other.cert).is_ok());
        assert!(check_client_auth(&ca.cert).is_ok(), "no EKU: unrestricted");
    }

    #[test]
    fn bad_input_is_named_by_field() {
        let out = inspect(&req("cert.pem".into(), None, "ca"));
        assert_eq!(out.problems[0].field, "cert");
        let out = inspect(&req("-----BEGIN CERTIFICATE-----\nxx\n".into(), None, "ca"));
        assert!(out.problems[0]
            .message
            .starts_with("not a valid PEM certificate"));
        let ca = certs::make_ca("ROOTCA", 30).unwrap();
        let out = inspect(&req(pem(&ca.cert), None, "server"));
        assert!(out.problems.is_empty() && out.key.is_none(), "{out:?}");
        let out = inspect(&req(pem(&ca.cert), Some("x".into()), "ca"));
        assert_eq!(out.problems[0].field, "key");
        let with_key = pem(&ca.cert) + &key_pem(&ca);
        let out = inspect(&req(with_key, None, "ca"));
        assert!(out.problems[0].message.starts_with("holds a private key"));
        let out = inspect(&req(pem(&ca.cert), None, "nope"));
        assert_eq!(out.problems[0].field, "type");
    }
}
