//! Downstream mutual TLS at the request level: whether a request on an HTTPS listener may
//! pass, and the client-certificate headers sent upstream.
//!
//! Rules (APISIX's `verify_https_client`, nginx's `ssl_verify_client on`):
//! - The entry that governs a request is the `ssls` entry serving its Host (as SNI lookup
//!   does), or else the one chosen at the handshake. Looking at the Host too stops a client
//!   from handshaking under a name without `client` and then asking for a protected host.
//! - If that entry has `client`, the request needs a client certificate that the handshake
//!   verified against the same CAs and depth; otherwise it is answered 400 and never reaches
//!   an upstream. Paths matching `client.skip_mtls_uri_regex` are exempt.
//! - Plain-HTTP listeners do no client-certificate checks (as APISIX, which checks `https`
//!   requests only): do not expose protected routes there.
//! - When `gateway.client_cert_headers` names headers, any such header sent by the client is
//!   removed on every listener, and the verified certificate's subject DN (RFC 4514, as
//!   nginx's `$ssl_client_s_dn`) and serial (upper-case hex, as `$ssl_client_serial`) are
//!   set instead.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use openssl::x509::{X509NameRef, X509Ref, X509VerifyResult};
use pingora_core::protocols::tls::TlsRef;
use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::store::{normalize, CertStore, ServerSsl};

/// What the handshake of one HTTPS connection decided, kept in Pingora's `SslDigest`
/// extension for the requests of that connection.
#[derive(Debug)]
pub struct DownstreamTls {
    /// The `ssls` entry that served the handshake.
    pub ssl: Arc<ServerSsl>,
    /// The verified client certificate, or why there is none.
    pub client: Result<Arc<ClientIdentity>, ClientCertError>,
}

/// Why a connection has no verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientCertError {
    /// The entry did not ask for one.
    #[error("no client certificate was requested")]
    NotRequested,
    /// The client sent none.
    #[error("no client certificate was presented")]
    Missing,
    /// Verification failed, with OpenSSL's reason (e.g. `unable to get local issuer
    /// certificate`).
    #[error("client certificate verification failed: {0}")]
    Invalid(String),
}

/// A verified client certificate, as header values ready to send.
#[derive(Debug)]
pub struct ClientIdentity {
    /// Subject DN, RFC 4514 (`CN=alice,O=Example`).
    pub subject_dn: HeaderValue,
    /// Serial number, upper-case hex.
    pub serial: HeaderValue,
}

impl ClientIdentity {
    fn of(cert: &X509Ref) -> ClientIdentity {
        let serial = cert
            .serial_number()
            .to_bn()
            .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
            .unwrap_or_default();
        ClientIdentity {
            subject_dn: header_value(rfc4514(cert.subject_name())),
            serial: header_value(serial),
        }
    }
}

/// Both inputs are ASCII without control characters by construction.
fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl DownstreamTls {
    /// Reads the client-certificate result of a finished handshake served by `ssl`.
    pub fn from_handshake(ssl: Arc<ServerSsl>, conn: &TlsRef) -> DownstreamTls {
        let client = if ssl.client.is_none() {
            Err(ClientCertError::NotRequested)
        } else {
            match conn.peer_certificate() {
                None => Err(ClientCertError::Missing),
                Some(cert) => match conn.verify_result() {
                    X509VerifyResult::OK => Ok(Arc::new(ClientIdentity::of(&cert))),
                    failed => Err(ClientCertError::Invalid(failed.error_string().to_string())),
                },
            }
        };
        DownstreamTls { ssl, client }
    }
}

/// The handshake record of the connection carrying `session`; `None` on plain HTTP.
pub fn connection(session: &Session) -> Option<&DownstreamTls> {
    session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<DownstreamTls>()
}

/// The outcome of [`check`].
#[derive(Debug)]
pub enum Verdict {
    /// Proxy the request; with the verified client, when there is one.
    Allow(Option<Arc<ClientIdentity>>),
    /// Answer 400; the reason is for the log.
    Reject(String),
}

/// Decides whether a request may pass (see the module rules). `host` is the request's host
/// name without port, `path` its path without query.
pub fn check(store: &CertStore, tls: Option<&DownstreamTls>, host: &str, path: &str) -> Verdict {
    let Some(tls) = tls else {
        return Verdict::Allow(None);
    };
    let verified = tls.client.as_ref().ok();
    let by_host = if store.any_client_auth() {
        let mut buf = [0u8; 256];
        normalize(host.as_bytes(), &mut buf).and_then(|h| store.lookup(h))
    } else {
        None
    };
    let governing = by_host.unwrap_or(&tls.ssl);
    let same_verification = governing.session_context == tls.ssl.session_context;
    let Some(auth) = &governing.client else {
        return Verdict::Allow(verified.cloned());
    };
    if auth.skips(path) {
        return Verdict::Allow(verified.filter(|_| same_verification).cloned());
    }
    match &tls.client {
        Ok(id) if same_verification => Verdict::Allow(Some(id.clone())),
        Ok(_) | Err(ClientCertError::NotRequested) => Verdict::Reject(format!(
            "host {host:?} needs a client certificate verified by ssl {:?}, but the connection \
             was set up by ssl {:?} (SNI differs from Host)",
            governing.id, tls.ssl.id
        )),
        Err(e) => Verdict::Reject(format!("{e} (ssl {:?})", governing.id)),
    }
}

