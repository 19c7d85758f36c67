//! gRPC calls through the proxy: what Pylon does differently for a request whose
//! `content-type` is `application/grpc…` ([gRPC over HTTP/2]).
//!
//! - **Errors a gRPC client can read.** When Pylon itself fails a call (no route, no node,
//!   refused, TLS rejected, timeout), it answers HTTP 200 with `grpc-status` and
//!   `grpc-message` in a Trailers-Only response (one HEADERS frame with END_STREAM), as
//!   gRPC proxies do, instead of an HTTP 4xx/5xx that clients report as an opaque protocol
//!   error. After the upstream's response has started, the status goes in the trailers.
//!   Codes follow the gRPC status-code mapping ([HTTP to gRPC status]), except that Pylon's
//!   own timeouts are `DEADLINE_EXCEEDED`: see [`code_for_status`].
//! - **Deadlines.** `grpc-timeout` ([`parse_timeout`]) bounds the upstream call: connect,
//!   each write and each read of the upstream wait at most the time left (and their
//!   configured timeouts), a response still running when the deadline passes is cut, and
//!   the call then ends with `DEADLINE_EXCEEDED`. The header goes upstream unchanged.
//! - **Retries.** A call is retried on another node only when nothing reached the upstream
//!   application: a failed connect or handshake, or a stream the node refused unprocessed
//!   (`REFUSED_STREAM`, `GOAWAY` before the stream: [`safe_to_retry`]).
//!
//! [gRPC over HTTP/2]: https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md
//! [HTTP to gRPC status]: https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md

use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use pingora_core::protocols::http::HttpTask;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result, RetryType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

/// gRPC status codes ([status codes]).
///
/// [status codes]: https://github.com/grpc/grpc/blob/master/doc/statuscodes.md
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// Unknown error (an HTTP status without a better mapping).
    Unknown = 2,
    /// The deadline expired before the call completed.
    DeadlineExceeded = 4,
    /// The caller lacks permission (HTTP 403).
    PermissionDenied = 7,
    /// The method is not served (no route matches: HTTP 404).
    Unimplemented = 12,
    /// Internal error (HTTP 400, 500; a malformed `grpc-timeout`).
    Internal = 13,
    /// The service is unavailable: no node, refused, reset, TLS failure (HTTP 429, 502,
    /// 503).
    Unavailable = 14,
    /// No valid credentials: here, a client certificate the listener requires (HTTP 401).
    Unauthenticated = 16,
}

/// The gRPC code for an HTTP status Pylon would have answered: 504 (Pylon's timeouts) is
/// `DEADLINE_EXCEEDED`; others follow gRPC's HTTP-to-gRPC mapping (400 `INTERNAL`, 401
/// `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`, 404 `UNIMPLEMENTED`, 429/502/503
/// `UNAVAILABLE`, others `UNKNOWN`), with 500 `INTERNAL`.
pub fn code_for_status(status: u16) -> Code {
    match status {
        504 => Code::DeadlineExceeded,
        429 | 502 | 503 => Code::Unavailable,
        404 => Code::Unimplemented,
        400 | 500 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        _ => Code::Unknown,
    }
}

/// Whether `req` is a gRPC call: `content-type` is `application/grpc`, optionally followed
/// by `+proto`, `+json`, `;…` or `-web…` (gRPC-Web).
pub fn is_grpc(req: &RequestHeader) -> bool {
    req.headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/grpc")
    })
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits then a unit, `H` hours, `M`
/// minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds ([gRPC over
/// HTTP/2], "Timeout"). `None` when malformed.
///
/// [gRPC over HTTP/2]: https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Per-request gRPC facts, taken from the request header once.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The client's `grpc-timeout`, if any.
    pub timeout: Option<Duration>,
    /// When that timeout runs out, counted from when Pylon read the request header.
    pub deadline: Option<Instant>,
}

