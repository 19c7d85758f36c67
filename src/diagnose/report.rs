//! The probe report: what `pylon probe --json` prints and `GET
//! /apisix/admin/upstreams/<id>/probe` answers. The shape is stable: fields are only ever
//! added; `docs/probe.md` documents every one.

use serde::Serialize;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when every node probed is healthy (`pylon probe` then exits 0).
    pub healthy: bool,
    /// One entry per upstream probed, in configuration order.
    pub upstreams: Vec<UpstreamReport>,
}

/// One upstream.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamReport {
    /// The upstream's `id` (for an inline upstream without one, where it is defined, e.g.
    /// `routes[0].upstream`).
    pub id: String,
    /// Where it is configured: `upstreams[0]` in a resources file, `/apisix/upstreams/1`
    /// in etcd or through the admin API.
    pub field: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// True when every node is healthy.
    pub healthy: bool,
    /// One entry per node, in configuration order.
    pub nodes: Vec<NodeReport>,
}

/// One node: each step of a connection, what it found, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// `host:port` as configured.
    pub node: String,
    /// Where the node is configured, e.g. `upstreams[0].nodes[0]`.
    pub field: String,
    /// True when no finding has severity `error`.
    pub healthy: bool,
    /// The conclusion in plain words: `healthy`, or the first error's message and fix.
    pub verdict: String,
    /// Name resolution.
    pub dns: Dns,
    /// The TCP connection (`null` when there was no address to connect to).
    pub tcp: Option<Tcp>,
    /// The TLS handshake (`null` for `scheme: http`, or when TCP failed).
    pub tls: Option<Tls>,
    /// The one HTTP request (`null` when no connection was made).
    pub http: Option<Http>,
    /// Everything worth saying, errors first in connection order, then warnings and notes.
    pub findings: Vec<Finding>,
}

/// Name resolution of the node's host.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Dns {
    /// The node's host as configured.
    pub host: String,
    /// True when the host is an IP address (nothing to resolve).
    pub ip_literal: bool,
    /// Addresses the name resolves to now (for an IP address: itself).
    pub addresses: Vec<String>,
    /// The address the proxy uses for this node (resolved at load, refreshed in the
    /// background), `host:port`; `null` when it has none.
    pub address: Option<String>,
    /// The resolver's error, if resolution failed.
    pub error: Option<String>,
}

/// The TCP connection.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Tcp {
    /// Whether it connected within the connect timeout.
    pub connected: bool,
    /// Time to connect (or to fail), in milliseconds.
    pub ms: f64,
    /// The error (`Connection refused (os error 111)`, `timed out after 5s`), if any.
    pub error: Option<String>,
    /// `refused`, `timeout` or `other` when it failed.
    pub failure: Option<&'static str>,
}

/// The TLS handshake, made with the proxy's settings for this node.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Tls {
    /// The SNI sent; `null` when none could be (no host name).
    pub sni: Option<String>,
    /// Whether the proxy verifies the upstream certificate (`tls.verify`, default true).
    pub verify: bool,
    /// Whether the handshake completed.
    pub completed: bool,
    /// Handshake time (or time to fail), in milliseconds.
    pub ms: f64,
    /// Negotiated version, e.g. `TLSv1.3`.
    pub version: Option<String>,
    /// Negotiated cipher suite, e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: Option<String>,
    /// Negotiated ALPN protocol, e.g. `http/1.1`.
    pub alpn: Option<String>,
    /// OpenSSL's reasons when the handshake failed (`tlsv1 alert unknown ca`, `wrong
    /// version number`).
    pub error: Option<String>,
    /// The TLS alert the upstream sent during the handshake (`handshake failure`).
    pub alert: Option<String>,
    /// When the handshake failed because the node speaks plain HTTP: the status line it
    /// answered a plain request with.
    pub plain_http: Option<String>,
    /// The certificates the upstream sent, leaf first.
    pub server_chain: Vec<CertInfo>,
    /// The verification of that chain against the CA bundle (and the SNI).
    pub verification: Verification,
    /// Mutual TLS: what the upstream asked for, what was sent, whether it was refused.
    pub client_cert: ClientCert,
}

/// One certificate.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CertInfo {
    /// Subject, e.g. `CN=test.com`.
    pub subject: String,
    /// Issuer, e.g. `CN=ROOTCA`.
    pub issuer: String,
    /// subjectAltName DNS names and IP addresses.
    pub sans: Vec<String>,
    /// notBefore, as OpenSSL prints it (`Jan  1 00:00:00 2027 GMT`).
    pub not_before: String,
    /// notAfter, same format.
    pub not_after: String,
    /// True when notAfter is in the past.
    pub expired: bool,
    /// True when notBefore is in the future.
    pub not_yet_valid: bool,
}

/// Verification of the upstream's chain.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Verification {
    /// True when OpenSSL found no error (the host name included when `verify` is on).
    pub ok: bool,
    /// What the chain was verified against: `ca_certificate upstream-ca`,
    /// `upstreams[0].tls.ca_certs`, or `the system CA store`.
    pub trusted: String,
    /// Each error OpenSSL reported, in order.
    pub errors: Vec<VerifyError>,
}

