//! The Pingora [`ProxyHttp`] implementation: a thin layer that reads the current
//! [`Table`], asks the router for a route and the route's upstream for a node, and maps
//! failures to status codes with one error-log line each.
//!
//! Hooks used, in request order:
//! - `request_filter`: on HTTPS, the client-certificate check (400 without a valid one where
//!   an `ssls` entry asks for it, see [`crate::tls::client_cert`]); then route lookup; then
//!   the plugins' rewrite and access phases, global rules first (they run even when no route
//!   matches), then the route's ([`crate::plugin`]); a plugin may answer (401, 429, a
//!   redirect). No route → 404 `{"error_msg":"404 Route Not Found"}` and a newline, as
//!   APISIX answers.
//! - `upstream_peer`: node selection (healthy, untried nodes first); clones the node's
//!   prebuilt peer, fills in the SNI when it comes from the request, applies the route's
//!   timeouts. No node → 503. Refuses (502) to connect to a TLS upstream with verification
//!   on but no name to verify, because Pingora would silently skip verification for an
//!   empty SNI.
//! - `upstream_request_filter`: the client-certificate headers (`gateway.client_cert_headers`),
//!   the Host header per `pass_host`, `X-Forwarded-*` and `X-Real-IP`; then the plugins'
//!   upstream-request step (`proxy-rewrite`, credential hiding).
//! - `upstream_response_filter`: passive health, EWMA sample.
//! - `response_filter` / `response_body_filter`: headers the plugins queued (rate limits,
//!   request id, CORS), then their response steps (`response-rewrite`).
//! - `logging`: metrics and access log (with the client address `real-ip` found), then the
//!   plugins' log step.
//! - `fail_to_connect` / `error_while_proxy`: passive health; retries on another node —
//!   always when the request cannot have reached the upstream (connect, TLS handshake),
//!   otherwise only for idempotent methods before any response arrived.
//! - `fail_to_proxy`: status mapping (refused/reset/TLS → 502, timeouts → 504) and one log
//!   line naming route, upstream, node and cause.
//!
//! gRPC calls (see [`crate::grpc`]) get their errors as `grpc-status`, their `grpc-timeout`
//! applied to the upstream call, and retries only when the upstream cannot have seen them.
//! `grpc`/`grpcs` upstreams take a per-node connect turn
//! ([`crate::upstream::Node::h2_connect_turn`]) from node selection until a stream is obtained.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use log::{error, warn};
use pingora_core::upstreams::peer::{HttpPeer, Scheme};
use pingora_core::{Error, ErrorSource, ErrorType, Result, RetryType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::forwarding::{hash_key_bytes, refuse_reason, request_host, set_forwarding_headers};
use crate::grpc::{self, Code};
use crate::plugin::{PluginCtx, Reply};
use crate::router::{ambiguous_path, normalize_path};
use crate::table::{Route, Table};
use crate::tls::client_cert::{self, ClientCertHeaders, ClientIdentity, Verdict};
use crate::upstream::balancer::Balancer;
use crate::upstream::health::Outcome;
use crate::upstream::select::{Inflight, Tried};
use crate::upstream::{peer, HttpVersion, PassHost, SniSource};

mod failure;
pub mod levers;
mod reply;

use failure::{node_label, status_for, CLOSED_AFTER_HANDSHAKE};
use reply::{finish_response_header, run_body_steps, send_reply};

/// Body of the 404 answer when no route matches (APISIX's shape).
pub const NOT_FOUND_BODY: &str = "{\"error_msg\":\"404 Route Not Found\"}\n";

/// The gateway's proxy logic. Holds the current table; a reload swaps it atomically.
pub struct Gateway {
    table: Arc<ArcSwap<Table>>,
    client_cert_headers: ClientCertHeaders,
    reject_ambiguous_paths: bool,
    /// The static file, for the `pylon probe` command named after a TLS 502.
    conf: String,
}

impl Gateway {
    /// A gateway serving from `table` (shared with whatever swaps in new versions).
    pub fn new(table: Arc<ArcSwap<Table>>) -> Self {
        Gateway {
            table,
            client_cert_headers: ClientCertHeaders::default(),
            reject_ambiguous_paths: true,
            conf: "conf/pylon.yaml".into(),
        }
    }

    /// The static file this gateway runs from: the error line after a 502 from a TLS
    /// upstream names `pylon probe -c <conf> --route <id>` to find the cause.
    pub fn with_conf_path(mut self, conf: &std::path::Path) -> Self {
        self.conf = conf.display().to_string();
        self
    }

    /// Whether paths that some upstreams read differently (see
    /// [`ambiguous_path`](crate::router::ambiguous_path)) get 400
    /// (`gateway.reject_ambiguous_paths`, default true).
    pub fn with_reject_ambiguous_paths(mut self, reject: bool) -> Self {
        self.reject_ambiguous_paths = reject;
        self
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
    /// Nodes tried so far.
    tried: Tried,
    /// Tries made so far.
    tries: u32,
    /// When the first try started (for `retry_timeout`).
    first_try: Option<Instant>,
    /// When the current try started (for the EWMA sample).
    try_start: Option<Instant>,
    /// Counts this request on its node while alive.
    inflight: Option<Inflight>,
    /// Whether the current upstream connection was reused from the pool (`None` before one
    /// is established).
    reused: Option<bool>,
    /// Whether the upstream's response header arrived.
    responded: bool,
    /// The client certificate verified on this HTTPS connection, if any.
    client_cert: Option<Arc<ClientIdentity>>,
    /// Set when a pooled connection turned out closed: the next try reconnects to the same
    /// node (it was not the node's fault).
    retry_same_node: bool,
    /// Timing and upstream facts for the access log and metrics.
    ops: crate::ops::RequestOps,
    /// What the plugins share during the request.
    plugins: PluginCtx,
    /// The table, kept when it has global rules (their later phases run from it).
    global: Option<Arc<Table>>,
    /// Set for gRPC calls (`content-type: application/grpc…`).
    grpc: Option<grpc::Call>,
    /// The node's HTTP/2 connect turn, held until the upstream stream is obtained.
    h2_turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No downstream modules: Pylon does not compress responses, and Pingora's default
    /// (a disabled compression module) costs a module context per request.
    fn init_downstream_modules(&self, modules: &mut pingora_core::modules::http::HttpModules) {
        if levers::get().compression_module {
            use pingora_core::modules::http::compression::ResponseCompressionBuilder;
            modules.add_module(ResponseCompressionBuilder::enable(0));
        }
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // Pipelined requests are answered in order (RFC 9112 §9.3.2), as nginx and HAProxy do,
        // instead of dropping the connection after the first answer.
        session.set_pipelining_enabled(true);
        if let Some((status, why)) = refuse_reason(session.req_header()) {
            log::debug!("{status} to {:?}: {why}", session.client_addr());
            session.respond_error(status).await?;
            return Ok(true);
        }
        ctx.grpc = match grpc::Call::of(session.req_header()) {
            Ok(call) => call,
            Err(why) => {
                return grpc::respond(session, Code::Internal, why)
                    .await
                    .map(|_| true)
            }
        };
        let table = self.table.load();
        let tls = client_cert::connection(session);
        // Rules match the normalized path (no `..` escapes); the original goes upstream.
        let raw = session.req_header().uri.path();
        let path = normalize_path(raw);
        if self.reject_ambiguous_paths {
            if let Some(why) = ambiguous_path(raw, &path) {
                log::debug!("400 to {:?}: {why}", session.client_addr());
                session.respond_error(400).await?;
                return Ok(true);
            }
        }
        match client_cert::check(&table.tls, tls, request_host(session), &path) {
            Verdict::Allow(client) => ctx.client_cert = client,
            Verdict::Reject(why) if ctx.grpc.is_some() => {
                warn!(
                    "{} -> grpc-status 16: {why}",
                    session.req_header().uri.path()
                );
                let msg = "a valid client certificate is required";
                return grpc::respond(session, Code::Unauthenticated, msg)
                    .await
                    .map(|_| true);
            }
            Verdict::Reject(why) => return client_cert::reject(session, &why).await.map(|_| true),
        }
        ctx.plugins.tls = tls.is_some();
        let peer = session.client_addr().and_then(|a| a.as_inet());
        ctx.plugins.client_ip = peer.map(|a| a.ip());
        ctx.plugins.client_port = peer.map(|a| a.port());
        let route = table
            .router
            .find(
                request_host(session),
                session.req_header().method.as_str(),
                &path,
            )
            .cloned();
        // Keep the table only when its global rules run later; the guard goes before any wait.
        let global = (!table.global.is_empty()).then(|| Arc::clone(&table));
        drop(table);
        if let Some(global) = global {
            ctx.global = Some(global.clone());
            if let Some(reply) = global
                .global
                .before_upstream(session.req_header(), &mut ctx.plugins)
                .await
            {
                ctx.route = route;
                return send_reply(session, ctx, reply).await.map(|_| true);
            }
        }
        if let Some(route) = route {
            ctx.route = Some(route.clone());
            if !route.plugins.is_empty() {
                ctx.plugins.route_id = route.id_str.clone();
                let reply = route
                    .plugins
                    .before_upstream(session.req_header(), &mut ctx.plugins)
                    .await;
                if let Some(reply) = reply {
                    return send_reply(session, ctx, reply).await.map(|_| true);
                }
            }
            return Ok(false);
        }
        if ctx.grpc.is_some() {
            let msg = format!("no route matches {}", session.req_header().uri.path());
            return grpc::respond(session, Code::Unimplemented, &msg)
                .await
                .map(|_| true);
        }
        let not_found = Reply::json(404, Bytes::from_static(NOT_FOUND_BODY.as_bytes()));
        send_reply(session, ctx, not_found).await.map(|_| true)
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
        ctx.h2_turn = None;
        let key = match &upstream.hash_key {
            Some(k) => hash_key_bytes(session, k, ctx.plugins.client_ip),
            None => std::borrow::Cow::Borrowed(&[][..]),
        };
        let same = std::mem::take(&mut ctx.retry_same_node)
            .then_some(ctx.node)
            .flatten();
        let Some(index) = same.or_else(|| upstream.pick(&key, &ctx.tried)) else {
            ctx.node = None;
            if upstream.nodes.is_empty() {
                return Error::e_explain(
                    ErrorType::HTTPStatus(503),
                    "the route's upstream_id names no upstream (failed to find upstream by id)",
                );
            }
            return Error::e_explain(
                ErrorType::HTTPStatus(503),
                "no available node (no node resolves, or every node was tried)",
            );
        };
        let now = Instant::now();
        ctx.first_try.get_or_insert(now);
        ctx.try_start = Some(now);
        ctx.node = Some(index);
        ctx.tried.insert(index);
        ctx.tries += 1;
        ctx.ops.upstream_attempt();
        ctx.responded = false;
        ctx.reused = None;
        ctx.inflight = Some(Inflight::start(upstream.clone(), index));
        let node = &upstream.nodes[index];
        let mut peer = Box::new(HttpPeer::clone(&node.peer.load()));
        let mut tls = upstream.tls;
        if let Some(want) = ctx.plugins.upstream_tls.filter(|t| *t != upstream.tls) {
            // proxy-rewrite `scheme`: the SNI then comes from the request.
            tls = want;
            peer.scheme = if want { Scheme::HTTPS } else { Scheme::HTTP };
            peer.sni.clear();
        }
        let sni_from_request = upstream.sni == SniSource::RequestHost || tls != upstream.tls;
        if tls && sni_from_request && peer.sni.is_empty() {
            let host = request_host(session);
            if host.parse::<std::net::IpAddr>().is_err() {
                peer.sni = host.to_string();
            }
        }
        if tls && (upstream.verify || !upstream.tls) && peer.sni.is_empty() {
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                "no host name to verify the upstream certificate against (the node and Host are \
                 IP addresses): set tls.sni or pass_host: rewrite with upstream_host",
            );
        }
        if let Some(t) = &route.timeouts {
            peer::apply_timeouts(&mut peer, t);
        }
        if levers::get().no_io_timeouts {
            peer.options.read_timeout = None;
            peer.options.write_timeout = None;
        }
        if let Some(call) = &ctx.grpc {
            call.bound(&mut peer)?;
        }
        // Only where every connection is HTTP/2: an `http2: true` node may answer in
        // HTTP/1.1, whose requests each need a connection and must not queue for one.
        if upstream.http == HttpVersion::H2 {
            let limit = peer.options.total_connection_timeout;
            ctx.h2_turn = node
                .h2_connect_turn(limit.unwrap_or(upstream.timeouts.connect))
                .await;
        }
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.client_cert_headers
            .apply(upstream_request, ctx.client_cert.as_deref())?;
        let (Some(route), Some(i)) = (&ctx.route, ctx.node) else {
            return Ok(());
        };
        if !route.websocket && upstream_request.headers.contains_key(http::header::UPGRADE) {
            // APISIX passes Upgrade only with enable_websocket: true.
            upstream_request.remove_header(&http::header::UPGRADE);
            upstream_request.insert_header(http::header::CONNECTION, "keep-alive")?;
        }
        match &route.upstream.pass_host {
            // HTTP/1.0 may come without Host; the upstream still gets one. (An HTTP/2
            // request's :authority goes on as the upstream's :authority or Host.)
            PassHost::Pass
                if upstream_request.headers.get(http::header::HOST).is_none()
                    && upstream_request.uri.authority().is_none() =>
            {
                let host = route.upstream.nodes[i].host_header.clone();
                upstream_request.insert_header(http::header::HOST, host)?;
            }
            PassHost::Pass => {}
            PassHost::Node => {
                let host = route.upstream.nodes[i].host_header.clone();
                upstream_request.insert_header(http::header::HOST, host)?;
            }
            PassHost::Rewrite(h) => {
                upstream_request.insert_header(http::header::HOST, h.clone())?;
            }
        }
        if upstream_request.version == http::Version::HTTP_2 {
            grpc::strip_connection_headers(upstream_request);
        }
        if !levers::get().no_forwarding_headers {
            set_forwarding_headers(session, ctx.plugins.client_ip, upstream_request)?;
        }
        // Only an authentication plugin may name the consumer (APISIX passes a client's own
        // X-Consumer-Username on routes without one; Pylon drops it).
        crate::plugin::consumer::strip_forged(upstream_request);
        let global = ctx.global.clone();
        if let Some(t) = &global {
            t.global
                .upstream_request(upstream_request, &mut ctx.plugins)?;
        }
        if let Some(route) = ctx.route.clone() {
            route
                .plugins
                .upstream_request(upstream_request, &mut ctx.plugins)?;
        }
        Ok(())
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
        ctx.h2_turn = None;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.responded = true;
        ctx.ops.upstream_header(upstream_response.status.as_u16());
        if let (Some(route), Some(i)) = (&ctx.route, ctx.node) {
            let up = &route.upstream;
            up.report_passive(i, Outcome::Status(upstream_response.status.as_u16()));
            if let (Balancer::Ewma { .. }, Some(start)) = (&up.balancer, ctx.try_start) {
                up.nodes[i].load.observe(start.elapsed());
            }
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        ctx.ops.upstream_body(end_of_stream);
        match &ctx.grpc {
            // A response still streaming when the deadline passes is cut.
            Some(call) if !end_of_stream && call.expired() => Err(call.deadline_error()),
            _ => Ok(None),
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        crate::ops::drain::on_response(session);
        finish_response_header(upstream_response, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        run_body_steps(ctx, body, end_of_stream);
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let client_ip = ctx.plugins.client_ip;
        crate::ops::request_done(
            session,
            ctx.route.as_ref(),
            ctx.node,
            &ctx.ops,
            client_ip,
            &ctx.plugins.secret_args,
        );
        let global = ctx.global.clone();
        let route = ctx.route.clone();
        let chains = global.as_deref().map(|t| &t.global);
        for chain in chains
            .into_iter()
            .chain(route.as_deref().map(|r| &r.plugins))
        {
            chain.log(&mut ctx.plugins);
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.h2_turn = None;
        ctx.report_failure(&e);
        if let Some(route) = &ctx.route {
            let cause = match crate::ops::metrics::failure_cause(&e) {
                // An HTTP/2 handshake cut short on a fresh TLS connection: TLS 1.3's sign of a
                // refused client certificate (see CLOSED_AFTER_HANDSHAKE).
                "h2_handshake" if route.upstream.tls => "tls_rejected",
                cause => cause,
            };
            crate::ops::metrics::upstream_failure(&route.upstream.id, cause);
        }
        // Nothing reached the upstream: any method may be retried on another node.
        if ctx.may_retry() {
            if let Some(route) = &ctx.route {
                warn!(
                    "route {} upstream {} node {}: connect failed, retrying on another node: {}",
                    route.id,
                    route.upstream.id,
                    node_label(ctx),
                    e
                );
            }
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        ctx.h2_turn = None;
        if e.esource() == &ErrorSource::Downstream {
            // The client left, timed out or sent a bad body: not the node's fault, and there
            // is no one to retry for.
            e.set_retry(false);
            return e;
        }
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        // A pooled connection the upstream had closed: retry it like Pingora does.
        let stale_pooled = client_reused && matches!(e.retry, RetryType::ReusedOnly);
        if !stale_pooled {
            ctx.report_failure(&e);
        }
        let (retry, same_node) = if ctx.grpc.is_some() {
            // Only when the upstream application cannot have seen the call: on another node
            // if one is left, else (a pooled connection going away) on a new connection.
            let safe = grpc::safe_to_retry(&e) && !session.as_ref().retry_buffer_truncated();
            let other = safe && !ctx.responded && ctx.may_retry();
            (other || (safe && client_reused), !other)
        } else {
            let retry = replayable && (stale_pooled || (!ctx.responded && ctx.may_retry()));
            (retry, stale_pooled)
        };
        ctx.retry_same_node = retry && same_node;
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = status_for(e);
        if code > 0 {
            // A fresh TLS connection that died before any response, or an HTTP/2 handshake
            // cut short on a TLS connection.
            let closed_early = ctx.route.as_ref().is_some_and(|r| r.upstream.tls)
                && !ctx.responded
                && e.esource() == &ErrorSource::Upstream
                && match e.etype() {
                    ErrorType::WriteError
                    | ErrorType::ReadError
                    | ErrorType::ConnectionClosed
                    | ErrorType::H2Error => ctx.reused == Some(false),
                    ErrorType::HandshakeError => true,
                    _ => false,
                };
            if let Some(route) = &ctx.route {
                // (A cut HTTP/2 handshake was counted by fail_to_connect.)
                if closed_early && e.etype() != &ErrorType::HandshakeError {
                    crate::ops::metrics::upstream_failure(&route.upstream.id, "tls_rejected");
                }
                let hint = if closed_early {
                    CLOSED_AFTER_HANDSHAKE
                } else {
                    ""
                };
                let probe = if route.upstream.tls && code == 502 {
                    crate::diagnose::command_hint(&self.conf, &route.id)
                } else {
                    String::new()
                };
                error!(
                    "{} {} -> {}: route {} upstream {} node {}: {}{}{hint}{probe}",
                    session.req_header().method,
                    crate::plugin::vars::mask_args(
                        &session.req_header().uri.to_string(),
                        &ctx.plugins.secret_args
                    ),
                    code,
                    route.id,
                    route.upstream.id,
                    node_label(ctx),
                    e,
                    if closed_early { "; " } else { "" },
                );
            }
            let answered = match &ctx.grpc {
                Some(call) => {
                    let msg = grpc::failure_message(e, call, closed_early);
                    grpc::respond(session, grpc::code_for_status(code), &msg).await
                }
                None => session.respond_error(code).await,
            };
            if let Err(write_err) = answered {
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
