//! Helpers for HTTPS-listener tests: server certificates for several names with RSA or
//! ECDSA keys, intermediate CAs, a gateway with `tls_listen`, a raw TLS handshake that
//! reports what the server sent, and curl.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslConnector, SslConnectorBuilder, SslMethod, SslVerifyMode};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use pylon::certs::Issued;

use super::{free_port, Gateway, Origin, Pki};

/// The key algorithm of a generated certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA 2048.
    Rsa,
    /// ECDSA P-256.
    Ecdsa,
}

fn new_key(kind: KeyKind) -> PKey<Private> {
    match kind {
        KeyKind::Rsa => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        KeyKind::Ecdsa => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
            PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
        }
    }
}

fn builder(cn: &str, key: &PKey<Private>, not_before: Asn1Time, days: u32) -> X509Builder {
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&not_before).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(days).unwrap())
        .unwrap();
    b
}

/// An intermediate CA `CN=<cn>` signed by `issuer`.
pub fn intermediate(issuer: &Issued, cn: &str) -> Issued {
    let key = new_key(KeyKind::Rsa);
    let mut b = builder(cn, &key, Asn1Time::days_from_now(0).unwrap(), 365);
    b.set_issuer_name(issuer.cert.subject_name()).unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    let ski = SubjectKeyIdentifier::new()
        .build(&b.x509v3_context(Some(&issuer.cert), None))
        .unwrap();
    b.append_extension(ski).unwrap();
    let aki = AuthorityKeyIdentifier::new()
        .keyid(false)
        .build(&b.x509v3_context(Some(&issuer.cert), None))
        .unwrap();
    b.append_extension(aki).unwrap();
    b.sign(&issuer.key, MessageDigest::sha256()).unwrap();
    Issued {
        cert: b.build(),
        key,
    }
}

