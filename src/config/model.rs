//! Raw serde model of the two config files, field for field as written by operators.
//!
//! The static file is Pylon's own; the resources file follows Apache APISIX's standalone
//! `apisix.yaml` (field names and defaults from APISIX's `schema_def.lua`), extended with
//! `ca_certificates` and the upstream `tls` fields of `shared/design/config-model.md`.
//! Unknown fields are errors. Nothing here is checked beyond its shape: cross references,
//! certificates and value ranges are checked when compiling (see [`super::compile`]).

use std::collections::BTreeMap;

use serde::Deserialize;

pub use super::fleet::{ConfigProvider, DataEncryption, Etcd, EtcdTls};

/// An object id: APISIX accepts strings and integers; both are kept as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(untagged)]
pub enum Id {
    /// `id: hello`
    Text(String),
    /// `id: 1`
    Number(i64),
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Id::Text(s) => f.write_str(s),
            Id::Number(n) => write!(f, "{n}"),
        }
    }
}

/// The static file (`conf/pylon.yaml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticFile {
    /// Process and listener settings.
    #[serde(default)]
    pub gateway: Gateway,
    /// Path of the resources file, relative to the static file's folder.
    #[serde(default = "default_resources")]
    pub resources: String,
}

fn default_resources() -> String {
    "resources.yaml".into()
}

/// `gateway:` — what needs a restart or graceful upgrade to change.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gateway {
    /// Plain HTTP listeners, `host:port`.
    pub listen: Vec<String>,
    /// HTTPS listeners, `host:port`; certificates come from `ssls` by SNI.
    pub tls_listen: Vec<String>,
    /// Certificate name for clients without SNI (APISIX `fallback_sni`; HTTPS listeners).
    pub fallback_sni: Option<String>,
    /// Headers that carry a verified downstream client certificate upstream.
    pub client_cert_headers: ClientCertHeaders,
    /// Worker threads per service; `None` = number of CPUs.
    pub threads: Option<usize>,
    /// Let idle worker threads steal tasks (Pingora `work_stealing`).
    pub work_stealing: bool,
    /// Pid file written in daemon mode.
    pub pid_file: String,
    /// Unix socket through which `pylon run -u` takes over listeners.
    pub upgrade_sock: String,
    /// Detach into the background.
    pub daemon: bool,
    /// Error log file; `None` = stderr.
    pub error_log: Option<String>,
    /// Seconds in-flight requests get to finish after SIGTERM (or after handing the
    /// listeners over in a graceful upgrade) before the process exits anyway; `None` = 30.
    /// The process exits as soon as its connections are done.
    pub graceful_shutdown_timeout: Option<u64>,
    /// Access log settings.
    pub access_log: AccessLog,
    /// Idle upstream connections kept for reuse over all upstreams (Pingora's pool size).
    pub upstream_keepalive_pool_size: usize,
    /// Prometheus listener serving `/metrics`: `host:port`, or a bare port for loopback
    /// (`9091` = `127.0.0.1:9091`); `None` = no metrics listener.
    pub metrics_listen: Option<String>,
    /// The admin API (APISIX Admin API v3 style); `None` = no admin listener.
    pub admin: Option<Admin>,
    /// Answer 400 to paths that some upstreams read differently than Pylon's normalization
    /// (a backslash, double percent-encoding, `/..;/`): see `router::ambiguous_path`.
    pub reject_ambiguous_paths: bool,
    /// Where routes, services, upstreams, ssls and CA certificates come from: the resources
    /// file (`yaml`, the default) or etcd (`etcd`, with `gateway.etcd`). APISIX's
    /// `deployment.config_provider`.
    pub config_provider: ConfigProvider,
    /// The etcd cluster, for `config_provider: etcd` (APISIX's `deployment.etcd`).
    pub etcd: Option<Etcd>,
    /// Encryption of private keys at rest (APISIX's `apisix.data_encryption`).
    pub data_encryption: DataEncryption,
    /// Skip plugins Pylon does not have, with a warning, instead of refusing the
    /// configuration (default false: a misspelt `key-auth` must not leave a route open).
    /// For APISIX files that use plugins Pylon lacks.
    pub ignore_unknown_plugins: bool,
    /// Process-wide plugin settings (APISIX's `plugin_attr` in `config.yaml`).
    pub plugin_attr: PluginAttr,
}

