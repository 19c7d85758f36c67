//! Plugins: what a route does to a request on the way (APISIX's plugin model).
//!
//! Each plugin is one module behind the small [`Plugin`] trait, whose methods follow the
//! request: [`Plugin::rewrite`] and [`Plugin::access`] (before the upstream is picked; either
//! may answer the request itself with a [`Reply`]), [`Plugin::upstream_request`] (the request
//! as the upstream will see it), [`Plugin::response_header`], [`Plugin::response_body`] and
//! [`Plugin::log`]. A plugin says which of them it implements ([`Phases`]), so a request only
//! calls what does something.
//!
//! Configuration flows through [`registry`]: a plugin's configuration (a JSON value from the
//! resources file, etcd or the admin API) is checked against the plugin's schema, with
//! APISIX's defaults, and compiled once into the plugin's own type. Nothing is parsed or
//! looked up by name per request. [`Chain`] holds a route's compiled plugins in APISIX's
//! execution order (higher `priority` first); the proxy runs the global rules' chain, then the
//! route's.
//!
//! Adding a plugin: one new file here and one line in [`registry::REGISTRY`].

pub mod consumer;
pub mod redis;
pub mod registry;
pub mod vars;

pub mod basic_auth;
pub mod body_filter;
pub mod consumer_restriction;
pub mod ip_list;
pub mod jwt_auth;

pub mod cors;
pub mod ip_restriction;
pub mod key_auth;
pub mod limit_conn;
pub mod limit_count;
pub mod limit_count_redis;
pub mod limit_req;
pub mod limit_req_redis;
pub mod proxy_rewrite;
pub mod real_ip;
pub mod redirect;
pub mod request_id;
pub mod response_rewrite;

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};

pub use consumer::Consumer;
pub use registry::{compile_map, Env, PluginError};

/// Which [`Plugin`] methods a plugin implements (the others are never called).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// [`Plugin::rewrite`]
    pub rewrite: bool,
    /// [`Plugin::access`]
    pub access: bool,
    /// [`Plugin::upstream_request`]
    pub upstream_request: bool,
    /// [`Plugin::response_header`]
    pub response_header: bool,
    /// [`Plugin::response_body`]
    pub response_body: bool,
    /// [`Plugin::log`]
    pub log: bool,
}

/// An answer a plugin gives instead of proxying (APISIX `core.response.exit`).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers to send (Content-Length is added from `body`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body (may be empty).
    pub body: Bytes,
}

impl Reply {
    /// A reply with a JSON body `{"message":"<message>"}` and a newline, as APISIX's
    /// authentication plugins answer (`401 {"message":"Missing API key in request"}`).
    pub fn message(status: u16, message: &str) -> Reply {
        let body = serde_json::json!({ "message": message }).to_string() + "\n";
        Reply::json(status, Bytes::from(body))
    }

    /// A reply with a JSON body given as is.
    pub fn json(status: u16, body: Bytes) -> Reply {
        Reply {
            status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        }
    }

