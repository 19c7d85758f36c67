//! Helpers for the admin API tests: a `pylon` process with `gateway.admin` set, and a small
//! JSON client for its admin listener.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::ops::{listening, wait_until, write_static, Pylon};
use super::{free_port, pylon_bin};

/// The API key the test gateways use.
pub const KEY: &str = "edd1c9f034335f136f87ad84b625c8f1";

/// A gateway with its admin listener.
pub struct AdminGateway {
    pub pylon: Pylon,
    pub admin_port: u16,
}

impl AdminGateway {
    /// Writes the static file (admin on a free loopback port, key [`KEY`]) and `resources`,
    /// starts `pylon run` and waits until both listeners accept connections.
    pub fn start(dir: &Path, resources: &str) -> AdminGateway {
        let port = free_port();
        let admin_port = free_port();
        let extra =
            format!("  admin: {{ listen: \"127.0.0.1:{admin_port}\", api_key: \"{KEY}\" }}\n");
        let conf = write_static(dir, port, &extra, resources);
        AdminGateway::spawn(dir, &conf, port, admin_port, "pylon")
    }

    /// Starts `pylon run -c conf` again on the same ports (a restart).
    pub fn spawn(dir: &Path, conf: &Path, port: u16, admin_port: u16, name: &str) -> AdminGateway {
        let pylon = Pylon::spawn(dir, conf, port, name, &[], &[]);
        let up = wait_until(Duration::from_secs(10), || listening(admin_port));
        assert!(up, "admin API not listening:\n{}", pylon.log());
        AdminGateway { pylon, admin_port }
    }

    /// Kills the process (SIGKILL) and starts it again with the same files and ports.
    pub fn restart(self, name: &str) -> AdminGateway {
        let (dir, conf, port, admin_port) = (
            self.pylon.dir.clone(),
            self.pylon.conf.clone(),
            self.pylon.port,
            self.admin_port,
        );
        drop(self);
        AdminGateway::spawn(&dir, &conf, port, admin_port, name)
    }

    pub fn admin(&self) -> Admin {
        Admin::new(self.admin_port, Some(KEY))
    }

    pub fn resources_path(&self) -> PathBuf {
        self.pylon.dir.join("resources.yaml")
    }
}

/// A blocking JSON client for `/apisix/admin/` on `port`.
#[derive(Clone)]
pub struct Admin {
    port: u16,
    key: Option<String>,
    client: reqwest::blocking::Client,
}

impl Admin {
    pub fn new(port: u16, key: Option<&str>) -> Admin {
        Admin {
            port,
            key: key.map(Into::into),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `method /apisix/admin/<path>` with an optional JSON body and content type: (status,
    /// JSON body or Null).
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        content_type: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("http://127.0.0.1:{}/apisix/admin/{path}", self.port);
        let mut req = self.client.request(method, url);
        if let Some(k) = &self.key {
            req = req.header("X-API-KEY", k);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", content_type.unwrap_or("application/json"))
                .body(b.to_string());
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None, None)
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body), None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body), None)
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None, None)
    }

    /// RFC 6902 JSON Patch.
    pub fn json_patch(&self, path: &str, ops: &Value) -> (u16, Value) {
        self.call(
            reqwest::Method::PATCH,
            path,
            Some(ops),
            Some("application/json-patch+json"),
        )
    }
}

/// `pylon check -c conf`: (success, stdout + stderr).
pub fn check_conf(conf: &Path) -> (bool, String) {
    let out = Command::new(pylon_bin())
        .args(["check", "-c"])
        .arg(conf)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