/// `gateway.plugin_attr`: plugin settings that are not per route (APISIX's `plugin_attr`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginAttr {
    /// `redirect`: where `http_to_https` sends clients.
    pub redirect: Option<RedirectAttr>,
}

/// `gateway.plugin_attr.redirect`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectAttr {
    /// The port `http_to_https` redirects to (APISIX `plugin_attr.redirect.https_port`); 443
    /// is not written into the URL. Without it, the first `tls_listen` port, else 443.
    pub https_port: u16,
}

/// `gateway.admin`: the admin API listener (see `crate::admin`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `host:port`, or a bare port for loopback (`9180` = `127.0.0.1:9180`).
    pub listen: String,
    /// Value every request must carry in `X-API-KEY` (APISIX `admin_key`); required, at least
    /// 16 characters (`pylon check` refuses a missing or short one).
    pub api_key: Option<String>,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            listen: vec!["0.0.0.0:9080".into()],
            tls_listen: vec![],
            fallback_sni: None,
            client_cert_headers: ClientCertHeaders::default(),
            threads: None,
            work_stealing: true,
            pid_file: "/tmp/pylon.pid".into(),
            upgrade_sock: "/tmp/pylon_upgrade.sock".into(),
            daemon: false,
            error_log: None,
            graceful_shutdown_timeout: None,
            access_log: AccessLog::default(),
            upstream_keepalive_pool_size: 512,
            metrics_listen: None,
            admin: None,
            reject_ambiguous_paths: true,
            config_provider: ConfigProvider::Yaml,
            etcd: None,
            data_encryption: DataEncryption::default(),
            ignore_unknown_plugins: false,
            plugin_attr: PluginAttr::default(),
        }
    }
}

/// `gateway.client_cert_headers`: request headers set from the client certificate verified
/// on an HTTPS listener (see `ssls[].client`). Unset names are not sent. Whatever the client
/// sends in these headers is always removed first, on every listener.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientCertHeaders {
    /// Header for the subject DN, RFC 4514 (nginx `$ssl_client_s_dn`), e.g. `X-Client-DN`.
    pub subject_dn: Option<String>,
    /// Header for the serial number, upper-case hex (nginx `$ssl_client_serial`).
    pub serial: Option<String>,
}

/// `gateway.access_log`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLog {
    /// File path; `None` = stdout.
    pub path: Option<String>,
    /// Whether to write one line per request.
    pub enabled: bool,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            path: None,
            enabled: true,
        }
    }
}

/// The resources file (`conf/resources.yaml`), APISIX standalone format.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    /// `routes:`
    pub routes: Vec<Route>,
    /// `services:`
    pub services: Vec<Service>,
    /// `upstreams:`
    pub upstreams: Vec<Upstream>,
    /// `ssls:` (APISIX SSL objects; `type: client` ones serve upstream mTLS).
    pub ssls: Vec<Ssl>,
    /// `ca_certificates:` (API7's CA certificate objects).
    pub ca_certificates: Vec<CaCertificate>,
    /// `consumers:` (APISIX consumers: who may call, with their credentials).
    pub consumers: Vec<Consumer>,
    /// `plugin_configs:` (APISIX plugin configs, referenced by `plugin_config_id`).
    pub plugin_configs: Vec<PluginConfig>,
    /// `global_rules:` (APISIX global rules: plugins run for every request).
    pub global_rules: Vec<GlobalRule>,
}

/// A plugin map: plugin name → that plugin's configuration (APISIX `plugins`). Each value
/// is checked against the plugin's own schema at compile (see [`crate::plugin`]).
pub type Plugins = BTreeMap<String, serde_json::Value>;

