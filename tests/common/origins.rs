//! Plain-HTTP origins for load-balancing tests: each answers with its name, records what it
//! received, and can be made slow, made to answer another status, or stopped.

use super::loopback_listener;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as an HTTP origin saw it.
#[derive(Debug, Clone)]
pub struct HttpSeen {
    pub path: String,
    pub method: String,
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<HttpSeen>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    stopped: AtomicBool,
    /// When non-zero, each connection is closed this long after it was accepted.
    lifetime_ms: AtomicU64,
    /// Connections accepted.
    accepted: AtomicU64,
    /// Connections closed by the origin.
    closed: AtomicU64,
}

/// An HTTP/1.1 origin on a free loopback port answering `<name>` with status 200 (or what
/// [`HttpOrigin::set_status`] says). Health probes (`/health`) are recorded apart.
pub struct HttpOrigin {
    pub name: String,
    pub port: u16,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl HttpOrigin {
    pub fn start(name: &str) -> HttpOrigin {
        let (runtime, listener, port) = loopback_listener();
        let state = Arc::new(State::default());
        state.status.store(200, Ordering::SeqCst);
        let st = state.clone();
        let body_name = name.to_string();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let body_name = body_name.clone();
                st.accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let lifetime = st.lifetime_ms.load(Ordering::SeqCst);
                    let st2 = st.clone();
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let st = st.clone();
                            let body_name = body_name.clone();
                            async move {
                                let headers = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.as_str().to_string(),
                                            v.to_str().unwrap_or("").to_string(),
                                        )
                                    })
                                    .collect();
                                let path = req.uri().to_string();
                                let is_probe = req.uri().path() == "/health";
                                st.seen.lock().unwrap().push(HttpSeen {
                                    path,
                                    method: req.method().to_string(),
                                    headers,
                                });
                                let delay = st.delay_ms.load(Ordering::SeqCst);
                                if delay > 0 && !is_probe {
                                    tokio::time::sleep(Duration::from_millis(delay)).await;
                                }
                                let mut resp = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from(body_name),
                                ));
                                *resp.status_mut() =
                                    hyper::StatusCode::from_u16(st.status.load(Ordering::SeqCst))
                                        .unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
                    if lifetime > 0 {
                        // Dropping the connection closes the socket without a word, as an
                        // upstream's keepalive timeout does.
                        let _ = tokio::time::timeout(Duration::from_millis(lifetime), conn).await;
                    } else {
                        let _ = conn.await;
                    }
                    st2.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        HttpOrigin {
            name: name.to_string(),
            port,
            state,
            runtime: Some(runtime),
        }
    }

    /// Answers every later request with `status`.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Delays every later non-probe response by `ms` milliseconds.
    pub fn set_delay_ms(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Closes each later connection `ms` milliseconds after accepting it.
    pub fn set_connection_lifetime_ms(&self, ms: u64) {
        self.state.lifetime_ms.store(ms, Ordering::SeqCst);
    }

    /// Connections accepted and closed so far.
    pub fn connections(&self) -> (u64, u64) {
        (
            self.state.accepted.load(Ordering::SeqCst),
            self.state.closed.load(Ordering::SeqCst),
        )
    }

    /// Requests seen (probes included).
    pub fn seen(&self) -> Vec<HttpSeen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests seen that were not health probes.
    pub fn traffic(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| !s.path.starts_with("/health"))
            .count()
    }

    /// Health probes seen.
    pub fn probes(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.starts_with("/health"))
            .count()
    }

    /// Stops listening and drops every connection: later connects are refused.
    pub fn stop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for HttpOrigin {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `- {host: 127.0.0.1, port: P, weight: W}` lines for an upstream's `nodes:` list.
pub fn node_lines(nodes: &[(u16, u32)]) -> String {
    nodes
        .iter()
        .map(|(port, w)| format!("      - {{host: 127.0.0.1, port: {port}, weight: {w}}}\n"))
        .collect()
}

/// A resources file with one catch-all route to one upstream of `nodes` and extra upstream
/// fields `extra` (YAML lines indented by 4 spaces).
pub fn lb_resources(nodes: &[(u16, u32)], extra: &str) -> String {
    format!(
        "routes:\n  - {{id: all, uri: /*, upstream_id: u}}\nupstreams:\n  - id: u\n    nodes:\n{}{extra}",
        node_lines(nodes)
    )
}