/// Body of the 400 answer to a request without a valid client certificate.
pub const REJECT_BODY: &str = "{\"error_msg\":\"a valid client certificate is required\"}";

/// Answers 400 with [`REJECT_BODY`] and logs `why` (with the client's address) at warn level.
///
/// Errors: Pingora's, when the answer cannot be written.
pub async fn reject(session: &mut Session, why: &str) -> Result<()> {
    let client = session
        .client_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    log::warn!(
        "{} {} from {client} -> 400: {why}",
        session.req_header().method,
        session.req_header().uri.path()
    );
    let mut resp = pingora_http::ResponseHeader::build(400, Some(2))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, REJECT_BODY.len())?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(
            Some(bytes::Bytes::from_static(REJECT_BODY.as_bytes())),
            true,
        )
        .await
}

/// `gateway.client_cert_headers`, compiled: the request headers that carry the verified
/// client certificate upstream.
#[derive(Debug, Clone, Default)]
pub struct ClientCertHeaders {
    /// Header for the subject DN.
    pub subject_dn: Option<HeaderName>,
    /// Header for the serial number.
    pub serial: Option<HeaderName>,
}

impl ClientCertHeaders {
    /// Parses the configured names.
    ///
    /// Errors: `(field, message)` for a name that is not a valid header name.
    pub fn new(
        subject_dn: Option<&str>,
        serial: Option<&str>,
    ) -> std::result::Result<Self, (&'static str, String)> {
        let parse = |field: &'static str, name: Option<&str>| {
            name.map(|n| {
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| (field, format!("{n:?} is not a valid HTTP header name")))
            })
            .transpose()
        };
        Ok(ClientCertHeaders {
            subject_dn: parse("subject_dn", subject_dn)?,
            serial: parse("serial", serial)?,
        })
    }

    /// Removes the configured headers from `req`, then sets them from `client` when given.
    ///
    /// Errors: Pingora's, when a header cannot be inserted.
    pub fn apply(&self, req: &mut RequestHeader, client: Option<&ClientIdentity>) -> Result<()> {
        for (name, value) in [
            (&self.subject_dn, client.map(|c| &c.subject_dn)),
            (&self.serial, client.map(|c| &c.serial)),
        ] {
            let Some(name) = name else { continue };
            req.remove_header(name);
            if let Some(value) = value {
                req.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }
}

/// A distinguished name as RFC 4514 text: most specific attribute first (the reverse of
/// the certificate's order), `,` between attributes, special characters escaped with `\`
/// and anything outside printable ASCII as `\XX` hex bytes (so the result is a valid header
/// value).
pub fn rfc4514(name: &X509NameRef) -> String {
    let mut out = String::new();
    let entries: Vec<_> = name.entries().collect();
    for (i, entry) in entries.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let key = entry.object().nid().short_name().unwrap_or("?");
        out.push_str(key);
        out.push('=');
        let value = entry.data().as_slice();
        for (j, &b) in value.iter().enumerate() {
            let first = j == 0;
            let last = j + 1 == value.len();
            match b {
                b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                b'#' | b' ' if first => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                b' ' if last => out.push_str("\\ "),
                0x21..=0x7e | b' ' => out.push(char::from(b)),
                _ => out.push_str(&format!("\\{b:02X}")),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::X509NameBuilder;

    #[test]
    fn dn_is_rfc4514_most_specific_first() {
        let mut b = X509NameBuilder::new().unwrap();
        b.append_entry_by_text("C", "DE").unwrap();
        b.append_entry_by_text("O", "Acme, Inc.").unwrap();
        b.append_entry_by_text("CN", " alice#1 ").unwrap();
        let name = b.build();
        assert_eq!(rfc4514(&name), r"CN=\ alice#1\ ,O=Acme\, Inc.,C=DE");
        let mut b = X509NameBuilder::new().unwrap();
        b.append_entry_by_text("CN", "Jürgen").unwrap();
        let name = b.build();
        assert_eq!(rfc4514(&name), r"CN=J\C3\BCrgen");
        assert!(HeaderValue::try_from(rfc4514(&name)).is_ok());
    }

    #[test]
    fn header_names_are_checked() {
        assert!(ClientCertHeaders::new(Some("X-Client-DN"), None).is_ok());
        let err = ClientCertHeaders::new(None, Some("bad header")).unwrap_err();
        assert_eq!(err.0, "serial");
    }

    #[test]
    fn headers_are_replaced_or_removed() {
        let h = ClientCertHeaders::new(Some("x-client-dn"), Some("x-client-serial")).unwrap();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-client-dn", "CN=forged").unwrap();
        h.apply(&mut req, None).unwrap();
        assert!(req.headers.get("x-client-dn").is_none());
        let id = ClientIdentity {
            subject_dn: HeaderValue::from_static("CN=alice"),
            serial: HeaderValue::from_static("0A"),
        };
        req.insert_header("x-client-dn", "CN=forged").unwrap();
        h.apply(&mut req, Some(&id)).unwrap();
        assert_eq!(req.headers.get_all("x-client-dn").iter().count(), 1);
        assert_eq!(req.headers["x-client-dn"], "CN=alice");
        assert_eq!(req.headers["x-client-serial"], "0A");
    }
}