/// A consumer (APISIX `consumer` schema): a caller, named by `username`, with the
/// credentials its authentication plugins check (`plugins.key-auth.key`, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Unique among consumers; `[a-zA-Z0-9_\-]+` as in APISIX.
    pub username: String,
    /// Free text.
    pub desc: Option<String>,
    /// Free key/value metadata.
    pub labels: Option<BTreeMap<String, String>>,
    /// Credential plugins (`key-auth`, `basic-auth`, `jwt-auth`).
    #[serde(default)]
    pub plugins: Plugins,
    /// APISIX consumer groups; not supported (refused when set).
    pub group_id: Option<Id>,
    /// Set by APISIX's Admin API; ignored.
    pub create_time: Option<i64>,
    /// Set by APISIX's Admin API; ignored.
    pub update_time: Option<i64>,
}

/// A plugin config (APISIX `plugin_config` schema): plugins shared by routes that name it in
/// `plugin_config_id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique among plugin configs.
    pub id: Option<Id>,
    /// Free text.
    pub name: Option<String>,
    /// Free text.
    pub desc: Option<String>,
    /// Free key/value metadata.
    pub labels: Option<BTreeMap<String, String>>,
    /// The plugins.
    #[serde(default)]
    pub plugins: Plugins,
    /// Set by APISIX's Admin API; ignored.
    pub create_time: Option<i64>,
    /// Set by APISIX's Admin API; ignored.
    pub update_time: Option<i64>,
}

/// A global rule (APISIX `global_rule` schema): plugins run for every request, before the
/// route's own, even when no route matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRule {
    /// Unique among global rules.
    pub id: Option<Id>,
    /// The plugins.
    #[serde(default)]
    pub plugins: Plugins,
    /// Set by APISIX's Admin API; ignored.
    pub create_time: Option<i64>,
    /// Set by APISIX's Admin API; ignored.
    pub update_time: Option<i64>,
}

/// `timeout: { connect, send, read }`, each in seconds (APISIX `timeout_def`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeout {
    /// Seconds to establish the TCP connection (and TLS handshake).
    pub connect: Option<f64>,
    /// Seconds allowed for each write to the upstream.
    pub send: Option<f64>,
    /// Seconds allowed for each read from the upstream.
    pub read: Option<f64>,
}

/// A route (APISIX `route` schema).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique among routes. Optional (APISIX standalone): a route without one is named by
    /// its position, `routes[3]`, in logs and metrics.
    pub id: Option<Id>,
    /// Free text.
    pub name: Option<String>,
    /// Free text.
    pub desc: Option<String>,
    /// Free key/value metadata.
    pub labels: Option<BTreeMap<String, String>>,
    /// One path: exact, or a prefix when it ends in `*` (`/api/*`).
    pub uri: Option<String>,
    /// Several paths, as `uri`.
    pub uris: Option<Vec<String>>,
    /// HTTP methods; absent = all.
    pub methods: Option<Vec<String>>,
    /// One host (as `hosts`).
    pub host: Option<String>,
    /// Host names; `*.example.com` matches any subdomain.
    pub hosts: Option<Vec<String>>,
    /// Higher wins among equally specific matches. Default 0.
    #[serde(default)]
    pub priority: i64,
    /// A service to take the upstream (and hosts) from.
    pub service_id: Option<Id>,
    /// An upstream by id (wins over the service's).
    pub upstream_id: Option<Id>,
    /// An inline upstream (wins over the service's).
    pub upstream: Option<Box<Upstream>>,
    /// Overrides the upstream's timeouts.
    pub timeout: Option<Timeout>,
    /// 1 = enabled (default), 0 = disabled.
    pub status: Option<u8>,
    /// The route's plugins (they win over its plugin config's and service's of the same
    /// name).
    pub plugins: Option<Plugins>,
    /// A plugin config whose plugins apply to this route (APISIX `plugin_config_id`).
    pub plugin_config_id: Option<Id>,
    /// Accepted for APISIX compatibility; WebSocket upgrades pass through.
    pub enable_websocket: Option<bool>,
    /// Set by APISIX's Admin API; ignored.
    pub create_time: Option<i64>,
    /// Set by APISIX's Admin API; ignored.
    pub update_time: Option<i64>,
}

