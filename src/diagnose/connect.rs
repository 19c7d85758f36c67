//! One node, connected to as the proxy would: the address the proxy uses, TCP within the
//! connect timeout, then TLS with OpenSSL configured as Pingora configures it for the node's
//! peer (cipher and signature lists, TLS 1–1.3, the CA bundle or the system store, the client
//! certificate chain and key, the SNI, host-name verification, ALPN), then one HTTP/1.1
//! request. Unlike the proxy, a failed verification does not stop the handshake: it is
//! recorded (with OpenSSL's reason) and the probe goes on, to learn what the upstream asks
//! of the client certificate and whether it accepts it.
//!
//! Mutual TLS is observed from the client side: a certificate callback
//! (`SSL_set_cert_cb`, called when the server sends a CertificateRequest) records that the
//! upstream asked, and the CA names it listed (`SSL_get_client_CA_list`). With TLS 1.3 the
//! server judges the client certificate after the client's handshake has finished, so a
//! rejection arrives as an alert on the first read; the request is written and the response
//! read to catch it.

use std::ffi::{c_int, c_void};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use foreign_types::ForeignTypeRef;
use openssl::asn1::Asn1Time;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{
    ErrorCode, HandshakeError, Ssl, SslConnector, SslMethod, SslRef, SslStream, SslVerifyMode,
    SslVersion,
};
use openssl::stack::StackRef;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509NameRef, X509Ref, X509};
use pingora_core::tls::ssl_sys;
use pingora_core::utils::tls::CertKey;

use super::http;
use super::report::{CertInfo, ClientCertInfo, Dns, Http, Tcp, Tls, VerifyError};

/// Pingora's client cipher list (pingora-core `connectors/tls/boringssl_openssl`).
const CIPHER_LIST: &str = "AES-128-GCM-SHA256:AES-256-GCM-SHA384:CHACHA20-POLY1305-SHA256:\
ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA384:AES128-GCM-SHA256:\
AES256-GCM-SHA384:AES128-SHA:AES256-SHA:DES-CBC3-SHA";

/// Pingora's client signature algorithms (same source).
const SIGALG_LIST: &str = "ecdsa_secp256r1_sha256:rsa_pss_rsae_sha256:rsa_pkcs1_sha256:\
ecdsa_secp384r1_sha384:rsa_pss_rsae_sha384:rsa_pkcs1_sha384:rsa_pss_rsae_sha512:\
rsa_pkcs1_sha512:rsa_pkcs1_sha1:ecdsa_secp521r1_sha512";

/// How to reach one node, taken from its compiled peer.
pub(super) struct Plan {
    /// The node's host as configured.
    pub host: String,
    /// Whether `host` is an IP address.
    pub ip_literal: bool,
    /// The port.
    pub port: u16,
    /// The address the proxy uses (`None`: the name has not resolved).
    pub addr: Option<SocketAddr>,
    /// TLS settings, for `scheme: https`.
    pub tls: Option<TlsPlan>,
    /// Host header of the request.
    pub host_header: String,
    /// Request path.
    pub path: String,
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Each read.
    pub read_timeout: Duration,
    /// Each write.
    pub write_timeout: Duration,
}

/// The peer's TLS settings.
pub(super) struct TlsPlan {
    /// SNI; empty = none (no host name).
    pub sni: String,
    /// Verify the chain and host name.
    pub verify: bool,
    /// Client certificate chain and key.
    pub client_cert: Option<Arc<CertKey>>,
    /// CA bundle; `None` = the system store.
    pub ca: Option<Arc<Box<[X509]>>>,
    /// ALPN protocols in wire format (length-prefixed), as Pingora offers them.
    pub alpn: Option<&'static [u8]>,
    /// How the CA bundle is named in the report.
    pub trusted: String,
    /// How the client certificate is named in the report.
    pub client_cert_source: String,
}

/// What was observed.
pub(super) struct Facts {
    pub dns: Dns,
    pub tcp: Option<Tcp>,
    pub tls: Option<Tls>,
    pub http: Option<Http>,
    /// The body's first bytes, for recognising nginx's client-certificate errors.
    pub body: String,
}

fn ms(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e5).round() / 100.0
}

