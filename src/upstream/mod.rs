//! Compiled upstreams: nodes with their prebuilt peers, the balancer, Host and SNI rules.

pub mod balancer;
pub mod chash;
pub mod grpc_health;
pub mod health;
pub mod load;
pub mod peer;
pub mod probe;
pub mod select;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora_core::upstreams::peer::HttpPeer;

use balancer::Balancer;
use health::{HealthConfig, NodeHealth};
use load::NodeLoad;

/// How the `Host` header sent upstream is chosen (APISIX `pass_host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassHost {
    /// Keep the client's Host.
    Pass,
    /// The node's `host[:port]` (port omitted when it is the scheme's default).
    Node,
    /// This fixed value (`upstream_host`), made a header value once at load.
    Rewrite(http::HeaderValue),
}

/// Where a TLS node's SNI comes from (shared/design/config-model.md, "Upstream TLS rules").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SniSource {
    /// Known at load (from `tls.sni`, the node's host name or `upstream_host`) and already
    /// set in the node's peer; empty when no name is available.
    Fixed,
    /// The host name of the client's Host header (`pass_host: pass` without `tls.sni`).
    RequestHost,
}

/// The HTTP version Pylon speaks to an upstream's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.1 (`scheme: http`, `scheme: https`).
    H1,
    /// HTTP/2 when the node selects `h2` by ALPN (RFC 7301), else HTTP/1.1 (`scheme: https`
    /// with `http2: true`).
    H2OrH1,
    /// HTTP/2 only (`scheme: grpc`: cleartext with prior knowledge, RFC 9113 §3.3;
    /// `scheme: grpcs`: TLS with ALPN `h2`).
    H2,
}

/// Timeouts applied to each connection and request (APISIX `timeout`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// Each write to the upstream.
    pub send: Duration,
    /// Each read from the upstream.
    pub read: Duration,
}

impl Default for Timeouts {
    /// APISIX's defaults: 60 seconds each.
    fn default() -> Self {
        let d = Duration::from_secs(60);
        Timeouts {
            connect: d,
            send: d,
            read: d,
        }
    }
}

/// One node of an upstream, with everything the request path needs already built.
#[derive(Debug)]
pub struct Node {
    /// `host:port` as configured, for logs.
    pub label: String,
    /// The Host header value for `pass_host: node`, made once at load (cloning it per
    /// request shares its bytes).
    pub host_header: http::HeaderValue,
    /// The peer template: address resolved, TLS settings, client certificate, CA store,
    /// pool key and timeouts set. Cloned per request. Replaced when the background resolver
    /// finds a new address for a host name.
    pub peer: ArcSwap<HttpPeer>,
    /// False while the node's host name does not resolve (the node is then skipped).
    pub resolved: AtomicBool,
    /// The host name and port to re-resolve in the background (`None` for IP nodes).
    pub dns_name: Option<(String, u16)>,
    /// The node's weight (0 = never selected).
    pub weight: u32,
    /// Health state (stays healthy without `checks`).
    pub health: NodeHealth,
    /// Requests in flight and response-time EWMA.
    pub load: NodeLoad,
    /// Taken while a request looks for (or opens) an HTTP/2 connection to this node, so
    /// that a burst of calls to a node without a connection opens one connection and
    /// multiplexes onto it instead of opening one each (see [`Node::h2_connect_turn`]).
    pub h2_connect: Arc<tokio::sync::Mutex<()>>,
}

impl Node {
    /// Whether the node can take a request now (has an address and is healthy).
    pub fn is_up(&self) -> bool {
        self.health.is_healthy() && self.resolved.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits for this node's HTTP/2 connect turn: held from node selection until the request
    /// has a stream on a pooled connection or a new connection is up (the holder drops it
    /// then, or on failure). Pingora's pool only sees a connection once it is established,
    /// so without the turn N concurrent calls to a cold node open N connections. Waits at
    /// most `limit` (the connect timeout): a node that hangs on connect delays the others
    /// by one connect timeout, not one each; `None` then, and the caller connects anyway.
    pub async fn h2_connect_turn(
        &self,
        limit: Duration,
    ) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        tokio::time::timeout(limit, self.h2_connect.clone().lock_owned())
            .await
            .ok()
    }
}

/// A compiled upstream.
#[derive(Debug)]
pub struct Upstream {
    /// The `id` (or, for inline upstreams, where it was defined, e.g. `routes[0].upstream`).
    pub id: String,
    /// Nodes in config order (weight-0 nodes included; the balancer never picks them).
    pub nodes: Vec<Node>,
    /// Node selection.
    pub balancer: Balancer,
    /// Where the chash key comes from (`None` for other balancers).
    pub hash_key: Option<HashKey>,
    /// Health checks (`checks`), if configured.
    pub health: Option<Arc<HealthConfig>>,
    /// Set while every node is unhealthy (so the warning is logged once per episode).
    pub all_down: AtomicBool,
    /// Host header rule.
    pub pass_host: PassHost,
    /// Whether the nodes are reached over TLS (`scheme: https` or `grpcs`).
    pub tls: bool,
    /// The HTTP version spoken to the nodes.
    pub http: HttpVersion,
    /// Whether the upstream certificate is verified (always with a host name).
    pub verify: bool,
    /// Where the SNI comes from.
    pub sni: SniSource,
    /// Default timeouts (a route's `timeout` overrides them).
    pub timeouts: Timeouts,
    /// Further tries, each on the next node, after a failed connection (APISIX `retries`;
    /// default: number of nodes − 1).
    pub retries: u32,
    /// Time budget for all tries together; `None` = no limit (APISIX `retry_timeout: 0`).
    pub retry_timeout: Option<Duration>,
}

impl Upstream {
    /// A stand-in for an `upstream_id` that names no upstream (a route written to etcd before
    /// its upstream, or whose upstream was deleted): no nodes, so every request answers 503,
    /// as APISIX does ("failed to find upstream by id"). Its id is `missing:<id>`.
    pub fn missing(id: &str) -> Upstream {
        Upstream {
            id: format!("missing:{id}"),
            nodes: Vec::new(),
            balancer: Balancer::LeastConn {
                weights: Vec::new(),
                tie: std::sync::atomic::AtomicUsize::new(0),
            },
            hash_key: None,
            health: None,
            all_down: AtomicBool::new(false),
            pass_host: PassHost::Pass,
            tls: false,
            http: HttpVersion::H1,
            verify: false,
            sni: SniSource::Fixed,
            timeouts: Timeouts::default(),
            retries: 0,
            retry_timeout: None,
        }
    }
}

/// Where a `chash` upstream takes its key (APISIX `hash_on` + `key`). A request without the
/// key hashes on the client address, as APISIX does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `vars` / `remote_addr`: the client IP.
    RemoteAddr,
    /// `vars` / `uri`: the path.
    Uri,
    /// `vars` / `server_name` or `host`: the request's host name.
    Host,
    /// `vars` / `arg_NAME`: a query parameter.
    Arg(String),
    /// `header` / NAME, or `vars` / `http_NAME`: a request header (lower case).
    Header(String),
    /// `cookie` / NAME, or `vars` / `cookie_NAME`: a cookie.
    Cookie(String),
}