    /// A reply with no body (nginx answers its own status page; APISIX plugins without
    /// `rejected_msg` send an empty body too).
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

/// What a request does next after a plugin's rewrite or access step.
#[derive(Debug)]
pub enum Flow {
    /// Go on to the next plugin, then the upstream.
    Continue,
    /// Answer with this instead of proxying.
    Reply(Reply),
}

/// Something a plugin holds for the length of a request and releases when it ends (a
/// `limit-conn` slot). Dropped when the request's [`PluginCtx`] is.
pub trait Held: Send + Sync {}

/// Per-request state the plugins share: who the client is, which consumer authenticated,
/// what to add to the response. Lives in the proxy's request context.
#[derive(Default)]
pub struct PluginCtx {
    /// The client address: the TCP peer, or what `real-ip` took from a header. Limits,
    /// `ip-restriction`, `X-Forwarded-For`, `X-Real-IP` and the access log use it.
    pub client_ip: Option<IpAddr>,
    /// The client's port (`$remote_port`): the TCP peer's, or the one `real-ip` took with the
    /// address (`1.2.3.4:9080`).
    pub client_port: Option<u16>,
    /// The consumer an authentication plugin identified.
    pub consumer: Option<Arc<Consumer>>,
    /// The id of the matched route (empty before the route's chain runs or when none
    /// matched).
    pub route_id: Arc<str>,
    /// Headers to add to the response to the client, whether it comes from the upstream or
    /// from a [`Reply`] (rate-limit headers, `X-Request-Id`, CORS headers).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether the request came over TLS.
    pub tls: bool,
    /// A scheme for the upstream connection that replaces the upstream's (`proxy-rewrite`
    /// `scheme`): `Some(true)` for https.
    pub upstream_tls: Option<bool>,
    /// Slots held until the request ends.
    pub held: Vec<Box<dyn Held>>,
    /// Query arguments that carried a credential (`?apikey=`, `?jwt=`): their values are
    /// masked wherever the request target is logged.
    pub secret_args: Vec<Arc<str>>,
    /// What plugins carry from one phase of this request to a later one (the CORS headers
    /// decided from the request's `Origin`, a body being rewritten), by plugin instance.
    stash: Vec<(usize, Box<dyn Any + Send + Sync>)>,
}

/// The key under which `plugin` keeps its values in [`PluginCtx`]'s stash: its address, so
/// two instances of one plugin (a global rule's and a route's) keep theirs apart.
pub fn stash_key<P>(plugin: &P) -> usize {
    plugin as *const P as usize
}

impl PluginCtx {
    /// Queues a response header (replacing nothing: several values of one name are all
    /// sent).
    pub fn add_response_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.response_headers.push((name, value));
    }

    /// Keeps `value` for a later phase under `key` ([`stash_key`]), replacing the `T` that
    /// was there (values of different types under one key are kept apart).
    pub fn stash_put<T: Any + Send + Sync>(&mut self, key: usize, value: T) {
        let value: Box<dyn Any + Send + Sync> = Box::new(value);
        let slot = self
            .stash
            .iter_mut()
            .find(|(k, v)| *k == key && v.is::<T>());
        match slot {
            Some(slot) => slot.1 = value,
            None => self.stash.push((key, value)),
        }
    }

    /// The value kept under `key`, if it is a `T`.
    pub fn stash_get<T: Any + Send + Sync>(&self, key: usize) -> Option<&T> {
        self.stash
            .iter()
            .find(|(k, v)| *k == key && v.is::<T>())
            .and_then(|(_, v)| v.downcast_ref())
    }

    /// The value kept under `key`, if it is a `T`, to change.
    pub fn stash_mut<T: Any + Send + Sync>(&mut self, key: usize) -> Option<&mut T> {
        self.stash
            .iter_mut()
            .find(|(k, v)| *k == key && v.is::<T>())
            .and_then(|(_, v)| v.downcast_mut())
    }

    /// Removes and returns the value kept under `key`, if it is a `T`.
    pub fn stash_take<T: Any + Send + Sync>(&mut self, key: usize) -> Option<T> {
        let i = self
            .stash
            .iter()
            .position(|(k, v)| *k == key && v.is::<T>())?;
        self.stash.swap_remove(i).1.downcast().ok().map(|b| *b)
    }
}

/// One compiled plugin. Implementations are immutable (per-config state such as counters
/// sits behind shared handles), so one instance serves every request of its route.
#[async_trait]
pub trait Plugin: Send + Sync + std::fmt::Debug {
    /// The APISIX plugin name (`key-auth`).
    fn name(&self) -> &'static str;

    /// Which methods below do something.
    fn phases(&self) -> Phases;

    /// APISIX's rewrite phase: before access, may answer.
    fn rewrite(&self, _req: &RequestHeader, _cx: &mut PluginCtx) -> Flow {
        Flow::Continue
    }

    /// APISIX's access phase (rate limits, restrictions); may wait (a Redis counter).
    async fn access(&self, _req: &RequestHeader, _cx: &mut PluginCtx) -> Flow {
        Flow::Continue
    }

    /// The request as it goes upstream (after Pylon's own Host and forwarding headers).
    ///
    /// Errors: a header that cannot be set (from Pingora).
    fn upstream_request(
        &self,
        _req: &mut RequestHeader,
        _cx: &mut PluginCtx,
    ) -> pingora_core::Result<()> {
        Ok(())
    }

