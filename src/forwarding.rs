//! Request facts taken from the downstream session: the client's host name, the chash key,
//! and the forwarding headers sent upstream (`X-Forwarded-For`, `-Proto`, `-Host`, `-Port`,
//! `X-Real-IP`, as APISIX sets them).

use std::borrow::Cow;

use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use crate::router::host_without_port;
use crate::upstream::HashKey;

/// The client's host name: the Host header (or the URI's authority, for HTTP/2), without port
/// and without a trailing dot (`test.com.` is `test.com`).
pub fn request_host(session: &Session) -> &str {
    host_without_port(raw_host(session)).trim_end_matches('.')
}

/// Why a request's Host is unacceptable (RFC 9112 §3.2: an HTTP/1.1 request without Host,
/// or any request with more than one Host header, gets 400), or `None`. HTTP/1.0 may omit
/// Host; HTTP/2 carries it in `:authority`.
pub fn host_problem(req: &pingora_http::RequestHeader) -> Option<&'static str> {
    let hosts = req.headers.get_all(http::header::HOST).iter().count();
    if hosts > 1 {
        return Some("more than one Host header");
    }
    let missing = hosts == 0 && req.uri.authority().is_none();
    (missing && req.version == http::Version::HTTP_11).then_some("HTTP/1.1 request without Host")
}

fn raw_host(session: &Session) -> &str {
    let req = session.req_header();
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The bytes a chash upstream hashes for this request; the client IP when the key is absent
/// (as APISIX falls back to `remote_addr`).
pub fn hash_key_bytes<'a>(session: &'a Session, key: &HashKey) -> Cow<'a, [u8]> {
    let req = session.req_header();
    let found: Option<&'a [u8]> = match key {
        HashKey::RemoteAddr => None,
        HashKey::Uri => Some(req.uri.path().as_bytes()),
        HashKey::Host => {
            let host = request_host(session);
            if host.bytes().any(|b| b.is_ascii_uppercase()) {
                return Cow::Owned(host.to_ascii_lowercase().into_bytes());
            }
            Some(host.as_bytes())
        }
        HashKey::Header(name) => req.headers.get(name.as_str()).map(|v| v.as_bytes()),
        HashKey::Arg(name) => req.uri.query().and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then_some(v.as_bytes())
            })
        }),
        HashKey::Cookie(name) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then_some(v.as_bytes())
            }),
    };
    match found {
        Some(bytes) if !bytes.is_empty() => Cow::Borrowed(bytes),
        _ => Cow::Owned(
            client_ip(session)
                .map(|ip| ip.to_string().into_bytes())
                .unwrap_or_default(),
        ),
    }
}

/// Sets `X-Forwarded-For` (the incoming values, if any, then the TCP peer), `X-Real-IP`,
/// `X-Forwarded-Proto`, `X-Forwarded-Host` (host name without port) and `X-Forwarded-Port`
/// from the downstream connection, replacing what the client sent.
pub fn set_forwarding_headers(session: &Session, req: &mut RequestHeader) -> Result<()> {
    if let Some(ip) = client_ip(session) {
        let ip = ip.to_string();
        let mut xff = String::new();
        for prev in req.headers.get_all("x-forwarded-for") {
            if let Ok(prev) = prev.to_str() {
                if !prev.trim().is_empty() {
                    xff.push_str(prev.trim());
                    xff.push_str(", ");
                }
            }
        }
        xff.push_str(&ip);
        req.insert_header("x-forwarded-for", xff)?;
        req.insert_header("x-real-ip", ip)?;
    }
    let tls = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .is_some();
    req.insert_header("x-forwarded-proto", if tls { "https" } else { "http" })?;
    // As APISIX (nginx's $host): the host name without port.
    let host = request_host(session);
    if host.is_empty() {
        req.remove_header("x-forwarded-host");
    } else {
        req.insert_header("x-forwarded-host", host.to_string())?;
    }
    if let Some(port) = session
        .server_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.port())
    {
        req.insert_header("x-forwarded-port", port.to_string())?;
    }
    Ok(())
}
