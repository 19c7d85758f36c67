//! Compiled upstreams: nodes with their prebuilt peers, the balancer, Host and SNI rules.

pub mod balancer;
pub mod peer;

use std::time::Duration;

use pingora_core::upstreams::peer::HttpPeer;

use balancer::RoundRobin;

/// How the `Host` header sent upstream is chosen (APISIX `pass_host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassHost {
    /// Keep the client's Host.
    Pass,
    /// The node's `host[:port]` (port omitted when it is the scheme's default).
    Node,
    /// This fixed value (`upstream_host`).
    Rewrite(String),
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
    /// The Host header value for `pass_host: node`.
    pub host_header: String,
    /// The peer template: address resolved, TLS settings, client certificate, CA store,
    /// pool key and timeouts set. Cloned per request.
    pub peer: HttpPeer,
}

/// A compiled upstream.
#[derive(Debug)]
pub struct Upstream {
    /// The `id` (or, for inline upstreams, where it was defined, e.g. `routes[0].upstream`).
    pub id: String,
    /// Nodes in config order (weight-0 nodes included; the balancer never picks them).
    pub nodes: Vec<Node>,
    /// Node selection.
    pub balancer: RoundRobin,
    /// Host header rule.
    pub pass_host: PassHost,
    /// Whether the scheme is https.
    pub tls: bool,
    /// Whether the upstream certificate is verified (always with a host name).
    pub verify: bool,
    /// Where the SNI comes from.
    pub sni: SniSource,
    /// Default timeouts (a route's `timeout` overrides them).
    pub timeouts: Timeouts,
    /// Further tries, each on the next node, after a failed connection (APISIX `retries`;
    /// default: number of nodes − 1).
    pub retries: u32,
}

impl Upstream {
    /// Picks the next node.
    pub fn select(&self) -> &Node {
        &self.nodes[self.balancer.next()]
    }
}