impl Call {
    /// The gRPC facts of `req`: `Ok(None)` when it is not a gRPC call.
    ///
    /// Errors: a `grpc-timeout` that [`parse_timeout`] refuses (grpc-go refuses such calls
    /// with `INTERNAL` too).
    pub fn of(req: &RequestHeader) -> std::result::Result<Option<Call>, &'static str> {
        if !is_grpc(req) {
            return Ok(None);
        }
        let timeout = match req.headers.get("grpc-timeout") {
            None => None,
            Some(v) => Some(parse_timeout(v.as_bytes()).ok_or("malformed grpc-timeout")?),
        };
        Ok(Some(Call {
            timeout,
            deadline: timeout.map(|t| Instant::now() + t),
        }))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Caps the peer's connect, write and read timeouts to the time left.
    ///
    /// Errors: `HTTPStatus(504)` when no time is left.
    pub fn bound(&self, peer: &mut HttpPeer) -> Result<()> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.deadline_error());
        }
        let o = &mut peer.options;
        for t in [
            &mut o.connection_timeout,
            &mut o.total_connection_timeout,
            &mut o.write_timeout,
            &mut o.read_timeout,
        ] {
            *t = Some(t.map_or(left, |t| t.min(left)));
        }
        Ok(())
    }

    /// The error raised when the deadline passes (answered `DEADLINE_EXCEEDED`).
    pub fn deadline_error(&self) -> Box<Error> {
        let t = self.timeout.unwrap_or_default();
        Error::explain(
            ErrorType::HTTPStatus(504),
            format!("the call's grpc-timeout ({t:?}) expired"),
        )
    }
}

/// Whether a failed gRPC call may go to another node: only when the upstream application
/// cannot have seen it. Pingora marks such errors retryable: `REFUSED_STREAM`, `GOAWAY`
/// (`NO_ERROR`) before the stream was accepted, a node that asked for HTTP/1.1
/// (`HTTP_1_1_REQUIRED`). Connect and handshake failures are retried before this is asked.
pub fn safe_to_retry(e: &Error) -> bool {
    matches!(e.retry, RetryType::Decided(true))
}

/// Removes the HTTP/1-only headers that HTTP/2 forbids (RFC 9113 §8.2.2) from a request
/// about to go upstream over HTTP/2: Pingora strips them from HTTP/1 requests before
/// `upstream_request_filter`, this catches what the filter added. `te` may only be
/// `trailers`.
pub fn strip_connection_headers(req: &mut RequestHeader) {
    for name in [
        http::header::CONNECTION,
        http::header::UPGRADE,
        http::header::TRANSFER_ENCODING,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        req.remove_header(&name);
    }
    let te_ok = req
        .headers
        .get(http::header::TE)
        .is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_ok {
        req.remove_header(&http::header::TE);
    }
}

/// Percent-encodes a `grpc-message` value: bytes outside printable ASCII, and `%`.
pub fn encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn status_headers(code: Code, message: &str) -> Result<http::HeaderMap> {
    let mut h = http::HeaderMap::with_capacity(2);
    h.insert("grpc-status", HeaderValue::from(code as u8 as u16));
    let msg = HeaderValue::from_str(&encode_message(message))
        .map_err(|e| Error::because(ErrorType::InternalError, "grpc-message", e))?;
    h.insert("grpc-message", msg);
    Ok(h)
}

/// Ends the call with `code` and `message` ("pylon: " is prefixed): a Trailers-Only
/// response when no response header went out yet, else trailers after what was sent (HTTP/2
/// only; an HTTP/1 client just sees the response end).
///
/// Errors: writing to the client failed.
pub async fn respond(session: &mut Session, code: Code, message: &str) -> Result<()> {
    let message = format!("pylon: {message}");
    let status = status_headers(code, &message)?;
    if session.as_downstream().response_written().is_some() {
        if !session.as_downstream().is_http2() {
            return Ok(());
        }
        let task = HttpTask::Trailer(Some(Box::new(status)));
        return session.write_response_tasks(vec![task]).await.map(|_| ());
    }
    let mut resp = ResponseHeader::build(200, Some(4))?;
    resp.insert_header(CONTENT_TYPE, "application/grpc")?;
    for (name, value) in &status {
        resp.insert_header(name.clone(), value.clone())?;
    }
    if !session.as_downstream().is_http2() {
        resp.insert_header(CONTENT_LENGTH, "0")?;
    }
    let task = HttpTask::Header(Box::new(resp), true);
    session.write_response_tasks(vec![task]).await.map(|_| ())
}