/// A server certificate `CN=<cn>` for the DNS `names`, signed by `issuer`, valid `days`.
pub fn server_cert(issuer: &Issued, cn: &str, names: &[&str], kind: KeyKind, days: u32) -> Issued {
    let key = new_key(kind);
    let mut b = builder(cn, &key, Asn1Time::days_from_now(0).unwrap(), days);
    b.set_issuer_name(issuer.cert.subject_name()).unwrap();
    b.append_extension(BasicConstraints::new().build().unwrap())
        .unwrap();
    let mut san = SubjectAlternativeName::new();
    for n in names {
        san.dns(n);
    }
    let san = san
        .build(&b.x509v3_context(Some(&issuer.cert), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap())
        .unwrap();
    b.sign(&issuer.key, MessageDigest::sha256()).unwrap();
    Issued {
        cert: b.build(),
        key,
    }
}

/// Writes `<stem>.crt` (the certificate, then `chain`) and `<stem>.key` into `dir`; returns
/// their paths.
pub fn write_pair(dir: &Path, stem: &str, issued: &Issued, chain: &[&X509]) -> (String, String) {
    let mut pem = issued.cert.to_pem().unwrap();
    for c in chain {
        pem.extend(c.to_pem().unwrap());
    }
    let crt = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&crt, pem).unwrap();
    std::fs::write(&key, issued.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (crt.display().to_string(), key.display().to_string())
}

/// Issues a server certificate for `names` from `pki`'s CA and writes it as `<stem>.*`.
pub fn issue_server(pki: &Pki, stem: &str, names: &[&str], kind: KeyKind) -> (String, String) {
    let issued = server_cert(&pki.ca, names[0], names, kind, 365);
    write_pair(&pki.dir, stem, &issued, &[])
}

/// A resources file whose upstream `default` is the mTLS [`Origin`](super::Origin) on
/// `origin_port` (as in the founding scenario), with `routes` (list items, indented by 2)
/// and the server `ssls` entries `server_ssls` (list items, indented by 2).
pub fn https_resources(origin_port: u16, pki: &Pki, routes: &str, server_ssls: &str) -> String {
    format!(
        r#"routes:
{routes}
upstreams:
  - id: default
    scheme: https
    nodes: {{ "127.0.0.1:{origin_port}": 1 }}
    tls:
      client_cert_id: upstream-ssl
      ca_certificate_id: upstream-ca
      sni: test.com
ssls:
  - id: upstream-ssl
    type: client
    cert: {client_crt}
    key: {client_key}
{server_ssls}
ca_certificates:
  - id: upstream-ca
    cert: {ca}
"#,
        client_crt = pki.path("client.crt"),
        client_key = pki.path("client.key"),
        ca = pki.path("ca.crt"),
    )
}

/// One catch-all route to the upstream `default`.
pub const ALL_ROUTE: &str = "  - { id: all, uri: /*, upstream_id: default }";

/// A gateway with an HTTPS listener.
pub struct TlsGateway {
    /// The gateway (its `port` is the plain listener).
    pub gw: Gateway,
    /// The HTTPS listener's port.
    pub tls_port: u16,
}

impl TlsGateway {
    /// Starts `pylon run` with `tls_listen` on a free port, `gateway_extra` (lines indented
    /// by 2) in `gateway:`, and `resources`; waits (bounded) until the HTTPS port accepts.
    pub fn start(dir: &Path, gateway_extra: &str, resources: &str) -> TlsGateway {
        let tls_port = free_port();
        let extra = format!("  tls_listen: [\"127.0.0.1:{tls_port}\"]\n{gateway_extra}");
        let gw = Gateway::start_with(dir, &extra, resources);
        let addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
        for _ in 0..400 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return TlsGateway { gw, tls_port };
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("pylon did not listen on {tls_port}:\n{}", gw.log());
    }

    /// [`handshake`] with this gateway's HTTPS port.
    pub fn handshake(
        &self,
        sni: Option<&str>,
        setup: impl FnOnce(&mut SslConnectorBuilder),
    ) -> Result<Handshake, String> {
        handshake(self.tls_port, sni, setup)
    }

    /// curl `https://<name>:<port><path>` resolved to 127.0.0.1, trusting `ca`, with `args`.
    pub fn curl(&self, name: &str, path: &str, ca: &str, args: &[&str]) -> Curl {
        let port = self.tls_port;
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "--resolve"])
            .arg(format!("{name}:{port}:127.0.0.1"))
            .args(["--cacert", ca])
            .args(args)
            .args(["-w", "\n%{http_code} %{http_version}"])
            .arg(format!("https://{name}:{port}{path}"));
        let out = cmd.output().expect("curl must be installed");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, last) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        let mut parts = last.split(' ');
        Curl {
            ok: out.status.success(),
            status: parts.next().unwrap_or("0").parse().unwrap_or(0),
            http_version: parts.next().unwrap_or("").to_string(),
            body: body.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }
}

/// What curl reported.
#[derive(Debug)]
pub struct Curl {
    /// Exit status 0.
    pub ok: bool,
    /// HTTP status; 0 when there was no response.
    pub status: u16,
    /// `1.1` or `2`.
    pub http_version: String,
    /// Response body.
    pub body: String,
    /// curl's error text.
    pub stderr: String,
}

/// What a TLS server presented.
#[derive(Debug)]
pub struct Handshake {
    /// The leaf certificate's CN.
    pub cn: String,
    /// The leaf's key algorithm.
    pub key: KeyKind,
    /// Certificates sent (leaf and chain).
    pub sent: usize,
    /// Negotiated version, e.g. `TLSv1.3`.
    pub version: String,
    /// Negotiated ALPN protocol.
    pub alpn: Option<String>,
}

