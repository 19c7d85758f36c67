//! A real etcd (Debian's `etcd-server`) for the fleet tests: one member on free loopback
//! ports with its data in a temporary folder, plain or TLS (optionally requiring client
//! certificates), driven with `etcdctl` as an operator would. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::free_port;
use super::ops::{listening, wait_until, write_static, Pylon};

/// TLS material for an etcd started with [`Etcd::start_tls`] (paths to PEM files).
#[derive(Clone)]
pub struct EtcdTls {
    pub cert: String,
    pub key: String,
    pub ca: String,
    /// Whether etcd requires client certificates (`--client-cert-auth`).
    pub client_cert_auth: bool,
    /// The client certificate etcdctl presents.
    pub client: Option<(String, String)>,
}

/// One etcd member.
pub struct Etcd {
    /// `user:password` etcdctl sends once authentication is on.
    auth: Option<String>,
    pub port: u16,
    peer_port: u16,
    pub data: PathBuf,
    log: PathBuf,
    tls: Option<EtcdTls>,
    child: Option<Child>,
}

impl Etcd {
    /// A plain-HTTP etcd with its data under `dir/etcd-data`.
    pub fn start(dir: &Path) -> Etcd {
        Etcd::start_inner(dir, None)
    }

    /// An HTTPS etcd with the server certificate `tls.cert`.
    pub fn start_tls(dir: &Path, tls: EtcdTls) -> Etcd {
        Etcd::start_inner(dir, Some(tls))
    }

    fn start_inner(dir: &Path, tls: Option<EtcdTls>) -> Etcd {
        let mut e = Etcd {
            auth: None,
            port: free_port(),
            peer_port: free_port(),
            data: dir.join("etcd-data"),
            log: dir.join("etcd.log"),
            tls,
            child: None,
        };
        e.launch();
        e
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The client URL, as `gateway.etcd.endpoints` takes it.
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port)
    }

    fn launch(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "n1", "--data-dir"])
            .arg(&self.data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("n1={peer}")])
            .args(["--log-level", "warn", "--logger", "zap"])
            .env("ETCD_UNSUPPORTED_ARCH", "arm64")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap());
        if let Some(t) = &self.tls {
            cmd.args(["--cert-file", &t.cert, "--key-file", &t.key]);
            if t.client_cert_auth {
                cmd.args(["--client-cert-auth", "--trusted-ca-file", &t.ca]);
            }
        }
        self.child = Some(cmd.spawn().expect("etcd (apt-get install etcd-server)"));
        let up = wait_until(Duration::from_secs(20), || {
            listening(self.port) && self.ctl_ok(&["endpoint", "health"])
        });
        assert!(
            up,
            "etcd did not start:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3").args([
            "--endpoints",
            &self.endpoint(),
            "--dial-timeout",
            "2s",
            "--command-timeout",
            "5s",
        ]);
        if let Some(t) = &self.tls {
            cmd.args(["--cacert", &t.ca, "--insecure-skip-tls-verify"]);
            if let Some((c, k)) = &t.client {
                cmd.args(["--cert", c, "--key", k]);
            }
        }
        cmd.args(args)
            .output()
            .expect("etcdctl (apt-get install etcd-client)")
    }

    fn ctl_ok(&self, args: &[&str]) -> bool {
        self.ctl(args).status.success()
    }

    /// `etcdctl <args>`, which must succeed; returns its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl put key value`.
    pub fn put(&self, key: &str, value: &Value) {
        self.run(&["put", key, &value.to_string()]);
    }

    /// `etcdctl put key <raw text>`.
    pub fn put_raw(&self, key: &str, value: &str) {
        self.run(&["put", key, value]);
    }

    /// `etcdctl del key`.
    pub fn del(&self, key: &str) {
        self.run(&["del", key]);
    }

    /// The value at `key` (raw text), if any.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.run(&["get", key, "--print-value-only"]);
        let v = out.trim_end_matches('\n');
        (!v.is_empty()).then(|| v.to_string())
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let out = self.run(&[
            "get",
            "/",
            "--prefix",
            "--keys-only",
            "--limit",
            "1",
            "-w",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    }

    /// `etcdctl compact <current revision>`.
    pub fn compact(&self) {
        let rev = self.revision().to_string();
        self.run(&["compact", &rev, "--physical"]);
    }

    /// Adds `user` with `password` and the root role, and turns etcd's authentication on.
    pub fn enable_auth(&mut self, user: &str, password: &str) {
        self.run(&["user", "add", &format!("{user}:{password}")]);
        self.run(&["user", "grant-role", user, "root"]);
        self.run(&["auth", "enable"]);
        self.auth = Some(format!("{user}:{password}"));
    }

    /// Kills the member (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the member again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Kills the member, deletes its data and starts an empty one on the same ports (an etcd
    /// replaced or restored: revisions start again from 1).
    pub fn wipe_and_restart(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.data).unwrap();
        self.launch();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `gateway:` lines of a gateway on `etcd` (2-space indented), with an admin listener on
/// `admin_port` and `extra` lines (etcd settings, 4-space indented) under `etcd:`.
pub fn etcd_gateway_lines(endpoint: &str, admin_port: u16, etcd_extra: &str) -> String {
    format!(
        "  config_provider: etcd\n  etcd:\n    endpoints: [\"{endpoint}\"]\n    prefix: /apisix\n    timeout: 3\n{etcd_extra}  admin: {{ listen: \"127.0.0.1:{admin_port}\", api_key: \"{}\" }}\n",
        super::admin::KEY
    )
}

/// Writes the static file of a gateway on `endpoint` into `dir/<name>` without starting it
/// (for `pylon check`, `config push`/`dump`, or a start expected to fail): its path.
pub fn etcd_conf(dir: &Path, name: &str, endpoint: &str, etcd_extra: &str) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let lines = etcd_gateway_lines(endpoint, free_port(), etcd_extra);
    write_static(&sub, free_port(), &lines, "")
}

