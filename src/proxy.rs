//! The Pingora [`ProxyHttp`] implementation: a thin layer that reads the current
//! [`Table`], asks the router for a route and the route's upstream for a node, and maps
//! failures to status codes with one error-log line each.
//!
//! Hooks used, in request order:
//! - `request_filter`: on HTTPS, the client-certificate check (400 without a valid one where
//!   an `ssls` entry asks for it, see [`crate::tls::client_cert`]); then route lookup; no
//!   route → 404 `{"error_msg":"404 Route Not Found"}`.
//! - `upstream_peer`: node selection; clones the node's prebuilt peer, fills in the SNI when
//!   it comes from the request, applies the route's timeouts. Refuses (502) to connect to a
//!   TLS upstream with verification on but no name to verify, because Pingora would silently
//!   skip verification for an empty SNI.
//! - `upstream_request_filter`: the client-certificate headers (`gateway.client_cert_headers`),
//!   the Host header per `pass_host`.
//! - `fail_to_connect` / `fail_to_proxy`: retries on connect failures, status mapping
//!   (refused/reset/TLS → 502, timeouts → 504), one log line naming route, upstream, node and
//!   cause.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use log::{error, warn};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::router::host_without_port;
use crate::table::{Route, Table};
use crate::tls::client_cert::{self, ClientCertHeaders, ClientIdentity, Verdict};
use crate::upstream::{peer, PassHost, SniSource};

/// Body of the 404 answer when no route matches (APISIX's shape).
pub const NOT_FOUND_BODY: &str = "{\"error_msg\":\"404 Route Not Found\"}";

/// The gateway's proxy logic. Holds the current table; a reload swaps it atomically.
pub struct Gateway {
    table: Arc<ArcSwap<Table>>,
    client_cert_headers: ClientCertHeaders,
}

impl Gateway {
    /// A gateway serving from `table` (shared with whatever swaps in new versions).
    pub fn new(table: Arc<ArcSwap<Table>>) -> Self {
        Gateway {
            table,
            client_cert_headers: ClientCertHeaders::default(),
        }
    }

    /// Sets the headers that carry a verified client certificate upstream
    /// (`gateway.client_cert_headers`).
    pub fn with_client_cert_headers(mut self, headers: ClientCertHeaders) -> Self {
        self.client_cert_headers = headers;
        self
    }
}

/// Per-request state.
#[derive(Default)]
pub struct RequestCtx {
    /// The route found by `request_filter`. Holding the `Arc` keeps the route's config
    /// alive for the whole request, even across a reload.
    route: Option<Arc<Route>>,
    /// Index of the node picked for the current try.
    node: Option<usize>,
    /// Connection attempts made so far.
    tries: u32,
    /// Whether the current upstream connection was reused from the pool (`None` before one
    /// is established).
    reused: Option<bool>,
    /// Whether the upstream's response header arrived.
    responded: bool,
    /// The client certificate verified on this HTTPS connection, if any.
    client_cert: Option<Arc<ClientIdentity>>,
}

/// Added to the error line when a fresh TLS connection dies before any response. With TLS
/// 1.3 the server checks the client certificate after the client's handshake has finished,
/// so a rejection arrives as an alert that often loses the race with the request write and
/// shows only as a closed connection.
const CLOSED_AFTER_HANDSHAKE: &str = "the upstream closed the connection right after the TLS \
     handshake, before responding: with TLS 1.3 this is how a rejected or missing client \
     certificate shows (check tls.client_cert_id and the CA the upstream trusts)";

/// The client's host name: the Host header (or the URI's authority, for HTTP/2), without port.
fn request_host(session: &Session) -> &str {
    let req = session.req_header();
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    host_without_port(raw)
}

fn node_label(ctx: &RequestCtx) -> &str {
    match (&ctx.route, ctx.node) {
        (Some(r), Some(i)) => &r.upstream.nodes[i].label,
        _ => "-",
    }
}