/// A service (APISIX `service` schema).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique among services. Optional (APISIX standalone), but a service without one cannot
    /// be referred to.
    pub id: Option<Id>,
    /// Free text.
    pub name: Option<String>,
    /// Free text.
    pub desc: Option<String>,
    /// Free key/value metadata.
    pub labels: Option<BTreeMap<String, String>>,
    /// An upstream by id.
    pub upstream_id: Option<Id>,
    /// An inline upstream.
    pub upstream: Option<Box<Upstream>>,
    /// Hosts for routes that set none.
    pub hosts: Option<Vec<String>>,
    /// The service's plugins (for its routes, below the route's own).
    pub plugins: Option<Plugins>,
    /// Accepted for APISIX compatibility.
    pub enable_websocket: Option<bool>,
    /// Set by APISIX's Admin API; ignored.
    pub create_time: Option<i64>,
    /// Set by APISIX's Admin API; ignored.
    pub update_time: Option<i64>,
}

/// An upstream (APISIX `upstream` schema, plus Pylon's `tls` fields).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Unique among upstreams. Optional (APISIX standalone), but an upstream without one
    /// cannot be referred to.
    pub id: Option<Id>,
    /// Free text.
    pub name: Option<String>,
    /// Free text.
    pub desc: Option<String>,
    /// Free key/value metadata.
    pub labels: Option<BTreeMap<String, String>>,
    /// Balancer: `roundrobin` (default), `chash`, `least_conn`, `ewma`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// chash: `vars` | `header` | `cookie`.
    pub hash_on: Option<String>,
    /// chash: the key.
    pub key: Option<String>,
    /// `http` (default) | `https` | `grpc` (HTTP/2 cleartext) | `grpcs` (HTTP/2 over TLS).
    pub scheme: Option<String>,
    /// Pylon: with `scheme: https`, offer HTTP/2 by ALPN and use it when the node selects
    /// it (default false: HTTP/1.1).
    pub http2: Option<bool>,
    /// The nodes, list or `{"host:port": weight}` map form.
    pub nodes: Nodes,
    /// `pass` (default) | `node` | `rewrite`.
    pub pass_host: Option<String>,
    /// Host sent upstream with `pass_host: rewrite`.
    pub upstream_host: Option<String>,
    /// Timeouts in seconds.
    pub timeout: Option<Timeout>,
    /// Further tries after a failed connection.
    pub retries: Option<u32>,
    /// Seconds for all retries; 0 = no limit.
    pub retry_timeout: Option<f64>,
    /// Upstream connection reuse.
    pub keepalive_pool: Option<KeepalivePool>,
    /// Health checks (APISIX `health_checker` schema).
    pub checks: Option<Checks>,
    /// Upstream TLS.
    pub tls: Option<UpstreamTls>,
    /// Set by APISIX's Admin API; ignored.
    pub create_time: Option<i64>,
    /// Set by APISIX's Admin API; ignored.
    pub update_time: Option<i64>,
}

/// `nodes:` in either of APISIX's two forms. A sequence is read as the list form and a
/// mapping as the map form, so errors inside either keep their exact path.
#[derive(Debug, Clone)]
pub enum Nodes {
    /// `[{host, port, weight}, …]`
    List(Vec<Node>),
    /// `{"host:port": weight, …}`
    Map(indexmap::IndexMap<String, u32>),
}