/// What went wrong, for `grpc-message`, from the error that failed the call. Names the
/// cause without addresses or certificate details (those go to the error log).
/// `closed_after_handshake`: a fresh TLS connection closed before any response (how a
/// rejected client certificate shows with TLS 1.3).
pub fn failure_message(e: &Error, call: &Call, closed_after_handshake: bool) -> String {
    use ErrorType::*;
    if closed_after_handshake {
        return "the upstream closed the connection right after the TLS handshake (client \
                certificate rejected?)"
            .into();
    }
    let what = match e.etype() {
        // Pylon's own answers (no node, deadline…): their explanation is Pylon's text.
        HTTPStatus(_) => {
            return e
                .context
                .as_ref()
                .map_or_else(|| "the call failed".to_string(), |c| c.to_string())
        }
        ConnectRefused => "the upstream refused the connection",
        ConnectTimedout => "connecting to the upstream timed out",
        ConnectNoRoute => "no route to the upstream",
        TLSHandshakeFailure => "the TLS handshake with the upstream failed",
        HandshakeError => {
            "the HTTP/2 handshake with the upstream failed (does the node speak HTTP/2?)"
        }
        TLSHandshakeTimedout => "the TLS handshake with the upstream timed out",
        InvalidCert => "the upstream's certificate failed verification",
        ReadTimedout | WriteTimedout => "the upstream did not answer in time",
        ConnectionClosed => "the upstream closed the connection",
        ReadError | WriteError => "the upstream connection failed",
        H2Error | InvalidH2 | H2Downgrade => "HTTP/2 error with the upstream",
        _ => "the upstream call failed",
    };
    match (e.etype(), call.timeout) {
        (ConnectTimedout | TLSHandshakeTimedout | ReadTimedout | WriteTimedout, Some(t)) => {
            format!("{what} (grpc-timeout {t:?})")
        }
        (TLSHandshakeFailure, _) => match tls_alert(e) {
            Some(alert) => format!(
                "{what}: the upstream sent the TLS alert \"{alert}\"{}",
                if CLIENT_CERT_ALERTS.contains(&alert) {
                    " (client certificate missing or not trusted?)"
                } else {
                    ""
                }
            ),
            None => what.to_string(),
        },
        _ => what.to_string(),
    }
}

/// TLS alerts (RFC 8446 §6.2) a server sends about the client's certificate.
const CLIENT_CERT_ALERTS: [&str; 6] = [
    "certificate required",
    "bad certificate",
    "unknown ca",
    "certificate unknown",
    "certificate expired",
    "access denied",
];