/// Status for a proxy error: explicit HTTP statuses as given; timeouts 504; other upstream
/// failures 502; downstream failures 400 (0 when the client is gone); internal 500.
fn status_for(e: &Error) -> u16 {
    use pingora_core::ErrorSource;
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => *code,
        ConnectTimedout | TLSHandshakeTimedout | ReadTimedout | WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let table = self.table.load();
        let tls = client_cert::connection(session);
        let path = session.req_header().uri.path();
        match client_cert::check(&table.tls, tls, request_host(session), path) {
            Verdict::Allow(client) => ctx.client_cert = client,
            Verdict::Reject(why) => return client_cert::reject(session, &why).await.map(|_| true),
        }
        let req = session.req_header();
        let route = table
            .router
            .find(request_host(session), req.method.as_str(), req.uri.path());
        if let Some(route) = route {
            ctx.route = Some(route.clone());
            return Ok(false);
        }
        let mut resp = ResponseHeader::build(404, Some(2))?;
        resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(http::header::CONTENT_LENGTH, NOT_FOUND_BODY.len())?;
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from_static(NOT_FOUND_BODY.as_bytes())), true)
            .await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no route in context");
        };
        let upstream = &route.upstream;
        let index = upstream.balancer.next();
        ctx.node = Some(index);
        ctx.tries += 1;
        let node = &upstream.nodes[index];
        let mut peer = Box::new(node.peer.clone());
        if upstream.tls && upstream.sni == SniSource::RequestHost {
            let host = request_host(session);
            if host.parse::<std::net::IpAddr>().is_err() {
                peer.sni = host.to_string();
            }
        }
        if upstream.verify && peer.sni.is_empty() {
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                "no host name to verify the upstream certificate against (the node and Host are \
                 IP addresses): set tls.sni or pass_host: rewrite with upstream_host",
            );
        }
        if let Some(t) = &route.timeouts {
            peer::apply_timeouts(&mut peer, t);
        }
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.client_cert_headers
            .apply(upstream_request, ctx.client_cert.as_deref())?;
        let (Some(route), Some(i)) = (&ctx.route, ctx.node) else {
            return Ok(());
        };
        match &route.upstream.pass_host {
            PassHost::Pass => {}
            PassHost::Node => {
                let host = route.upstream.nodes[i].host_header.clone();
                upstream_request.insert_header(http::header::HOST, host)?;
            }
            PassHost::Rewrite(h) => {
                upstream_request.insert_header(http::header::HOST, h.clone())?;
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(route) = &ctx.route {
            let upstream = &route.upstream;
            let retries = upstream.retries;
            if ctx.tries <= retries {
                warn!(
                    "route {} upstream {} node {}: connect failed, retrying on another node: {}",
                    route.id,
                    upstream.id,
                    node_label(ctx),
                    e
                );
                e.set_retry(true);
            }
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        _fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.reused = Some(reused);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.responded = true;
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = status_for(e);
        if code > 0 {
            if let Some(route) = &ctx.route {
                let closed_early = route.upstream.tls
                    && ctx.reused == Some(false)
                    && !ctx.responded
                    && e.esource() == &pingora_core::ErrorSource::Upstream
                    && matches!(
                        e.etype(),
                        ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
                    );
                let hint = if closed_early {
                    CLOSED_AFTER_HANDSHAKE
                } else {
                    ""
                };
                error!(
                    "{} {} -> {}: route {} upstream {} node {}: {}{}{hint}",
                    session.req_header().method,
                    session.req_header().uri,
                    code,
                    route.id,
                    route.upstream.id,
                    node_label(ctx),
                    e,
                    if closed_early { "; " } else { "" },
                );
            }
            if let Err(write_err) = session.respond_error(code).await {
                warn!("failed to send error response to downstream: {write_err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _e: &Error) -> bool {
        // Upstream failures were logged by `fail_to_proxy`, once, with route and node.
        ctx.route.is_some()
    }
}
