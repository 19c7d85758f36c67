//! The immutable runtime table: what a request reads. Built by
//! [`config::compile`](crate::config::compile()), swapped whole, never changed in place.

use std::sync::Arc;

use crate::router::Router;
use crate::tls::store::CertStore;
use crate::upstream::{Timeouts, Upstream};

/// A compiled route: its id and the upstream it proxies to.
#[derive(Debug)]
pub struct Route {
    /// The route's `id`.
    pub id: String,
    /// The same, shared with per-request plugin state without copying.
    pub id_str: Arc<str>,
    /// Where requests go (from the route, or its service).
    pub upstream: Arc<Upstream>,
    /// The route's own `timeout`, replacing the upstream's when set.
    pub timeouts: Option<Timeouts>,
    /// `enable_websocket` (the route's, else its service's; default false): whether an
    /// `Upgrade` request is passed on. Without it the upgrade headers are dropped, as in
    /// APISIX, and the upstream answers an ordinary request.
    pub websocket: bool,
    /// Its plugins (merged from service, plugin config and route), in execution order.
    pub plugins: crate::plugin::Chain,
    /// Its Prometheus handles, filled on first use.
    pub metrics: crate::ops::metrics::RouteHandles,
}

/// Everything the proxy needs for one configuration version.
#[derive(Debug)]
pub struct Table {
    /// Host + method + path → route.
    pub router: Router<Arc<Route>>,
    /// Every upstream in use (named and inline), for background health checks and DNS.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Server certificates for the HTTPS listeners, by SNI.
    pub tls: CertStore,
    /// The global rules' plugins: run for every request, before the route's.
    pub global: crate::plugin::Chain,
}

impl Table {
    /// A table with no routes: every request gets 404.
    pub fn empty() -> Self {
        Table {
            router: crate::router::RouterBuilder::default().build(),
            upstreams: Vec::new(),
            tls: CertStore::default(),
            global: crate::plugin::Chain::default(),
        }
    }
}
