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

/// Why a request is refused before routing, with the status to answer, or `None`:
/// - 400: an HTTP/1.1 request without Host, or more than one Host header (RFC 9112 §3.2;
///   HTTP/1.0 may omit Host, HTTP/2 carries it in `:authority`);
/// - 400: more than one Content-Length, one that is not a plain number (`5, 5`), or both
///   Content-Length and Transfer-Encoding (RFC 9112 §6.3: ambiguous framing, the ground of
///   request smuggling; nginx refuses the same);
/// - 501: a Transfer-Encoding other than `chunked` (`gzip, chunked`: nginx answers 501 too).
pub fn refuse_reason(req: &pingora_http::RequestHeader) -> Option<(u16, &'static str)> {
    use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
    let hosts = req.headers.get_all(HOST).iter().count();
    if hosts > 1 {
        return Some((400, "more than one Host header"));
    }
    if hosts == 0 && req.uri.authority().is_none() && req.version == http::Version::HTTP_11 {
        return Some((400, "HTTP/1.1 request without Host"));
    }
    // No allocation: this runs on every request.
    let mut lengths = req.headers.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let number = |v: &[u8]| !v.is_empty() && v.iter().all(u8::is_ascii_digit);
        if lengths.next().is_some() || !number(first.as_bytes()) {
            return Some((
                400,
                "more than one Content-Length, or one that is not a number",
            ));
        }
    }
    let mut codings = req.headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        if req.headers.contains_key(CONTENT_LENGTH) {
            return Some((400, "both Content-Length and Transfer-Encoding"));
        }
        let chunked = first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked");
        if !chunked || codings.next().is_some() {
            return Some((501, "a Transfer-Encoding other than chunked"));
        }
    }
    None
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
/// (as APISIX falls back to `remote_addr`). `client` replaces the TCP peer's address (what
/// the `real-ip` plugin found), as it does for APISIX's `remote_addr`.
pub fn hash_key_bytes<'a>(
    session: &'a Session,
    key: &HashKey,
    client: Option<std::net::IpAddr>,
) -> Cow<'a, [u8]> {
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
            client
                .or_else(|| client_ip(session))
                .map(|ip| ip.to_string().into_bytes())
                .unwrap_or_default(),
        ),
    }
}

/// Sets `X-Forwarded-For` (the incoming values, if any, then the client address), `X-Real-IP`,
/// `X-Forwarded-Proto`, `X-Forwarded-Host` (host name without port) and `X-Forwarded-Port`
/// from the downstream connection, replacing what the client sent. `client` replaces the TCP
/// peer's address (what the `real-ip` plugin found).
pub fn set_forwarding_headers(
    session: &Session,
    client: Option<std::net::IpAddr>,
    req: &mut RequestHeader,
) -> Result<()> {
    use http::HeaderValue;
    // Values are built from stack buffers: one allocation each (the header value), no
    // formatting into Strings (this runs on every request).
    if let Some(ip) = client.or_else(|| client_ip(session)) {
        let mut buf = [0u8; 64];
        let ip = ascii(&mut buf, format_args!("{ip}"));
        let ip_value = HeaderValue::from_bytes(ip).map_err(header_error)?;
        if !req.headers.contains_key("x-forwarded-for") {
            req.insert_header("x-forwarded-for", ip_value.clone())?;
        } else {
            let mut xff = Vec::with_capacity(64);
            for prev in req.headers.get_all("x-forwarded-for") {
                if let Ok(prev) = prev.to_str() {
                    if !prev.trim().is_empty() {
                        xff.extend_from_slice(prev.trim().as_bytes());
                        xff.extend_from_slice(b", ");
                    }
                }
            }
            xff.extend_from_slice(ip);
            let xff = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff));
            req.insert_header("x-forwarded-for", xff.map_err(header_error)?)?;
        }
        req.insert_header("x-real-ip", ip_value)?;
    }
    let tls = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .is_some();
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    req.insert_header("x-forwarded-proto", proto)?;
    // As APISIX (nginx's $host): the host name without port.
    let host = request_host(session);
    if host.is_empty() {
        req.remove_header("x-forwarded-host");
    } else {
        let value = HeaderValue::from_str(host).map_err(header_error)?;
        req.insert_header("x-forwarded-host", value)?;
    }
    if let Some(port) = session
        .server_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.port())
    {
        let mut buf = [0u8; 8];
        let port = ascii(&mut buf, format_args!("{port}"));
        let value = HeaderValue::from_bytes(port).map_err(header_error)?;
        req.insert_header("x-forwarded-port", value)?;
    }
    Ok(())
}

/// Writes `args` into `buf` and returns the written part (an IP address or a port: at most
/// 45 bytes, RFC 4291 §2.2).
fn ascii<'b>(buf: &'b mut [u8], args: std::fmt::Arguments<'_>) -> &'b [u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = cursor.write_fmt(args);
    let n = usize::try_from(cursor.position()).unwrap_or(0);
    &buf[..n]
}

fn header_error(e: impl std::fmt::Display) -> Box<pingora_core::Error> {
    pingora_core::Error::explain(
        pingora_core::ErrorType::InternalError,
        format!("forwarding header: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_with_ambiguous_host_or_framing_are_refused() {
        let req = |version, headers: &[(&str, &str)]| {
            let mut r = pingora_http::RequestHeader::build("POST", b"/", None).unwrap();
            r.set_version(version);
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).unwrap();
            }
            r
        };
        const HTTP_10: http::Version = http::Version::HTTP_10;
        const HTTP_11: http::Version = http::Version::HTTP_11;
        let ok = |h: &[(&str, &str)]| refuse_reason(&req(HTTP_11, h));
        assert_eq!(ok(&[("host", "a")]), None);
        assert_eq!(ok(&[]).unwrap().0, 400);
        assert_eq!(refuse_reason(&req(HTTP_10, &[])), None);
        assert_eq!(ok(&[("host", "a"), ("host", "b")]).unwrap().0, 400);
        assert_eq!(
            ok(&[("host", "a"), ("content-length", "5, 5")]).unwrap().0,
            400
        );
        let two = [
            ("host", "a"),
            ("content-length", "5"),
            ("content-length", "5"),
        ];
        assert_eq!(ok(&two).unwrap().0, 400);
        let both = [
            ("host", "a"),
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(ok(&both).unwrap().0, 400);
        let gzip = [("host", "a"), ("transfer-encoding", "gzip, chunked")];
        assert_eq!(ok(&gzip).unwrap().0, 501);
        assert_eq!(ok(&[("host", "a"), ("transfer-encoding", "Chunked")]), None);
        assert_eq!(ok(&[("host", "a"), ("content-length", "12")]), None);
    }
}
