//! Test harness: free ports, a PKI made at test time through `pylon::certs`, an mTLS origin
//! that records what it saw, and the `pylon` binary run as a child process.
#![allow(dead_code)]

pub mod tls;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::pkey::PKey;
use openssl::ssl::{NameType, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use pylon::certs::{self, InitOptions, Issued, Role};

pub mod admin;
pub mod etcd;
pub mod grpc;
pub mod ops;
pub mod origins;
pub mod peers;
pub mod plugins;

/// A one-thread tokio runtime for an in-process origin, with a listener on a free loopback
/// port: (runtime, listener, port).
pub fn loopback_listener() -> (tokio::runtime::Runtime, tokio::net::TcpListener, u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    (runtime, listener, port)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA with a server certificate and a client certificate, written by `pylon certs init`'s
/// code into a temporary folder.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Issued,
}

impl Pki {
    /// `ca.crt`, `server.crt` (for `server_name`), `client.crt` (CN=client) and keys in
    /// `dir`.
    pub fn new(dir: &Path, server_name: &str) -> Pki {
        certs::init(&InitOptions {
            dir: dir.to_path_buf(),
            server_name: server_name.into(),
            client_name: "client".into(),
            days: 365,
            force: false,
        })
        .unwrap();
        let ca = Issued {
            cert: X509::from_pem(&std::fs::read(dir.join("ca.crt")).unwrap()).unwrap(),
            key: PKey::private_key_from_pem(&std::fs::read(dir.join("ca.key")).unwrap()).unwrap(),
        };
        Pki {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    pub fn pem(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap()
    }

    /// Issues another client certificate `CN=<cn>` into `<cn>.crt` / `<cn>.key`.
    pub fn issue_client(&self, cn: &str) -> (String, String) {
        let issued = certs::issue(&self.ca, cn, Role::Client, 365).unwrap();
        let crt = self.dir.join(format!("{cn}.crt"));
        let key = self.dir.join(format!("{cn}.key"));
        std::fs::write(&crt, issued.cert.to_pem().unwrap()).unwrap();
        std::fs::write(&key, issued.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (crt.display().to_string(), key.display().to_string())
    }
}

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Client certificate CN, or "" without one.
    pub cn: String,
    /// SNI, or "" without one.
    pub sni: String,
    /// Path and query as received.
    pub uri: String,
    /// Host header.
    pub host: String,
    /// Which TLS connection (counts from 1) carried it.
    pub conn: u64,
    /// Every request header, names in lower case, in order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The values of header `name` (lower case).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An HTTPS origin (hyper over OpenSSL) that answers `GET /hello` with `Hello API7!` (and
/// anything else with `ok`) and records every request.
pub struct Origin {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
    _runtime: tokio::runtime::Runtime,
}

impl Origin {
    /// Serves with `server.crt`/`server.key` of `pki`; with `require_client_cert`, the
    /// handshake fails unless the client presents a certificate signed by `pki`'s CA.
    pub fn start(pki: &Pki, require_client_cert: bool) -> Origin {
        let acceptor = Arc::new(server_acceptor(pki, require_client_cert));
        let (runtime, listener, port) = loopback_listener();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
        let status2 = status.clone();
        runtime.spawn(async move {
            let conns = Arc::new(AtomicU64::new(0));
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let seen = seen2.clone();
                let conns = conns.clone();
                let status = status2.clone();
                tokio::spawn(async move {
                    let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
                    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                    if std::pin::Pin::new(&mut stream).accept().await.is_err() {
                        return;
                    }
                    let conn = conns.fetch_add(1, Ordering::SeqCst) + 1;
                    let sni = stream
                        .ssl()
                        .servername(NameType::HOST_NAME)
                        .unwrap_or("")
                        .to_string();
                    let cn = stream
                        .ssl()
                        .peer_certificate()
                        .and_then(|c| {
                            c.subject_name()
                                .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                                .next()
                                .map(|e| e.data().to_string().unwrap())
                        })
                        .unwrap_or_default();
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let uri = req.uri().to_string();
                            let host = req
                                .headers()
                                .get("host")
                                .map(|h| h.to_str().unwrap().to_string())
                                .unwrap_or_default();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(n, v)| {
                                    (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                                })
                                .collect();
                            seen.lock().unwrap().push(Seen {
                                cn: cn.clone(),
                                sni: sni.clone(),
                                uri: uri.clone(),
                                host,
                                conn,
                                headers,
                            });
                            let body = if req.uri().path() == "/hello" {
                                "Hello API7!".to_string()
                            } else {
                                format!("ok {}", cn)
                            };
                            let code = status.load(Ordering::SeqCst);
                            async move {
                                let mut resp = hyper::Response::new(http_body_util::Full::new(
                                    bytes::Bytes::from(body),
                                ));
                                *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin {
            port,
            seen,
            status,
            _runtime: runtime,
        }
    }

    /// Answers every later request with `code`.
    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// Every request seen so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A TLS acceptor with `pki`'s server certificate; with `require_client_cert`, the handshake
/// fails unless the client presents a certificate signed by `pki`'s CA.
pub fn server_acceptor(pki: &Pki, require_client_cert: bool) -> SslAcceptor {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(pki.dir.join("server.crt"))
        .unwrap();
    b.set_private_key_file(pki.dir.join("server.key"), SslFiletype::PEM)
        .unwrap();
    b.set_ca_file(pki.dir.join("ca.crt")).unwrap();
    if require_client_cert {
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    b.build()
}

/// A `pylon run` child process on a free port, killed on drop.
pub struct Gateway {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

/// The `pylon` binary Cargo built for these tests, or `$PYLON_BIN` when set (a copy kept
/// apart from a target folder that other builds share).
pub fn pylon_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("PYLON_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pylon").to_string())
    })
}

/// Writes `pylon.yaml` (listening on `port`) and `resources.yaml` into `dir`.
pub fn write_config(dir: &Path, port: u16, resources: &str) -> PathBuf {
    write_config_with(dir, port, "", resources)
}

/// As [`write_config`], with `gateway_extra` (lines indented by 2 spaces) added to `gateway:`.
pub fn write_config_with(dir: &Path, port: u16, gateway_extra: &str, resources: &str) -> PathBuf {
    let conf = dir.join("pylon.yaml");
    std::fs::write(
        &conf,
        format!(
            "gateway:\n  listen: [\"127.0.0.1:{port}\"]\n  threads: 1\n  pid_file: {d}/pylon.pid\n  upgrade_sock: {d}/upgrade.sock\n{gateway_extra}resources: resources.yaml\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("resources.yaml"), resources).unwrap();
    conf
}

/// Result of `pylon check`.
pub struct CheckOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `pylon check` on `resources` (written into `dir`).
pub fn check(dir: &Path, resources: &str) -> CheckOutput {
    check_with(dir, "", resources)
}

/// Runs `pylon check` on a static file with `gateway_extra` and `resources`.
pub fn check_with(dir: &Path, gateway_extra: &str, resources: &str) -> CheckOutput {
    let conf = write_config_with(dir, free_port(), gateway_extra, resources);
    let out = Command::new(pylon_bin())
        .args(["check", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    CheckOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

impl Gateway {
    /// Starts `pylon run` with `resources` and waits (bounded polling) until it accepts
    /// connections. Panics with the gateway's log if it exits or never listens.
    pub fn start(dir: &Path, resources: &str) -> Gateway {
        Gateway::start_with(dir, "", resources)
    }

    /// As [`Gateway::start`], with `gateway_extra` added to the static file's `gateway:`.
    pub fn start_with(dir: &Path, gateway_extra: &str, resources: &str) -> Gateway {
        let port = free_port();
        let conf = write_config_with(dir, port, gateway_extra, resources);
        let log = std::fs::File::create(dir.join("pylon.log")).unwrap();
        let child = Command::new(pylon_bin())
            .args(["run", "-c"])
            .arg(&conf)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut gw = Gateway {
            port,
            dir: dir.to_path_buf(),
            child,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..400 {
            if let Some(status) = gw.child.try_wait().unwrap() {
                panic!("pylon exited with {status}:\n{}", gw.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return gw;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("pylon did not listen on {port}:\n{}", gw.log());
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pylon.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// `GET path` with an optional Host header: (status, body).
    pub fn get(&self, path: &str, host: Option<&str>) -> (u16, String) {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut req = client.get(self.url(path));
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let resp = req.send().unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The founding scenario's resources file with the origin on `port` and certificates from
/// `pki`; `tls` replaces the upstream's tls block (indented by 6 spaces).
pub fn founding_resources(port: u16, tls: &str, pki: &Pki) -> String {
    format!(
        r#"routes:
  - id: hello
    uri: /hello
    methods: [GET]
    service_id: mtls-nginx
  - id: all
    uri: /*
    service_id: mtls-nginx
services:
  - id: mtls-nginx
    upstream_id: default
upstreams:
  - id: default
    type: roundrobin
    scheme: https
    nodes:
      - {{ host: 127.0.0.1, port: {port}, weight: 100 }}
    tls:
{tls}
ssls:
  - id: upstream-ssl
    type: client
    cert: {client_crt}
    key: {client_key}
ca_certificates:
  - id: upstream-ca
    cert: {ca}
#END
"#,
        client_crt = pki.path("client.crt"),
        client_key = pki.path("client.key"),
        ca = pki.path("ca.crt"),
    )
}

/// The founding scenario's `tls` block.
pub const FOUNDING_TLS: &str =
    "      client_cert_id: upstream-ssl\n      ca_certificate_id: upstream-ca\n      sni: test.com";