/// Runs `pylon <args>` to its end: (success, stdout, stderr).
pub fn pylon_once(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(super::pylon_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A gateway on etcd: its own folder under `dir/<name>`, its proxy and admin ports.
pub struct EtcdGateway {
    pub pylon: Pylon,
    pub admin_port: u16,
}

impl EtcdGateway {
    /// Starts a gateway named `name` on `endpoint` and waits until it listens.
    pub fn start(dir: &Path, name: &str, endpoint: &str, etcd_extra: &str) -> EtcdGateway {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let port = free_port();
        let admin_port = free_port();
        let conf = write_static(
            &sub,
            port,
            &etcd_gateway_lines(endpoint, admin_port, etcd_extra),
            "",
        );
        let pylon = Pylon::spawn(&sub, &conf, port, "pylon", &[], &[]);
        let up = wait_until(Duration::from_secs(10), || listening(admin_port));
        assert!(up, "admin API not listening:\n{}", pylon.log());
        EtcdGateway { pylon, admin_port }
    }

    pub fn admin(&self) -> super::admin::Admin {
        super::admin::Admin::new(self.admin_port, Some(super::admin::KEY))
    }

    /// `GET path` on the proxy: the status (0 when the request failed).
    pub fn status(&self, path: &str) -> u16 {
        status(self.pylon.port, path)
    }
}

/// `GET http://127.0.0.1:port/path`: the status, 0 when no answer.
pub fn status(port: u16, path: &str) -> u16 {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Waits (bounded) until every gateway answers `path` with `code`.
pub fn all_answer(gateways: &[&EtcdGateway], path: &str, code: u16, limit: Duration) -> bool {
    wait_until(limit, || gateways.iter().all(|g| g.status(path) == code))
}

/// An upstream of one plain-HTTP node on `port`, as APISIX JSON.
pub fn upstream_json(port: u16) -> Value {
    serde_json::json!({"type": "roundrobin", "nodes": {format!("127.0.0.1:{port}"): 1}})
}

/// A route on `uri` to upstream `u`, as APISIX JSON.
pub fn route_json(uri: &str, upstream_id: &str) -> Value {
    serde_json::json!({"uri": uri, "upstream_id": upstream_id})
}
