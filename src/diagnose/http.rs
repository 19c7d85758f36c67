//! The probe's one HTTP/1.1 request, over TLS or plain TCP, and the plain-HTTP check made
//! after a failed handshake.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use openssl::ssl::{ErrorCode, SslStream};

use super::connect::{alert_in, is_timeout, ssl_error_text, Plan};
use super::report::Http;

/// Most response bytes read (the status line and nginx's error page fit easily).
const MAX_RESPONSE: usize = 16 * 1024;

/// Writes the request, reads the response over TLS; also returns how the upstream refused
/// the client certificate after the handshake, if it did.
pub(super) fn tls_exchange(
    stream: &mut SslStream<TcpStream>,
    plan: &Plan,
    request: Http,
) -> (Http, String, Option<String>) {
    let _ = stream.get_ref().set_read_timeout(Some(plan.read_timeout));
    let _ = stream.get_ref().set_write_timeout(Some(plan.write_timeout));
    let mut tls_io = TlsIo { stream, last: None };
    let (mut http, body) = exchange(&mut tls_io, plan, request);
    let mut rejected = None;
    if let Some(e) = tls_io.last.take() {
        let text = ssl_error_text(&e);
        if let Some(alert) = alert_in(&text) {
            rejected = Some(format!("TLS alert after the handshake: {alert}"));
        } else if http.status.is_none() && !text.contains("timed out") {
            rejected = Some(format!(
                "the connection was closed right after the handshake, before any response ({text})"
            ));
        }
        http.error = Some(text);
    } else if http.status.is_none() && http.error.is_some() {
        rejected =
            Some("the connection was closed right after the handshake, before any response".into());
    }
    if http.status == Some(400) {
        for msg in [
            "No required SSL certificate was sent",
            "The SSL certificate error",
        ] {
            if body.contains(msg) {
                rejected = Some(format!("HTTP 400: {msg} (nginx)"));
            }
        }
    }
    (http, body, rejected)
}

/// Read/Write over an `SslStream` keeping the last OpenSSL error (its alert text).
struct TlsIo<'a> {
    stream: &'a mut SslStream<TcpStream>,
    last: Option<openssl::ssl::Error>,
}

impl TlsIo<'_> {
    fn keep(&mut self, e: openssl::ssl::Error) -> std::io::Error {
        if let Some(io) = e.io_error() {
            if is_timeout(io) {
                return std::io::Error::new(io.kind(), io.to_string());
            }
        }
        let io = std::io::Error::other(ssl_error_text(&e));
        self.last = Some(e);
        io
    }
}

impl Read for TlsIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.stream.ssl_read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => Ok(0),
            Err(e) => Err(self.keep(e)),
        }
    }
}

impl Write for TlsIo<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.ssl_write(buf).map_err(|e| self.keep(e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends `GET path` with the Host header and reads the response: its head, then the body by
/// `Content-Length` or until the end of a chunked body or of the connection (the request
/// asks the server to close), at most [`MAX_RESPONSE`] bytes. Returns the filled request
/// record and the body's first bytes.
pub(super) fn exchange<S: Read + Write>(s: &mut S, plan: &Plan, mut http: Http) -> (Http, String) {
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pylon-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        plan.path, plan.host_header
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        http.error = Some(e.to_string());
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.len() < MAX_RESPONSE && !complete(&buf) {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                if buf.is_empty() {
                    http.error = Some(if is_timeout(&e) {
                        format!("no response within {:?} (timeout.read)", plan.read_timeout)
                    } else {
                        e.to_string()
                    });
                }
                break;
            }
        }
    }
    http.status = status_of(&buf);
    if http.status.is_some() {
        http.error = None;
    } else if http.error.is_none() {
        http.error = Some(if buf.is_empty() {
            "the connection was closed before any response".into()
        } else {
            "the answer is not HTTP".into()
        });
    }
    let text = String::from_utf8_lossy(&buf);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (http, body)
}

/// Whether `buf` holds a whole response (by `Content-Length`, or a chunked body's end).
fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let body = &buf[end + 4..];
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return body.ends_with(b"0\r\n\r\n");
        }
    }
    false
}

/// The status code of an HTTP/1.x status line at the start of `buf`.
fn status_of(buf: &[u8]) -> Option<u16> {
    let line_end = buf.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&buf[..line_end]).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// After a failed handshake: whether the node answers plain HTTP; its status line if so.
pub(super) fn plain_http(addr: SocketAddr, plan: &Plan) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, plan.connect_timeout).ok()?;
    let _ = s.set_read_timeout(Some(plan.connect_timeout));
    let _ = s.set_write_timeout(Some(plan.connect_timeout));
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: pylon-probe\r\nConnection: close\r\n\r\n",
        plan.host_header
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = vec![0u8; 512];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        if buf[..got].contains(&b'\n') {
            break;
        }
    }
    status_of(&buf[..got])?;
    let text = String::from_utf8_lossy(&buf[..got]);
    text.lines().next().map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(status_of(b"HTTP/1.1 404 Not Found\r\n"), Some(404));
        assert_eq!(status_of(b"HTTP/1.1 200"), None);
        assert_eq!(status_of(b"SSH-2.0\r\n"), None);
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"));
        assert!(complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        ));
        assert!(!complete(b"HTTP/1.1 200 OK\r\n"));
    }
}
