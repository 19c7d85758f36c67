//! Operations: hot reload, draining, the access log and Prometheus metrics.
//!
//! [`Operations`] is a Pingora background service. It is created before Pingora forks into
//! the background (so SIGHUP and SIGUSR1 are handled from the start and a bad access-log
//! path fails the start), and starts its threads after the fork:
//! - the reload thread ([`reload`]): file watcher, SIGHUP;
//! - the signal thread: SIGHUP → reload, SIGUSR1 → reopen the access log;
//! - the access-log writer ([`access_log`]).
//!
//! Pingora itself handles SIGQUIT (hand the listeners to `pylon run -u`, then drain), SIGTERM
//! (drain) and SIGINT (exit now). Once Pingora broadcasts the shutdown, this service waits
//! until every client connection has closed, or `gateway.graceful_shutdown_timeout` seconds
//! (default [`DEFAULT_DRAIN`]), flushes the access log and exits, instead of Pingora's fixed
//! grace period.
//!
//! The proxy reports each request through [`RequestOps`] and [`request_done`].

pub mod access_log;
pub mod drain;
pub mod etcd_sync;
pub mod h2c;
pub mod hold;
pub mod log_limit;
pub mod metrics;
pub mod publish;
pub mod reload;

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::{error, info, warn};
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::services::listening::Service;
use pingora_proxy::{HttpProxy, Session};
use signal_hook::consts::{SIGHUP, SIGUSR1};
use signal_hook::iterator::Signals;
use thiserror::Error;

use crate::config::Loaded;
use crate::proxy::Gateway;
use crate::table::{Route, Table};

/// Drain limit when `gateway.graceful_shutdown_timeout` is not set, in seconds.
pub const DEFAULT_DRAIN: u64 = 30;

/// Why the operations layer could not start.
#[derive(Debug, Error)]
pub enum OpsError {
    /// The access log file cannot be opened.
    #[error("{0}")]
    AccessLog(std::io::Error),
    /// Signal handlers cannot be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// Metric definitions were rejected.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// `gateway.metrics_listen` is not an address.
    #[error("gateway.metrics_listen: {0}")]
    MetricsListen(String),
}

/// Per-request timing and upstream facts, kept in the proxy's request context.
#[derive(Debug)]
pub struct RequestOps {
    start: Instant,
    upstream_start: Option<Instant>,
    upstream_end: Option<Instant>,
    upstream_status: Option<u16>,
}

impl Default for RequestOps {
    /// Starts the request clock (the context is made when the request header has arrived).
    fn default() -> Self {
        RequestOps {
            start: Instant::now(),
            upstream_start: None,
            upstream_end: None,
            upstream_status: None,
        }
    }
}

impl RequestOps {
    /// A connection attempt to an upstream node begins (the first one starts the upstream
    /// clock).
    pub fn upstream_attempt(&mut self) {
        self.upstream_start.get_or_insert_with(Instant::now);
    }

    /// The upstream's response header arrived with `status`.
    pub fn upstream_header(&mut self, status: u16) {
        self.upstream_status = Some(status);
    }

    /// A piece of the upstream's response body arrived; `end` when it was the last.
    pub fn upstream_body(&mut self, end: bool) {
        if end {
            self.upstream_end = Some(Instant::now());
        }
    }
}

/// Records a finished request in the metrics and the access log. `route` is the matched
/// route, `node` the index of the node last tried in its upstream.
pub fn request_done(
    session: &Session,
    route: Option<&Arc<Route>>,
    node: Option<usize>,
    ops: &RequestOps,
    client_ip: Option<std::net::IpAddr>,
    secret_args: &[Arc<str>],
) {
    let now = Instant::now();
    // Nothing sent: the client left first (nginx logs 499 for that).
    let status = session
        .response_written()
        .map_or(499, |r| r.status.as_u16());
    let total = now.duration_since(ops.start);
    let upstream_time = ops
        .upstream_start
        .map(|s| ops.upstream_end.unwrap_or(now).saturating_duration_since(s));
    match route {
        Some(r) => metrics::route_request(r, status, total, upstream_time),
        None => metrics::request("", status, total, None),
    }
    if !access_log::enabled() {
        return;
    }
    let req = session.req_header();
    access_log::record(&access_log::Entry {
        time: SystemTime::now(),
        client: session.client_addr().and_then(|a| a.as_inet()).map(|a| {
            // The `real-ip` plugin's address, when it found one.
            std::net::SocketAddr::new(client_ip.unwrap_or(a.ip()), a.port())
        }),
        method: &req.method,
        uri: &req.uri,
        version: req.version,
        status,
        bytes: session.body_bytes_sent(),
        referer: req.headers.get(http::header::REFERER),
        user_agent: req.headers.get(http::header::USER_AGENT),
        route: route.map(|r| &**r),
        node,
        upstream_status: ops.upstream_status,
        request_time: total,
        upstream_time,
        secret_args,
    });
}

/// The proxy service: [`Gateway`] under Pingora's HTTP proxy, with its connections counted
/// ([`drain::Counted`]). Plain listeners speak HTTP/1.1 and, to clients that open with the
/// HTTP/2 connection preface, cleartext HTTP/2 ("prior knowledge", RFC 9113 §3.3; what
/// gRPC clients use without TLS); HTTPS listeners offer `h2` by ALPN.
pub fn proxy_service(
    conf: &Arc<ServerConf>,
    gateway: Gateway,
) -> Service<drain::Counted<HttpProxy<Gateway>>> {
    let mut proxy = pingora_proxy::http_proxy(conf, gateway);
    let mut options = pingora_core::apps::HttpServerOptions::default();
    options.h2c = true;
    proxy.server_options = Some(options);
    Service::new("Pylon proxy".into(), drain::Counted::new(proxy))
}