/// One node of the list form.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// IP address or host name (resolved at load).
    pub host: String,
    /// Port; default 80 for http, 443 for https.
    pub port: Option<u16>,
    /// Relative share of requests; 0 = never selected.
    pub weight: u32,
    /// APISIX node priority (accepted; all nodes are used).
    pub priority: Option<i64>,
    /// Free metadata.
    pub metadata: Option<serde_yaml::Value>,
}

/// `keepalive_pool: { size, idle_timeout, requests }` (APISIX).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepalivePool {
    /// Idle connections kept (Pingora keeps one pool for all upstreams: see `gateway`).
    pub size: Option<u32>,
    /// Seconds an idle connection is kept.
    pub idle_timeout: Option<f64>,
    /// Requests per connection (not enforced yet).
    pub requests: Option<u32>,
}

/// `upstreams[].tls`: the client certificate, the trusted CAs, SNI and verification.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// An `ssls` entry of `type: client`.
    pub client_cert_id: Option<Id>,
    /// Inline client certificate (PEM or path); needs `client_key`.
    pub client_cert: Option<String>,
    /// Inline client key (PEM or path).
    pub client_key: Option<String>,
    /// Passphrase of an encrypted `client_key`.
    pub client_key_passphrase: Option<String>,
    /// A `ca_certificates` entry.
    pub ca_certificate_id: Option<Id>,
    /// Inline CA bundles (PEM or paths).
    pub ca_certs: Option<Vec<String>>,
    /// Verify the upstream's certificate and host name. Default true (APISIX: false).
    pub verify: Option<bool>,
    /// SNI (and verified name) override.
    pub sni: Option<String>,
}

/// An SSL object (APISIX `ssl` schema).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssl {
    /// Unique among ssls.
    pub id: Id,
    /// Free text.
    pub name: Option<String>,
    /// Free text.
    pub desc: Option<String>,
    /// Free key/value metadata.
    pub labels: Option<BTreeMap<String, String>>,
    /// `server` (default) or `client`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Certificate chain, PEM or path; leaf first.
    pub cert: Option<String>,
    /// Private key, PEM or path.
    pub key: Option<String>,
    /// Passphrase of an encrypted `key`.
    pub key_passphrase: Option<String>,
    /// Further certificates (e.g. ECDSA beside RSA).
    pub certs: Option<Vec<String>>,
    /// Keys for `certs`, in the same order.
    pub keys: Option<Vec<String>>,
    /// Server names (server type).
    pub snis: Option<Vec<String>>,
    /// One server name (server type).
    pub sni: Option<String>,
    /// Downstream mTLS settings (server type).
    pub client: Option<SslClient>,
    /// TLS versions (server type).
    pub ssl_protocols: Option<Vec<String>>,
    /// 1 = enabled (default), 0 = disabled.
    pub status: Option<u8>,
    /// Set by APISIX's Admin API; ignored.
    pub create_time: Option<i64>,
    /// Set by APISIX's Admin API; ignored.
    pub update_time: Option<i64>,
}

/// `ssls[].client`: verify downstream client certificates (APISIX `ssl.client`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslClient {
    /// Trusted CA certificate(s), PEM text or a path; one certificate or a bundle.
    pub ca: String,
    /// Maximum verification depth (APISIX default 1: signed by a CA in `ca`).
    pub depth: Option<u32>,
    /// Path regexes (unanchored) that need no client certificate.
    pub skip_mtls_uri_regex: Option<Vec<String>>,
}

/// A CA certificate object: one PEM certificate or a bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaCertificate {
    /// Unique among CA certificates.
    pub id: Id,
    /// Free text.
    pub name: Option<String>,
    /// Free text.
    pub desc: Option<String>,
    /// Free key/value metadata.
    pub labels: Option<BTreeMap<String, String>>,
    /// PEM text or path.
    pub cert: String,
    /// Set by APISIX's Admin API; ignored.
    pub create_time: Option<i64>,
    /// Set by APISIX's Admin API; ignored.
    pub update_time: Option<i64>,
}

