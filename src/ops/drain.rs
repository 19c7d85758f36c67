//! Connection accounting and draining.
//!
//! [`Counted`] wraps the proxy application to count open client connections (the
//! `pylon_http_connections_open` gauge, and what the drain waits for). When Pingora starts a
//! graceful shutdown (SIGTERM, or SIGQUIT once the listeners were handed to the new process)
//! it stops accepting, then calls the application's `cleanup`, which closes idle keep-alive
//! connections at once. A client that sent its next request at that moment sees its
//! connection closed under it. To avoid that, like HAProxy's `idle-close-on-response`:
//! - once draining, every response carries `Connection: close` ([`on_response`]), so busy
//!   connections end cleanly after their next response;
//! - `cleanup` is passed on to Pingora only when every connection has ended, or after
//!   [`IDLE_CLOSE_GRACE`], whichever comes first: then only connections that stayed idle
//!   all that time are closed.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_proxy::Session;

/// How long idle keep-alive connections may stay open once draining, waiting for one last
/// request (answered with `Connection: close`).
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(2);

static DRAINING: AtomicBool = AtomicBool::new(false);
static OPEN: AtomicI64 = AtomicI64::new(0);

/// Marks the process as draining: responses from now on close their connection.
pub fn begin() {
    DRAINING.store(true, Ordering::Release);
}

/// Whether the process is draining.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Acquire)
}

/// Client connections open on the proxy listeners.
pub fn open_connections() -> i64 {
    OPEN.load(Ordering::Acquire)
}

/// Called before a response header goes out: when draining, asks for `Connection: close`.
pub fn on_response(session: &mut Session) {
    if draining() {
        session.set_keepalive(None);
    }
}

/// Waits until no connection is open or `deadline` passes; true when none is open.
pub async fn wait_closed(deadline: Instant) -> bool {
    loop {
        if open_connections() <= 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Open;

impl Open {
    fn new() -> Open {
        OPEN.fetch_add(1, Ordering::AcqRel);
        super::metrics::connections_add(1);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
        super::metrics::connections_add(-1);
    }
}

/// A [`ServerApp`] that counts the connections of the HTTP application it wraps, tells
/// HTTP/1.1 from cleartext HTTP/2 on plain connections ([`super::h2c`]), and delays its
/// `cleanup` as described in the module documentation.
pub struct Counted<A> {
    inner: Arc<A>,
}

impl<A> Counted<A> {
    /// Wraps `inner`.
    pub fn new(inner: A) -> Self {
        Counted {
            inner: Arc::new(inner),
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = Open::new();
        super::h2c::serve(&self.inner, session, shutdown).await
    }

    async fn cleanup(&self) {
        begin();
        wait_closed(Instant::now() + IDLE_CLOSE_GRACE).await;
        self.inner.cleanup().await;
    }
}