/// The TLS alert named in a handshake error (OpenSSL words them `… alert unknown ca …`).
fn tls_alert(e: &Error) -> Option<&'static str> {
    const ALERTS: [&str; 9] = [
        "certificate required",
        "bad certificate",
        "unknown ca",
        "certificate unknown",
        "certificate expired",
        "access denied",
        "certificate revoked",
        "handshake failure",
        "protocol version",
    ];
    let text = e.to_string();
    ALERTS
        .into_iter()
        .find(|a| text.contains(&format!("alert {a}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_per_the_spec() {
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout(b"3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_timeout(b"99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [
            &b""[..],
            b"S",
            b"10",
            b"100000000m",
            b"1x",
            b"-1S",
            b"1.5S",
            b" 1S",
        ] {
            assert_eq!(
                parse_timeout(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn grpc_content_types() {
        let req = |ct: &str| {
            let mut r = RequestHeader::build("POST", b"/a.B/C", None).unwrap();
            r.insert_header("content-type", ct).unwrap();
            r
        };
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;x=1",
            "application/grpc-web",
        ] {
            assert!(is_grpc(&req(ct)), "{ct}");
        }
        for ct in ["application/json", "application/grp", "text/plain"] {
            assert!(!is_grpc(&req(ct)), "{ct}");
        }
        assert!(!is_grpc(&RequestHeader::build("POST", b"/", None).unwrap()));
    }

    #[test]
    fn calls_carry_their_deadline() {
        let mut r = RequestHeader::build("POST", b"/a.B/C", None).unwrap();
        r.insert_header("content-type", "application/grpc").unwrap();
        let call = Call::of(&r).unwrap().unwrap();
        assert_eq!(call.timeout, None);
        assert!(!call.expired());
        r.insert_header("grpc-timeout", "0m").unwrap();
        let call = Call::of(&r).unwrap().unwrap();
        assert!(call.expired());
        let mut peer = HttpPeer::new("127.0.0.1:1", false, String::new());
        assert_eq!(
            call.bound(&mut peer).unwrap_err().etype(),
            &ErrorType::HTTPStatus(504)
        );
        r.insert_header("grpc-timeout", "2S").unwrap();
        let call = Call::of(&r).unwrap().unwrap();
        peer.options.read_timeout = Some(Duration::from_secs(60));
        peer.options.write_timeout = Some(Duration::from_millis(10));
        call.bound(&mut peer).unwrap();
        assert!(peer.options.read_timeout.unwrap() <= Duration::from_secs(2));
        assert_eq!(peer.options.write_timeout, Some(Duration::from_millis(10)));
        r.insert_header("grpc-timeout", "soon").unwrap();
        assert!(Call::of(&r).is_err());
    }

    #[test]
    fn status_mapping_and_message_encoding() {
        assert_eq!(code_for_status(404), Code::Unimplemented);
        assert_eq!(code_for_status(503), Code::Unavailable);
        assert_eq!(code_for_status(502), Code::Unavailable);
        assert_eq!(code_for_status(504), Code::DeadlineExceeded);
        assert_eq!(code_for_status(400), Code::Internal);
        assert_eq!(code_for_status(418), Code::Unknown);
        assert_eq!(encode_message("a b%c\u{e9}\n"), "a b%25c%C3%A9%0A");
    }

    #[test]
    fn failure_messages_name_the_cause() {
        let call = Call {
            timeout: Some(Duration::from_millis(300)),
            deadline: None,
        };
        let e = Error::explain(ErrorType::ReadTimedout, "x");
        assert_eq!(
            failure_message(&e, &call, false),
            "the upstream did not answer in time (grpc-timeout 300ms)"
        );
        let cause = "error:0A00045C:SSL routines::tlsv13 alert certificate required";
        let e = Error::because(
            ErrorType::TLSHandshakeFailure,
            "handshake",
            cause.to_string(),
        );
        assert_eq!(
            failure_message(&e, &call, false),
            "the TLS handshake with the upstream failed: the upstream sent the TLS alert \
             \"certificate required\" (client certificate missing or not trusted?)"
        );
        let e = Error::explain(ErrorType::HTTPStatus(503), "no available node");
        assert_eq!(failure_message(&e, &call, false), "no available node");
        assert!(failure_message(&e, &call, true).contains("client certificate rejected?"));
    }

    #[test]
    fn h1_only_headers_are_removed() {
        let mut r = RequestHeader::build("POST", b"/", None).unwrap();
        r.insert_header("connection", "keep-alive").unwrap();
        r.insert_header("te", "gzip").unwrap();
        r.insert_header("x-keep", "1").unwrap();
        strip_connection_headers(&mut r);
        assert!(r.headers.get("connection").is_none() && r.headers.get("te").is_none());
        assert!(r.headers.get("x-keep").is_some());
        r.insert_header("te", "trailers").unwrap();
        strip_connection_headers(&mut r);
        assert_eq!(r.headers.get("te").unwrap(), "trailers");
    }
}