/// `CN=x, O=y`.
pub(super) fn name_text(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Subject, issuer, SANs and validity of `cert`.
pub(super) fn cert_info(cert: &X509Ref) -> CertInfo {
    let now = Asn1Time::days_from_now(0).ok();
    let sans = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    n.dnsname().map(str::to_string).or_else(|| {
                        n.ipaddress().and_then(|b| match b.len() {
                            4 => <[u8; 4]>::try_from(b)
                                .ok()
                                .map(|a| std::net::IpAddr::from(a).to_string()),
                            16 => <[u8; 16]>::try_from(b)
                                .ok()
                                .map(|a| std::net::IpAddr::from(a).to_string()),
                            _ => None,
                        })
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    CertInfo {
        subject: name_text(cert.subject_name()),
        issuer: name_text(cert.issuer_name()),
        sans,
        not_before: cert.not_before().to_string(),
        not_after: cert.not_after().to_string(),
        expired: now.as_ref().is_some_and(|n| cert.not_after() < n),
        not_yet_valid: now.as_ref().is_some_and(|n| cert.not_before() > n),
    }
}

/// OpenSSL's reasons, `; `-separated (`tlsv13 alert certificate required`).
fn reasons(stack: &ErrorStack) -> String {
    let r: Vec<&str> = stack.errors().iter().filter_map(|e| e.reason()).collect();
    if r.is_empty() {
        stack.to_string()
    } else {
        r.join("; ")
    }
}

/// The alert name in a reason such as `tlsv1 alert unknown ca` (`unknown ca`).
pub(super) fn alert_in(reason: &str) -> Option<String> {
    reason
        .split("; ")
        .find_map(|r| r.split_once(" alert ").map(|(_, a)| a.to_string()))
}

pub(super) fn ssl_error_text(e: &openssl::ssl::Error) -> String {
    if let Some(stack) = e.ssl_error() {
        return reasons(stack);
    }
    if let Some(io) = e.io_error() {
        return io.to_string();
    }
    match e.code() {
        ErrorCode::SYSCALL => "the connection was closed (no close_notify)".into(),
        ErrorCode::ZERO_RETURN => "the connection was closed (close_notify)".into(),
        _ => e.to_string(),
    }
}

pub(super) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Probes one node.
pub(super) fn probe(plan: &Plan) -> Facts {
    let mut facts = Facts {
        dns: resolve(plan),
        tcp: None,
        tls: None,
        http: None,
        body: String::new(),
    };
    let Some(addr) = plan.addr else {
        return facts;
    };
    let start = Instant::now();
    let tcp = match TcpStream::connect_timeout(&addr, plan.connect_timeout) {
        Ok(s) => s,
        Err(e) => {
            let failure = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "refused",
                _ if is_timeout(&e) => "timeout",
                _ => "other",
            };
            let error = if failure == "timeout" {
                format!("timed out after {:?}", plan.connect_timeout)
            } else {
                e.to_string()
            };
            facts.tcp = Some(Tcp {
                connected: false,
                ms: ms(start),
                error: Some(error),
                failure: Some(failure),
            });
            return facts;
        }
    };
    facts.tcp = Some(Tcp {
        connected: true,
        ms: ms(start),
        error: None,
        failure: None,
    });
    let _ = tcp.set_nodelay(true);
    let request = Http {
        request: format!("GET {}", plan.path),
        host: plan.host_header.clone(),
        ..Http::default()
    };
    match &plan.tls {
        None => {
            let mut tcp = tcp;
            let (http, body) = http::exchange(&mut tcp, plan, request);
            facts.http = Some(http);
            facts.body = body;
        }
        Some(t) => {
            let remaining = plan.connect_timeout.saturating_sub(start.elapsed());
            let (tls, stream) = handshake(tcp, t, remaining.max(Duration::from_millis(1)));
            facts.tls = Some(tls);
            let tls = facts.tls.as_mut();
            match (stream, tls) {
                (Some(mut stream), Some(tls)) => {
                    if tls.alpn.as_deref().is_some_and(|a| a != "http/1.1") {
                        facts.http = Some(Http {
                            skipped: Some(format!(
                                "{} negotiated; the probe speaks HTTP/1.1 only",
                                tls.alpn.as_deref().unwrap_or_default()
                            )),
                            ..request
                        });
                    } else {
                        let (http, body, rejected) = http::tls_exchange(&mut stream, plan, request);
                        if rejected.is_some() {
                            tls.client_cert.rejected = rejected;
                        }
                        facts.http = Some(http);
                        facts.body = body;
                    }
                }
                (None, Some(tls)) if tls.alert.is_none() && tls.error.is_some() => {
                    tls.plain_http = http::plain_http(addr, plan);
                }
                _ => {}
            }
        }
    }
    facts
}

fn resolve(plan: &Plan) -> Dns {
    let mut dns = Dns {
        host: plan.host.clone(),
        ip_literal: plan.ip_literal,
        address: plan.addr.map(|a| a.to_string()),
        ..Dns::default()
    };
    let bare = plan.host.trim_start_matches('[').trim_end_matches(']');
    match (bare, plan.port).to_socket_addrs() {
        Ok(addrs) => {
            let mut seen: Vec<String> = Vec::new();
            for a in addrs {
                let ip = a.ip().to_string();
                if !seen.contains(&ip) {
                    seen.push(ip);
                }
            }
            if seen.is_empty() {
                dns.error = Some("no address".into());
            }
            dns.addresses = seen;
        }
        Err(e) => dns.error = Some(e.to_string()),
    }
    dns
}

/// What the certificate callback saw: `Some(acceptable CA names)` once the server asked.
type CertRequestSlot = Arc<Mutex<Option<Vec<String>>>>;

fn request_index() -> Option<Index<Ssl, CertRequestSlot>> {
    static INDEX: OnceLock<Option<Index<Ssl, CertRequestSlot>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

extern "C" {
    fn SSL_set_cert_cb(
        s: *mut ssl_sys::SSL,
        cb: Option<unsafe extern "C" fn(*mut ssl_sys::SSL, *mut c_void) -> c_int>,
        arg: *mut c_void,
    );
    fn SSL_get_client_CA_list(s: *const ssl_sys::SSL) -> *mut ssl_sys::stack_st_X509_NAME;
}

/// Called by OpenSSL on the client when the server sent a CertificateRequest; records the
/// CA names it listed. Returns 1 (go on with whatever certificate is set).
unsafe extern "C" fn on_certificate_request(ssl: *mut ssl_sys::SSL, _arg: *mut c_void) -> c_int {
    // SAFETY: OpenSSL passes the live SSL of the handshake in progress.
    let ssl_ref = unsafe { SslRef::from_ptr(ssl) };
    // SAFETY: as above; on a client the list is the one received in the CertificateRequest,
    // owned by the SSL (not freed here), valid during this callback.
    let list = unsafe { SSL_get_client_CA_list(ssl) };
    let names = if list.is_null() {
        Vec::new()
    } else {
        // SAFETY: a non-null STACK_OF(X509_NAME) owned by the SSL, borrowed for this call.
        let stack = unsafe { StackRef::<openssl::x509::X509Name>::from_ptr(list) };
        stack.iter().map(name_text).collect()
    };
    if let Some(slot) = request_index().and_then(|i| ssl_ref.ex_data(i)) {
        if let Ok(mut s) = slot.lock() {
            *s = Some(names);
        }
    }
    1
}

fn configured(ck: &CertKey, source: &str) -> ClientCertInfo {
    ClientCertInfo {
        source: source.to_string(),
        cert: cert_info(ck.leaf()),
        chain: ck
            .intermediates()
            .iter()
            .map(|c| name_text(c.subject_name()))
            .collect(),
    }
}

/// Whether the client chain (leaf issuer, intermediates) meets one of the accepted names.
fn chains_to(ck: &CertKey, accepted: &[String]) -> bool {
    let mut names = vec![name_text(ck.leaf().issuer_name())];
    for c in ck.intermediates() {
        names.push(name_text(c.subject_name()));
        names.push(name_text(c.issuer_name()));
    }
    names.iter().any(|n| accepted.contains(n))
}

fn build_ssl(
    t: &TlsPlan,
    verify_errors: &Arc<Mutex<Vec<VerifyError>>>,
    slot: &CertRequestSlot,
) -> Result<Ssl, ErrorStack> {
    let mut b = SslConnector::builder(SslMethod::tls())?;
    b.set_cipher_list(CIPHER_LIST)?;
    b.set_sigalgs_list(SIGALG_LIST)?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_min_proto_version(Some(SslVersion::TLS1))?;
    b.set_default_verify_paths()?;
    let connector = b.build();
    let mut cfg = connector.configure()?;
    cfg.set_use_server_name_indication(!t.sni.is_empty());
    cfg.set_verify_hostname(false);
    let mut ssl = cfg.into_ssl(&t.sni)?;
    if let Some(ca) = &t.ca {
        let mut store = X509StoreBuilder::new()?;
        for c in ca.iter() {
            store.add_cert(c.clone())?;
        }
        ssl.set_verify_cert_store(store.build())?;
    }
    if let Some(ck) = &t.client_cert {
        ssl.set_certificate(ck.leaf())?;
        ssl.set_private_key(ck.key())?;
        for c in ck.intermediates() {
            ssl.add_chain_cert(c.clone())?;
        }
    }
    if t.verify && !t.sni.is_empty() {
        ssl.param_mut().set_host(&t.sni)?;
    }
    let errors = verify_errors.clone();
    // Record every error and go on: the proxy would stop at the first.
    ssl.set_verify_callback(SslVerifyMode::PEER, move |ok, ctx| {
        if !ok {
            let e = VerifyError {
                depth: ctx.error_depth(),
                code: ctx.error().as_raw(),
                reason: ctx.error().error_string().to_string(),
                subject: ctx
                    .current_cert()
                    .map(|c| name_text(c.subject_name()))
                    .unwrap_or_default(),
            };
            if let Ok(mut list) = errors.lock() {
                if !list.contains(&e) {
                    list.push(e);
                }
            }
        }
        true
    });
    if let Some(alpn) = t.alpn {
        ssl.set_alpn_protos(alpn)?;
    }
    if let Some(index) = request_index() {
        ssl.set_ex_data(index, slot.clone());
        // SAFETY: `ssl` is live and owned here; the callback reads only the SSL it is given
        // and its ex_data (kept alive by the SSL itself).
        unsafe {
            SSL_set_cert_cb(
                ssl.as_ptr(),
                Some(on_certificate_request),
                std::ptr::null_mut(),
            )
        };
    }
    Ok(ssl)
}

fn handshake(
    tcp: TcpStream,
    t: &TlsPlan,
    timeout: Duration,
) -> (Tls, Option<SslStream<TcpStream>>) {
    let mut tls = Tls {
        sni: (!t.sni.is_empty()).then(|| t.sni.clone()),
        verify: t.verify,
        ..Tls::default()
    };
    tls.verification.trusted = t.trusted.clone();
    tls.client_cert.configured = t
        .client_cert
        .as_deref()
        .map(|ck| configured(ck, &t.client_cert_source));
    let verify_errors = Arc::new(Mutex::new(Vec::new()));
    let slot: CertRequestSlot = Arc::new(Mutex::new(None));
    let ssl = match build_ssl(t, &verify_errors, &slot) {
        Ok(s) => s,
        Err(e) => {
            tls.error = Some(format!("cannot set up TLS: {}", reasons(&e)));
            return (tls, None);
        }
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let start = Instant::now();
    let result = ssl.connect(tcp);
    tls.ms = ms(start);
    let stream = match result {
        Ok(s) => {
            tls.completed = true;
            describe(&mut tls, s.ssl());
            Some(s)
        }
        Err(HandshakeError::Failure(mid)) | Err(HandshakeError::WouldBlock(mid)) => {
            let e = mid.error();
            let timed_out = e.io_error().is_some_and(is_timeout)
                || (e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE);
            let text = if timed_out {
                format!("timed out after {timeout:?}")
            } else {
                ssl_error_text(e)
            };
            tls.alert = alert_in(&text);
            tls.error = Some(text);
            describe(&mut tls, mid.ssl());
            None
        }
        Err(HandshakeError::SetupFailure(e)) => {
            tls.error = Some(format!("cannot set up TLS: {}", reasons(&e)));
            None
        }
    };
    if let Ok(list) = verify_errors.lock() {
        tls.verification.errors = list.clone();
    }
    tls.verification.ok = tls.completed && tls.verification.errors.is_empty();
    if let Ok(req) = slot.lock() {
        if let Some(names) = req.as_ref() {
            tls.client_cert.requested = true;
            tls.client_cert.acceptable_cas = names.clone();
        }
    }
    if let (Some(ck), false) = (&t.client_cert, tls.client_cert.acceptable_cas.is_empty()) {
        tls.client_cert.chains_to_acceptable = Some(chains_to(ck, &tls.client_cert.acceptable_cas));
    }
    if tls.client_cert.requested && tls.alert.is_some() {
        tls.client_cert.rejected = tls
            .alert
            .as_ref()
            .map(|a| format!("TLS alert during the handshake: {a}"));
    }
    (tls, stream)
}

fn describe(tls: &mut Tls, ssl: &SslRef) {
    if tls.completed {
        tls.version = Some(ssl.version_str().to_string());
        tls.cipher = ssl.current_cipher().map(|c| c.name().to_string());
        tls.alpn = ssl
            .selected_alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
    }
    if let Some(chain) = ssl.peer_cert_chain() {
        tls.server_chain = chain.iter().map(cert_info).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts() {
        assert_eq!(
            alert_in("tlsv13 alert certificate required").as_deref(),
            Some("certificate required")
        );
        assert_eq!(
            alert_in("x; tlsv1 alert unknown ca").as_deref(),
            Some("unknown ca")
        );
        assert_eq!(alert_in("wrong version number"), None);
    }
}
