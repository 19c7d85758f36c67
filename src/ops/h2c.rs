//! Cleartext HTTP/2 ("prior knowledge", RFC 9113 §3.3) beside HTTP/1.1 on plain listeners.
//!
//! Pingora's own h2c switch reads the first 24 bytes of every plain connection to compare
//! them with the HTTP/2 preface, and waits until 24 bytes came. An HTTP/1.0 request can be
//! shorter (`OPTIONS / HTTP/1.0\r\n\r\n`, HAProxy's default health check, is 22 bytes) and
//! would then hang. [`serve`] reads only as long as the bytes still match the preface, as
//! nginx does, puts them back, and hands the connection to Pingora's HTTP/2 path (which then
//! finds the 24 bytes at once) or straight to its HTTP/1 loop.

use std::sync::Arc;
use std::time::Duration;

use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a new plain connection may take to send its first bytes (nginx's
/// `client_header_timeout` default).
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(60);

/// What the first bytes of a connection said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// The HTTP/2 preface.
    Http2,
    /// Anything else: HTTP/1.x.
    Http1,
}

/// Which protocol the bytes read so far (`seen`, at most 24) announce: `None` while they
/// are still a prefix of the preface.
pub fn classify(seen: &[u8]) -> Option<Sniffed> {
    if !PREFACE.starts_with(seen) {
        Some(Sniffed::Http1)
    } else if seen.len() == PREFACE.len() {
        Some(Sniffed::Http2)
    } else {
        None
    }
}

/// Serves one connection of the proxy `app` (whose server options turn h2c on): TLS
/// connections as Pingora does (ALPN decides), plain ones after [`classify`] decided.
pub async fn serve<A>(app: &Arc<A>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    if stream.get_ssl_digest().is_some() || !stream.as_any().is::<L4Stream>() {
        return app.process_new(stream, shutdown).await;
    }
    let Ok(mut l4) = stream.into_any().downcast::<L4Stream>() else {
        return None; // checked just above
    };
    let mut seen = [0u8; 24];
    let mut n = 0;
    let sniffed = tokio::time::timeout(FIRST_BYTES_TIMEOUT, async {
        loop {
            match l4.read(&mut seen[n..]).await {
                Ok(0) | Err(_) => return None,
                Ok(k) => n += k,
            }
            if let Some(s) = classify(&seen[..n]) {
                return Some(s);
            }
        }
    })
    .await
    .ok()
    .flatten()?;
    l4.rewind(&seen[..n]);
    let stream: Stream = l4;
    if sniffed == Sniffed::Http2 {
        return app.process_new(stream, shutdown).await;
    }
    // Pingora's HTTP/1 loop (pingora-core `apps::ServerApp::process_new`), unchanged.
    let mut session = ServerSession::new_http1(stream);
    if *shutdown.borrow() {
        session.set_keepalive(None);
    } else {
        session.set_keepalive(Some(60));
    }
    session.set_keepalive_reuses_remaining(
        app.server_options()
            .and_then(|opts| opts.keepalive_request_limit),
    );
    let mut result = app.process_new_http(session, shutdown).await;
    while let Some((stream, persistent_settings)) = result.map(|r| r.consume()) {
        let mut session = ServerSession::new_http1(stream);
        if let Some(persistent_settings) = persistent_settings {
            persistent_settings.apply_to_session(&mut session);
        }
        result = app.process_new_http(session, shutdown).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_http1_requests_are_recognised_at_their_first_byte() {
        assert_eq!(classify(b"O"), Some(Sniffed::Http1));
        assert_eq!(
            classify(b"OPTIONS / HTTP/1.0\r\n\r\n"),
            Some(Sniffed::Http1)
        );
        assert_eq!(classify(b"PRI * HTTP/1.1"), Some(Sniffed::Http1));
        assert_eq!(classify(b"P"), None);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(classify(PREFACE), Some(Sniffed::Http2));
    }
}