/// Handshakes with 127.0.0.1:`port` sending `sni` (none when `None`), without verifying
/// the server; `setup` adjusts the client (versions, ciphers, signature algorithms, ALPN,
/// client certificate). Err: OpenSSL's error text.
pub fn handshake(
    port: u16,
    sni: Option<&str>,
    setup: impl FnOnce(&mut SslConnectorBuilder),
) -> Result<Handshake, String> {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    setup(&mut b);
    let connector = b.build();
    let mut config = connector.configure().unwrap();
    config.set_use_server_name_indication(sni.is_some());
    config.set_verify_hostname(false);
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let stream = config
        .connect(sni.unwrap_or("unused"), tcp)
        .map_err(|e| e.to_string())?;
    let ssl = stream.ssl();
    let leaf = ssl.peer_certificate().ok_or("no server certificate")?;
    let cn = leaf
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .map(|e| e.data().to_string().unwrap())
        .unwrap_or_default();
    let key = match leaf.public_key().unwrap().id() {
        Id::EC => KeyKind::Ecdsa,
        _ => KeyKind::Rsa,
    };
    Ok(Handshake {
        cn,
        key,
        sent: ssl.peer_cert_chain().map_or(0, |c| c.len()),
        version: ssl.version_str().to_string(),
        alpn: ssl
            .selected_alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).to_string()),
    })
}

/// Sends `GET <path>` with `Host: <host>` over a fresh TLS connection to 127.0.0.1:`port`
/// with SNI `sni`, offering `session` for resumption; returns whether the server resumed
/// it, the response's status line, and the session the server issued (TLS 1.3 tickets
/// arrive after the handshake, so the response is read to the end first).
pub fn request_with_session(
    port: u16,
    sni: &str,
    host: &str,
    path: &str,
    session: Option<&openssl::ssl::SslSession>,
    setup: impl FnOnce(&mut SslConnectorBuilder),
) -> (bool, String, Option<openssl::ssl::SslSession>) {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let issued = Arc::new(Mutex::new(None));
    let slot = issued.clone();
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_session_cache_mode(openssl::ssl::SslSessionCacheMode::CLIENT);
    b.set_new_session_callback(move |_, s| *slot.lock().unwrap() = Some(s));
    setup(&mut b);
    let mut config = b.build().configure().unwrap();
    config.set_verify_hostname(false);
    let mut ssl = config.into_ssl(sni).unwrap();
    if let Some(s) = session {
        // SAFETY: the session comes from a connector of the same kind (TLS client).
        unsafe { ssl.set_session(s).unwrap() };
    }
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = ssl.connect(tcp).unwrap();
    let reused = stream.ssl().session_reused();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    // Read one response by its Content-Length, then close cleanly: a connection that ends
    // without close_notify makes OpenSSL drop the session.
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&response).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed mid-response: {text}");
        response.extend_from_slice(&buf[..n]);
    }
    let _ = stream.shutdown();
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response.lines().next().unwrap_or("").to_string();
    // A copy: dropping the connector flushes its session cache, which marks the sessions
    // in it as not resumable.
    let session = issued
        .lock()
        .unwrap()
        .take()
        .map(|s| openssl::ssl::SslSession::from_der(&s.to_der().unwrap()).unwrap());
    (reused, status, session)
}

/// A temporary folder, a PKI for `test.com` and an mTLS origin, for HTTPS-listener tests.
pub fn setup() -> (tempfile::TempDir, Pki, Origin) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let origin = Origin::start(&pki, true);
    (dir, pki, origin)
}

/// A server `ssls` entry; `names` is its `sni:`/`snis:` line, `extra` more lines (indented
/// by 4).
pub fn ssl_entry(id: &str, names: &str, (crt, key): &(String, String), extra: &str) -> String {
    format!("  - id: {id}\n    {names}\n    cert: {crt}\n    key: {key}\n{extra}")
}

/// Polls the gateway's log (bounded) until it holds `needle`.
pub fn wait_for_log(gw: &Gateway, needle: &str) -> String {
    for _ in 0..200 {
        let log = gw.log();
        if log.contains(needle) {
            return log;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no {needle:?} in the log:\n{}", gw.log());
}