    /// The response header going to the client (from the upstream, or a [`Reply`]).
    ///
    /// Errors: a header that cannot be set (from Pingora).
    fn response_header(
        &self,
        _resp: &mut ResponseHeader,
        _cx: &mut PluginCtx,
    ) -> pingora_core::Result<()> {
        Ok(())
    }

    /// Each piece of the response body from the upstream; `end` on the last.
    fn response_body(&self, _body: &mut Option<Bytes>, _end: bool, _cx: &mut PluginCtx) {}

    /// After the response was sent.
    fn log(&self, _cx: &mut PluginCtx) {}
}

/// A compiled plugin with its place in the execution order.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The plugin.
    pub plugin: Arc<dyn Plugin>,
    /// APISIX's priority for it (higher runs first).
    pub priority: i32,
}

/// The plugins of one route (or of all global rules), by phase, in execution order: higher
/// APISIX priority first. Built once per configuration.
#[derive(Debug, Default, Clone)]
pub struct Chain {
    rewrite: Vec<Arc<dyn Plugin>>,
    access: Vec<Arc<dyn Plugin>>,
    upstream_request: Vec<Arc<dyn Plugin>>,
    response_header: Vec<Arc<dyn Plugin>>,
    response_body: Vec<Arc<dyn Plugin>>,
    log: Vec<Arc<dyn Plugin>>,
    names: Vec<&'static str>,
}

impl Chain {
    /// A chain of `entries`, ordered by priority (stable for equal ones).
    pub fn new(mut entries: Vec<Entry>) -> Chain {
        entries.sort_by_key(|e| std::cmp::Reverse(e.priority));
        let mut c = Chain::default();
        for e in entries {
            let p = e.plugin.phases();
            let pick = |on: bool, list: &mut Vec<Arc<dyn Plugin>>| {
                if on {
                    list.push(e.plugin.clone());
                }
            };
            pick(p.rewrite, &mut c.rewrite);
            pick(p.access, &mut c.access);
            pick(p.upstream_request, &mut c.upstream_request);
            pick(p.response_header, &mut c.response_header);
            pick(p.response_body, &mut c.response_body);
            pick(p.log, &mut c.log);
            c.names.push(e.plugin.name());
        }
        c
    }

    /// Whether the chain holds no plugin.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The plugin names in execution order.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Runs the rewrite then the access phase; the first [`Reply`] ends it.
    pub async fn before_upstream(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Option<Reply> {
        for p in &self.rewrite {
            if let Flow::Reply(r) = p.rewrite(req, cx) {
                return Some(r);
            }
        }
        for p in &self.access {
            if let Flow::Reply(r) = p.access(req, cx).await {
                return Some(r);
            }
        }
        None
    }

    /// Runs [`Plugin::upstream_request`] of each plugin.
    ///
    /// Errors: the first plugin's error.
    pub fn upstream_request(
        &self,
        req: &mut RequestHeader,
        cx: &mut PluginCtx,
    ) -> pingora_core::Result<()> {
        for p in &self.upstream_request {
            p.upstream_request(req, cx)?;
        }
        Ok(())
    }

    /// Runs [`Plugin::response_header`] of each plugin.
    ///
    /// Errors: the first plugin's error.
    pub fn response_header(
        &self,
        resp: &mut ResponseHeader,
        cx: &mut PluginCtx,
    ) -> pingora_core::Result<()> {
        for p in &self.response_header {
            p.response_header(resp, cx)?;
        }
        Ok(())
    }

    /// Whether some plugin changes the response body.
    pub fn touches_body(&self) -> bool {
        !self.response_body.is_empty()
    }

    /// Runs [`Plugin::response_body`] of each plugin.
    pub fn response_body(&self, body: &mut Option<Bytes>, end: bool, cx: &mut PluginCtx) {
        for p in &self.response_body {
            p.response_body(body, end, cx);
        }
    }

    /// Runs [`Plugin::log`] of each plugin.
    pub fn log(&self, cx: &mut PluginCtx) {
        for p in &self.log {
            p.log(cx);
        }
    }
}
