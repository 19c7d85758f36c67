//! Helpers for the operations tests: a `pylon` process with a custom static file and
//! signals, a plain-HTTP origin with a slow endpoint, bounded polling, and a metrics scraper.

use super::loopback_listener;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{free_port, pylon_bin};

/// Polls `f` every 20 ms until it returns true or `limit` passes; returns whether it did.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `pylon.yaml` listening on `port`, with extra `gateway:` lines (each indented by
/// two spaces already), and `resources.yaml`. Returns the static file's path.
pub fn write_static(dir: &Path, port: u16, extra: &str, resources: &str) -> PathBuf {
    super::write_config_with(dir, port, extra, resources)
}

/// Sends `sig` (e.g. `libc::SIGTERM`) to `pid`.
pub fn signal(pid: u32, sig: i32) {
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A `pylon run` child; killed on drop if still running.
pub struct Pylon {
    pub port: u16,
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub log_path: PathBuf,
    pub out_path: PathBuf,
    child: Child,
}

impl Pylon {
    /// Writes the config (see [`write_static`]) and starts `pylon run -c` with it, logging
    /// into `<name>.log` / `<name>.out`; waits until it listens.
    pub fn start(dir: &Path, extra: &str, resources: &str) -> Pylon {
        let port = free_port();
        let conf = write_static(dir, port, extra, resources);
        Pylon::spawn(dir, &conf, port, "pylon", &[], &[])
    }

    /// Starts `pylon run -c conf <args>` and waits until `port` accepts connections.
    pub fn spawn(
        dir: &Path,
        conf: &Path,
        port: u16,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Pylon {
        let log_path = dir.join(format!("{name}.log"));
        let out_path = dir.join(format!("{name}.out"));
        let mut cmd = Command::new(pylon_bin());
        cmd.args(["run", "-c"])
            .arg(conf)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&log_path).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let mut p = Pylon {
            port,
            dir: dir.to_path_buf(),
            conf: conf.to_path_buf(),
            log_path,
            out_path,
            child,
        };
        let up = wait_until(Duration::from_secs(10), || {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("pylon exited with {status}:\n{}", p.log());
            }
            listening(port)
        });
        assert!(up, "pylon did not listen on {port}:\n{}", p.log());
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// The error log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Standard output so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    /// Waits (bounded) until the error log contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.log().contains(needle))
    }

    /// Waits at most `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(limit, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Waits (bounded) until the access log on standard output holds the requests made so
    /// far: Pylon writes it in batches, up to 100 ms late. Sends a marker request (a path
    /// no route matches) and waits for its line; the earlier requests' lines were recorded
    /// before the marker's.
    pub fn access_log_caught_up(&self) -> bool {
        static MARKERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let marker = format!("/access-log-marker-{}-{n}", std::process::id());
        self.get(&marker);
        wait_until(Duration::from_secs(10), || self.stdout().contains(&marker))
    }

    /// `GET path` on a new connection: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        get(&self.url(path))
    }
}

impl Drop for Pylon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET url` on a new connection: (status, body).
pub fn get(url: &str) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let resp = client.get(url).send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

/// Scrapes `/metrics` on `port`, once the metrics listener accepts (it may start after the
/// proxy listener the gateway's start waited for).
pub fn scrape(port: u16) -> String {
    assert!(
        wait_until(Duration::from_secs(20), || listening(port)),
        "the metrics listener on {port} never accepted"
    );
    let (status, body) = get(&format!("http://127.0.0.1:{port}/metrics"));
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of the sample whose line starts with `series` (name and labels exactly as
/// rendered, e.g. `pylon_config_version` or `pylon_http_requests_total{route="a",status="200"}`).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// A plain-HTTP origin: `/slow?ms=N` answers `slow` after N milliseconds, anything else
/// `ok <path>` at once. Counts requests received and answered.
pub struct PlainOrigin {
    pub port: u16,
    pub received: Arc<AtomicUsize>,
    pub answered: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl PlainOrigin {
    pub fn start() -> PlainOrigin {
        let (runtime, listener, port) = loopback_listener();
        let received = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let (rx, ax) = (received.clone(), answered.clone());
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (rx, ax) = (rx.clone(), ax.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            rx.fetch_add(1, Ordering::SeqCst);
                            let ax = ax.clone();
                            let ms: Option<u64> = (req.uri().path() == "/slow").then(|| {
                                req.uri()
                                    .query()
                                    .and_then(|q| q.strip_prefix("ms="))
                                    .and_then(|v| v.parse().ok())
                                    .unwrap_or(1000)
                            });
                            let path = req.uri().path().to_string();
                            async move {
                                let body = match ms {
                                    Some(ms) => {
                                        tokio::time::sleep(Duration::from_millis(ms)).await;
                                        "slow".to_string()
                                    }
                                    None => format!("ok {path}"),
                                };
                                ax.fetch_add(1, Ordering::SeqCst);
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(body)),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        PlainOrigin {
            port,
            received,
            answered,
            _runtime: runtime,
        }
    }

    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

/// A resources file with one route per `(id, uri)` to the plain origin on `port`.
pub fn plain_routes(port: u16, routes: &[(&str, &str)], end_marker: bool) -> String {
    let mut s = String::from("routes:\n");
    for (id, uri) in routes {
        s.push_str(&format!(
            "  - id: {id}\n    uri: {uri}\n    upstream_id: origin\n"
        ));
    }
    s.push_str(&format!(
        "upstreams:\n  - id: origin\n    nodes:\n      - {{ host: 127.0.0.1, port: {port}, weight: 1 }}\n"
    ));
    if end_marker {
        s.push_str("#END\n");
    }
    s
}

/// Replaces `path`'s content atomically (write beside, then rename over).
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