impl<'de> Deserialize<'de> for Nodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodesVisitor;
        impl<'de> serde::de::Visitor<'de> for NodesVisitor {
            type Value = Nodes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of {host, port, weight} or a map of \"host:port\": weight")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Nodes, A::Error> {
                Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(Nodes::List)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Nodes, A::Error> {
                Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Nodes::Map)
            }
        }
        d.deserialize_any(NodesVisitor)
    }
}

/// `upstreams[].checks` (APISIX's `health_checker` schema; defaults from APISIX's
/// `schema_def.lua`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// Probes sent by the gateway.
    pub active: Option<ActiveCheck>,
    /// Judgement from real traffic.
    pub passive: Option<PassiveCheck>,
}

/// `checks.active`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveCheck {
    /// `http` (default), `https`, `tcp` or (Pylon) `grpc`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Pylon: the `service` asked about by `grpc` probes (`grpc.health.v1.Health/Check`;
    /// default "", the whole server).
    pub grpc_service: Option<String>,
    /// Seconds each probe may take (default 1).
    pub timeout: Option<f64>,
    /// Probes in flight at once (accepted; Pylon probes every node concurrently).
    pub concurrency: Option<u32>,
    /// Host header of http(s) probes (default: the node's Host per `pass_host`).
    pub host: Option<String>,
    /// Port to probe instead of the node's.
    pub port: Option<u16>,
    /// Path of http(s) probes (default `/`).
    pub http_path: Option<String>,
    /// Verify the certificate of https probes (default true; the upstream's `tls.verify`
    /// applies too).
    pub https_verify_certificate: Option<bool>,
    /// Extra request headers, each `"Name: value"`.
    pub req_headers: Option<Vec<String>>,
    /// When a healthy node is probed and what counts as success.
    pub healthy: Option<ActiveHealthy>,
    /// When an unhealthy node is probed and what counts as failure.
    pub unhealthy: Option<ActiveUnhealthy>,
}

/// `checks.active.healthy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthy {
    /// Seconds between probes of a healthy node (default 1).
    pub interval: Option<f64>,
    /// Statuses that count as success (default `[200, 302]`).
    pub http_statuses: Option<Vec<u16>>,
    /// Consecutive successes that mark an unhealthy node healthy (default 2).
    pub successes: Option<u32>,
}

/// `checks.active.unhealthy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveUnhealthy {
    /// Seconds between probes of an unhealthy node (default 1).
    pub interval: Option<f64>,
    /// Statuses that count as failure (default `[429, 404, 500, 501, 502, 503, 504, 505]`).
    pub http_statuses: Option<Vec<u16>>,
    /// Consecutive bad statuses that mark a node unhealthy (default 5).
    pub http_failures: Option<u32>,
    /// Consecutive connection failures that mark a node unhealthy (default 2).
    pub tcp_failures: Option<u32>,
    /// Consecutive timeouts that mark a node unhealthy (default 3).
    pub timeouts: Option<u32>,
}

/// `checks.passive`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveCheck {
    /// `http` (default), `https` or `tcp`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// What counts as success.
    pub healthy: Option<PassiveHealthy>,
    /// What counts as failure.
    pub unhealthy: Option<PassiveUnhealthy>,
}

/// `checks.passive.healthy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthy {
    /// Statuses that count as success (default 200–208, 226, 300–308).
    pub http_statuses: Option<Vec<u16>>,
    /// Consecutive successes that mark a node healthy (default 5).
    pub successes: Option<u32>,
}

/// `checks.passive.unhealthy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveUnhealthy {
    /// Statuses that count as failure (default `[429, 500, 503]`).
    pub http_statuses: Option<Vec<u16>>,
    /// Consecutive bad statuses that mark a node unhealthy (default 5).
    pub http_failures: Option<u32>,
    /// Consecutive connection failures that mark a node unhealthy (default 2).
    pub tcp_failures: Option<u32>,
    /// Consecutive timeouts that mark a node unhealthy (default 7).
    pub timeouts: Option<u32>,
}