/// The Prometheus service on `listen` (see [`metrics::listen_addr`]), one thread.
///
/// Errors: [`OpsError::MetricsListen`] when `listen` is not an address.
pub fn metrics_service(listen: &str) -> Result<Service<metrics::MetricsApp>, OpsError> {
    let addr = metrics::listen_addr(listen).map_err(OpsError::MetricsListen)?;
    let mut service = Service::new("Pylon metrics".into(), metrics::MetricsApp);
    service.add_tcp(&addr.to_string());
    service.threads = Some(1);
    info!("metrics on http://{addr}/metrics");
    Ok(service)
}

/// Where the configuration comes from after start.
#[derive(Clone)]
pub enum Source {
    /// The resources file, reloaded on change.
    File(Arc<reload::Reloader>),
    /// etcd, watched.
    Etcd(Arc<etcd_sync::EtcdSync>),
}

/// The background service; see the module documentation.
pub struct Operations {
    source: Source,
    published: Arc<publish::Published>,
    writer: Mutex<Option<access_log::Writer>>,
    signals: Mutex<Option<Signals>>,
    drain: Duration,
}

impl Operations {
    /// Sets up metrics, the access log and signal handlers for the configuration `loaded`
    /// from `static_path` (or, with `etcd`, from etcd); returns the service and the shared
    /// table the proxy serves from.
    ///
    /// Errors: see [`OpsError`].
    pub fn new(
        static_path: &Path,
        loaded: Loaded,
        etcd: Option<etcd_sync::EtcdSync>,
    ) -> Result<(Operations, Arc<ArcSwap<Table>>), OpsError> {
        metrics::init()?;
        let g = &loaded.static_file.gateway;
        let writer = if g.access_log.enabled {
            let target = match &g.access_log.path {
                // Relative to the static file's folder, like every path it names.
                Some(p) => access_log::Target::File(crate::config::base_dir(static_path).join(p)),
                None => access_log::Target::Stdout,
            };
            if target == access_log::Target::Stdout && g.daemon {
                warn!("the access log goes to stdout, which daemon mode discards: set gateway.access_log.path");
            }
            Some(access_log::install(target).map_err(OpsError::AccessLog)?)
        } else {
            None
        };
        let signals = Signals::new([SIGHUP, SIGUSR1]).map_err(OpsError::Signals)?;
        let drain = Duration::from_secs(g.graceful_shutdown_timeout.unwrap_or(DEFAULT_DRAIN));
        let table = Arc::new(ArcSwap::from_pointee(Table::empty()));
        let (published, inventory) = publish::Published::start(table.clone(), loaded.compiled);
        let published = Arc::new(published);
        let source = match etcd {
            Some(sync) => {
                sync.attach(published.clone());
                Source::Etcd(Arc::new(sync))
            }
            None => Source::File(Arc::new(reload::Reloader::new(
                static_path,
                &loaded.static_file,
                &loaded.resources_path,
                &inventory,
                published.clone(),
            ))),
        };
        let ops = Operations {
            source,
            published,
            writer: Mutex::new(writer),
            signals: Mutex::new(Some(signals)),
            drain,
        };
        Ok((ops, table))
    }

    /// The configuration source, shared with the admin API so its changes take the same
    /// path.
    pub fn source(&self) -> Source {
        self.source.clone()
    }

    fn start_threads(&self) {
        if let Some(w) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            if let Err(e) = w.spawn() {
                error!("access log: cannot start the writer thread: {e}");
            }
        }
        let (tx, rx) = mpsc::channel();
        if let Some(mut signals) = self.signals.lock().ok().and_then(|mut s| s.take()) {
            let tx = tx.clone();
            let spawned = std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        match sig {
                            SIGHUP => {
                                if tx.send(reload::Event::Hangup).is_ok() {
                                    info!("SIGHUP received: reloading the resources file");
                                } else {
                                    info!("SIGHUP received: the configuration comes from etcd and is watched; nothing to reload");
                                }
                            }
                            SIGUSR1 => {
                                info!("SIGUSR1 received: reopening the access log");
                                access_log::reopen();
                            }
                            _ => {}
                        }
                    }
                });
            if let Err(e) = spawned {
                error!("cannot start the signal thread: {e}");
            }
        }
        let spawned = match self.source.clone() {
            Source::File(reloader) => std::thread::Builder::new()
                .name("reload".into())
                .spawn(move || reloader.run(tx, rx)),
            Source::Etcd(sync) => {
                drop(rx);
                std::thread::Builder::new()
                    .name("etcd".into())
                    .spawn(move || sync.run())
            }
        };
        if let Err(e) = spawned {
            error!("cannot start the configuration thread: {e}; changes will not apply");
        }
    }
}

#[async_trait]
impl BackgroundService for Operations {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.start_threads();
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        drain::begin();
        info!(
            "draining: {} client connections open; exiting when they are done, within {:?}",
            drain::open_connections(),
            self.drain
        );
        if drain::wait_closed(Instant::now() + self.drain).await {
            info!("drained: every client connection is closed");
        } else {
            warn!(
                "graceful_shutdown_timeout ({:?}) reached with {} client connections open: \
                 closing them",
                self.drain,
                drain::open_connections()
            );
        }
        access_log::flush(Duration::from_secs(1));
        info!("exiting (config version {})", self.published.version());
        std::process::exit(0);
    }
}

/// A complete response for the small HTTP services (metrics, admin API): status, content
/// type and `Content-Length` set.
pub fn http_response(status: u16, content_type: &str, body: Vec<u8>) -> http::Response<Vec<u8>> {
    let mut resp = http::Response::new(body);
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}