/// One verification error.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyError {
    /// Position in the chain (0 = the upstream's own certificate).
    pub depth: u32,
    /// OpenSSL's `X509_V_ERR_*` code (62 = hostname mismatch, 20 = unable to get local
    /// issuer certificate, 10 = certificate has expired).
    pub code: i32,
    /// OpenSSL's reason, e.g. `unable to get local issuer certificate`.
    pub reason: String,
    /// The subject of the certificate at that depth.
    pub subject: String,
}

/// Mutual TLS, as seen from the client side.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClientCert {
    /// Whether the upstream asked for a client certificate (sent a CertificateRequest).
    pub requested: bool,
    /// The CA names it listed as acceptable (may be empty even when it asked).
    pub acceptable_cas: Vec<String>,
    /// The client certificate the proxy presents, if one is configured.
    pub configured: Option<ClientCertInfo>,
    /// Whether that certificate chains to one of `acceptable_cas` (`null` when either is
    /// missing).
    pub chains_to_acceptable: Option<bool>,
    /// How the upstream refused it, if it did: a TLS alert during the handshake or after it
    /// (TLS 1.3), the connection closed right after the handshake, or nginx's HTTP 400.
    pub rejected: Option<String>,
}

/// The configured client certificate.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClientCertInfo {
    /// Where it comes from: `ssl upstream-ssl`, or `upstreams[0].tls.client_cert`.
    pub source: String,
    /// The leaf certificate.
    pub cert: CertInfo,
    /// Subjects of the intermediate certificates sent with it.
    pub chain: Vec<String>,
}

/// The one HTTP/1.1 request.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Http {
    /// Request line, e.g. `GET /health`.
    pub request: String,
    /// The Host header sent (as the proxy would, per `pass_host`).
    pub host: String,
    /// The response status, if one arrived.
    pub status: Option<u16>,
    /// What went wrong instead (an alert, a reset, a timeout).
    pub error: Option<String>,
    /// Why no request was made, when none was (e.g. `h2` negotiated).
    pub skipped: Option<String>,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Requests through this node fail (502/504): the node is unhealthy.
    Error,
    /// Works now, but deserves attention.
    Warning,
    /// Worth knowing.
    Note,
}

/// What a finding is about; stable names for scripts and the dashboard.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The node's host name does not resolve.
    DnsFailed,
    /// Nothing listens on the node's address.
    ConnectionRefused,
    /// No TCP answer within `timeout.connect`.
    ConnectTimeout,
    /// Another TCP error.
    ConnectFailed,
    /// `scheme: https`, but the node speaks plain HTTP.
    PlainHttp,
    /// `scheme: http`, but the node speaks TLS.
    TlsExpected,
    /// The handshake did not finish within `timeout.connect`.
    TlsTimeout,
    /// The handshake failed for another reason (OpenSSL's reason in the message).
    HandshakeFailed,
    /// No host name to send as SNI and verify against (IP-only node, no `tls.sni`).
    NoSni,
    /// The upstream does not serve the name sent as SNI (alert `unrecognized name`).
    UnrecognizedName,
    /// The upstream certificate is not for the SNI.
    HostnameMismatch,
    /// The upstream certificate does not chain to the CA bundle.
    UntrustedServerCert,
    /// The upstream certificate has expired (or is not valid yet).
    ServerCertExpired,
    /// Another verification error.
    ServerCertInvalid,
    /// The upstream requires a client certificate and none is configured.
    ClientCertMissing,
    /// The client certificate is not issued by a CA the upstream accepts.
    ClientCertUntrusted,
    /// The client certificate has expired (or is not valid yet).
    ClientCertExpired,
    /// The upstream refused the client certificate for another reason.
    ClientCertRejected,
    /// The upstream closed the connection right after the handshake.
    ClosedAfterHandshake,
    /// The HTTP request failed (reset, timeout).
    HttpFailed,
    /// The upstream answered with a 5xx status.
    HttpStatus,
    /// `tls.verify: false`: the upstream is not authenticated.
    VerifyOff,
    /// The SNI comes from each request's Host header.
    SniFromRequest,
    /// A client certificate is configured but the upstream did not ask for it.
    ClientCertNotRequested,
}

/// One thing the probe found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What it is about.
    pub cause: Cause,
    /// How serious.
    pub severity: Severity,
    /// In plain words, e.g. `the upstream certificate is for test.com but SNI was
    /// 127.0.0.1`.
    pub message: String,
    /// The configuration field to change, e.g. `upstreams[0].tls.sni`.
    pub field: Option<String>,
    /// What to do, e.g. `set upstreams[0].tls.sni: test.com`.
    pub fix: Option<String>,
}

impl Finding {
    /// `message: fix` (or the message alone).
    pub fn sentence(&self) -> String {
        match &self.fix {
            Some(fix) => format!("{}: {fix}", self.message),
            None => self.message.clone(),
        }
    }
}
