//! Consumers, plugin configs and global rules from every source: the admin API on the
//! resources file, etcd in APISIX's key layout (with a consumer key encrypted as APISIX
//! stores it, made here with `openssl enc`), the admin API on etcd, and `pylon config dump`
//! / `push`. Requests then authenticate with key-auth; credentials are never returned by the
//! admin API and never logged.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::admin::{Admin, AdminGateway, KEY};
use common::etcd::*;
use common::ops::{listening, wait_until, write_static, Pylon};
use common::origins::HttpOrigin;
use common::plugins::get;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const KEYRING: &str = "0123456789abcdef";

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `text` encrypted as APISIX stores a plugin secret with keyring entry `entry`:
/// `openssl enc -aes-128-cbc -K <entry> -iv <entry> -a -A`.
fn openssl_enc(entry: &str, text: &str, decrypt: bool) -> String {
    let k = hex(entry);
    let mut cmd = Command::new("openssl");
    cmd.args(["enc", "-aes-128-cbc", "-K", &k, "-iv", &k, "-a", "-A"]);
    if decrypt {
        cmd.arg("-d");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    let input = if decrypt {
        format!("{text}\n")
    } else {
        text.to_string()
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl enc failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

/// The status of `GET path` with `apikey: key` (no header when `None`).
fn with_key(port: u16, path: &str, key: Option<&str>) -> u16 {
    match key {
        Some(k) => get(&url(port, path), &[("apikey", k)]).status,
        None => get(&url(port, path), &[]).status,
    }
}

fn error_msg(body: &Value) -> String {
    body["error_msg"].as_str().unwrap_or_default().to_string()
}

#[test]
fn through_the_admin_api_on_the_resources_file() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let gw = AdminGateway::start(dir.path(), "#END\n");
    let admin = gw.admin();
    let port = gw.pylon.port;

    // A consumer with username in the body (APISIX's PUT /apisix/admin/consumers) ...
    let (s, body) = admin.put(
        "consumers",
        &json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}}}),
    );
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["key"], "/apisix/consumers/jack");
    assert_eq!(body["value"]["username"], "jack");
    assert!(body["value"].get("id").is_none(), "{body}");
    assert_eq!(body["value"]["plugins"]["key-auth"], json!({}));
    assert!(!body.to_string().contains("auth-one"), "{body}");
    // ... and one in the URL.
    let (s, body) = admin.put(
        "consumers/rose",
        &json!({"plugins": {"key-auth": {"key": "auth-rose"}}}),
    );
    assert_eq!(s, 201, "{body}");
    let (s, body) = admin.put("consumers/jack", &json!({"username": "other"}));
    assert_eq!(s, 400, "{body}");
    assert!(error_msg(&body).starts_with("username:"), "{body}");
    let (s, body) = admin.put("consumers/a.b", &json!({}));
    assert_eq!(s, 400, "{body}");
    let (s, body) = admin.post("consumers", &json!({"username": "x"}));
    assert_eq!(s, 405, "{body}");
    // A credential that does not fit key-auth's schema is refused with its path.
    let (s, body) = admin.put(
        "consumers/bad",
        &json!({"plugins": {"key-auth": {"key": ""}}}),
    );
    assert_eq!(s, 400, "{body}");
    assert!(error_msg(&body).contains("plugins.key-auth.key"), "{body}");

    // A plugin config (key-auth, a rewrite), a global rule and a route using them.
    let (s, body) = admin.put(
        "plugin_configs/pc",
        &json!({"desc": "auth and rewrite", "plugins": {
            "key-auth": {},
            "proxy-rewrite": {"uri": "/from-plugin-config"}}}),
    );
    assert_eq!(s, 201, "{body}");
    let (s, body) = admin.put(
        "global_rules/g",
        &json!({"plugins": {"proxy-rewrite": {"headers": {"set": {"X-Global": "yes"}}}}}),
    );
    assert_eq!(s, 201, "{body}");
    let (s, body) = admin.post("global_rules", &json!({"plugins": {}}));
    assert_eq!(s, 405, "{body}");
    let (s, body) = admin.put(
        "routes/r",
        &json!({"uri": "/api", "plugin_config_id": "pc",
                "upstream": {"nodes": {format!("127.0.0.1:{}", origin.port): 1}}}),
    );
    assert_eq!(s, 201, "{body}");
    // A route naming a plugin config that does not exist is refused.
    let (s, body) = admin.put(
        "routes/r2",
        &json!({"uri": "/r2", "plugin_config_id": "nope",
                "upstream": {"nodes": {format!("127.0.0.1:{}", origin.port): 1}}}),
    );
    assert_eq!(s, 400, "{body}");
    assert!(error_msg(&body).starts_with("plugin_config_id:"), "{body}");

    // Requests authenticate with the consumers' keys.
    assert_eq!(with_key(port, "/api", None), 401);
    assert_eq!(with_key(port, "/api", Some("wrong")), 401);
    assert!(origin.seen().is_empty());
    assert_eq!(with_key(port, "/api", Some("auth-one")), 200);
    let seen = origin.seen().pop().unwrap();
    assert_eq!(seen.path, "/from-plugin-config");
    assert_eq!(seen.headers["x-consumer-username"], "jack");
    assert_eq!(seen.headers["x-global"], "yes");
    assert_eq!(with_key(port, "/api", Some("auth-rose")), 200);
    assert_eq!(
        origin.seen().pop().unwrap().headers["x-consumer-username"],
        "rose"
    );

    // GET never shows a key: list, one, and the answers of PATCH.
    let (s, list) = admin.get("consumers");
    assert_eq!(s, 200);
    assert_eq!(list["total"], 2, "{list}");
    assert_eq!(list["list"][0]["key"], "/apisix/consumers/jack");
    let (s, one) = admin.get("consumers/jack");
    assert_eq!(s, 200);
    assert_eq!(one["value"]["plugins"]["key-auth"], json!({}));
    for text in [list.to_string(), one.to_string()] {
        assert!(
            !text.contains("auth-one") && !text.contains("auth-rose"),
            "{text}"
        );
    }
    // A PATCH that leaves the credential alone keeps it; one that sets it changes it.
    let (s, body) = admin.call(
        reqwest::Method::PATCH,
        "consumers/jack",
        Some(&json!({"desc": "the first"})),
        None,
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["value"]["desc"], "the first");
    assert!(!body.to_string().contains("auth-one"), "{body}");
    assert_eq!(with_key(port, "/api", Some("auth-one")), 200);
    let (s, body) = admin.call(
        reqwest::Method::PATCH,
        "consumers/jack",
        Some(&json!({"plugins": {"key-auth": {"key": "auth-two"}}})),
        None,
    );
    assert_eq!(s, 200, "{body}");
    assert!(!body.to_string().contains("auth-two"), "{body}");
    assert_eq!(with_key(port, "/api", Some("auth-one")), 401);
    assert_eq!(with_key(port, "/api", Some("auth-two")), 200);

    // The file holds what `pylon check` accepts, consumers by username, and is not
    // readable by others (it holds credentials).
    let text = std::fs::read_to_string(gw.resources_path()).unwrap();
    assert!(text.contains("username: jack"), "{text}");
    let (ok, out) = common::admin::check_conf(&gw.pylon.conf);
    assert!(ok, "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(gw.resources_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "mode {mode:o}");

    // Deleting a plugin config a route uses is refused, as for the other kinds.
    let (s, body) = admin.delete("plugin_configs/pc");
    assert_eq!(s, 400, "{body}");
    assert!(error_msg(&body).contains("routes[0] (id r)"), "{body}");
    assert_eq!(with_key(port, "/api", Some("auth-two")), 200);
    let (s, _) = admin.delete("routes/r");
    assert_eq!(s, 200);
    let (s, body) = admin.delete("plugin_configs/pc");
    assert_eq!(s, 200, "{body}");
    let (s, body) = admin.delete("consumers/jack");
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["key"], "/apisix/consumers/jack");
    assert_eq!(admin.get("consumers/jack").0, 404);
    assert_eq!(admin.delete("global_rules/g").0, 200);

    // Never logged.
    assert!(gw.pylon.access_log_caught_up());
    let logs = format!("{}{}", gw.pylon.log(), gw.pylon.stdout());
    for key in ["auth-one", "auth-two", "auth-rose"] {
        assert!(!logs.contains(key), "{key} logged:\n{logs}");
    }
}

/// A gateway on etcd with `gateway.data_encryption` set (keyring [`KEYRING`]).
fn encrypted_gateway(dir: &Path, endpoint: &str) -> (Pylon, u16, PathBuf) {
    let sub = dir.join("gw");
    std::fs::create_dir_all(&sub).unwrap();
    let admin_port = common::free_port();
    let port = common::free_port();
    let lines = format!(
        "{}  data_encryption: {{ enable_encrypt_fields: true, keyring: [\"{KEYRING}\"] }}\n",
        etcd_gateway_lines(endpoint, admin_port, "")
    );
    let conf = write_static(&sub, port, &lines, "");
    let pylon = Pylon::spawn(&sub, &conf, port, "pylon", &[], &[]);
    assert!(
        wait_until(WAIT, || listening(admin_port)),
        "{}",
        pylon.log()
    );
    (pylon, admin_port, conf)
}

fn stored(etcd: &Etcd, key: &str) -> Value {
    serde_json::from_str(&etcd.get(key).unwrap()).unwrap()
}

#[test]
fn from_etcd_in_apisix_layout_and_through_the_etcd_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let origin = HttpOrigin::start("origin");
    // As an APISIX operator writes them: one consumer in clear, one whose key is encrypted
    // as APISIX's Admin API stores it, an APISIX 3.11 credential (not a Pylon object), a
    // plugin config, a global rule and a route.
    let encrypted = openssl_enc(KEYRING, "auth-rose", false);
    etcd.put("/apisix/upstreams/u", &upstream_json(origin.port));
    etcd.put(
        "/apisix/consumers/jack",
        &json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}}}),
    );
    etcd.put(
        "/apisix/consumers/rose",
        &json!({"username": "rose", "plugins": {"key-auth": {"key": encrypted}}}),
    );
    etcd.put(
        "/apisix/consumers/jack/credentials/c1",
        &json!({"plugins": {"key-auth": {"key": "credential-key"}}}),
    );
    etcd.put(
        "/apisix/plugin_configs/1",
        &json!({"plugins": {"key-auth": {}}}),
    );
    etcd.put(
        "/apisix/global_rules/1",
        &json!({"plugins": {"proxy-rewrite": {"headers": {"set": {"X-Global": "yes"}}}}}),
    );
    etcd.put(
        "/apisix/routes/1",
        &json!({"uri": "/hello", "plugin_config_id": 1, "upstream_id": "u"}),
    );
    let (pylon, admin_port, conf) = encrypted_gateway(dir.path(), &etcd.endpoint());
    let port = pylon.port;
    assert!(
        wait_until(WAIT, || with_key(port, "/hello", Some("auth-one")) == 200),
        "{}",
        pylon.log()
    );
    assert_eq!(with_key(port, "/hello", None), 401);
    assert_eq!(
        with_key(port, "/hello", Some("auth-rose")),
        200,
        "decrypted"
    );
    assert_eq!(
        with_key(port, "/hello", Some(&encrypted)),
        401,
        "the stored text is not the key"
    );
    assert_eq!(with_key(port, "/hello", Some("credential-key")), 401);
    let seen = origin.seen().pop().unwrap();
    assert_eq!(seen.headers["x-consumer-username"], "rose");
    assert_eq!(seen.headers["x-global"], "yes");

    // The watch applies consumer changes.
    etcd.put(
        "/apisix/consumers/tom",
        &json!({"username": "tom", "plugins": {"key-auth": {"key": "auth-tom"}}}),
    );
    assert!(wait_until(WAIT, || with_key(
        port,
        "/hello",
        Some("auth-tom")
    ) == 200));
    etcd.del("/apisix/consumers/tom");
    assert!(wait_until(WAIT, || with_key(
        port,
        "/hello",
        Some("auth-tom")
    ) == 401));

    // The admin API on etcd: lists consumers (not the credential key), never a key.
    let admin = Admin::new(admin_port, Some(KEY));
    let (s, list) = admin.get("consumers");
    assert_eq!(s, 200);
    assert_eq!(list["total"], 2, "{list}");
    let (s, one) = admin.get("consumers/rose");
    assert_eq!(s, 200);
    assert_eq!(one["value"]["username"], "rose");
    for text in [list.to_string(), one.to_string()] {
        assert!(
            !text.contains("auth-") && !text.contains(&encrypted),
            "{text}"
        );
    }
    // A consumer written through it is stored encrypted, as APISIX stores it.
    let (s, body) = admin.put(
        "consumers",
        &json!({"username": "mary", "plugins": {"key-auth": {"key": "auth-mary"}}}),
    );
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["key"], "/apisix/consumers/mary");
    assert!(!body.to_string().contains("auth-mary"), "{body}");
    let key = stored(&etcd, "/apisix/consumers/mary")["plugins"]["key-auth"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(key, openssl_enc(KEYRING, "auth-mary", false));
    assert_eq!(openssl_enc(KEYRING, &key, true), "auth-mary");
    assert_eq!(with_key(port, "/hello", Some("auth-mary")), 200);
    // A PATCH elsewhere in the object does not encrypt the key twice.
    let (s, body) = admin.call(
        reqwest::Method::PATCH,
        "consumers/mary",
        Some(&json!({"desc": "patched"})),
        None,
    );
    assert_eq!(s, 200, "{body}");
    let after = stored(&etcd, "/apisix/consumers/mary");
    assert_eq!(after["plugins"]["key-auth"]["key"], key.as_str());
    assert_eq!(after["desc"], "patched");
    assert_eq!(with_key(port, "/hello", Some("auth-mary")), 200);

    // Referential integrity as on the file.
    let (s, body) = admin.delete("plugin_configs/1");
    assert_eq!(s, 400, "{body}");
    assert!(error_msg(&body).contains("still used by"), "{body}");
    assert!(etcd.get("/apisix/plugin_configs/1").is_some());
    let (s, body) = admin.put(
        "routes/2",
        &json!({"uri": "/two", "plugin_config_id": "none", "upstream_id": "u"}),
    );
    assert_eq!(s, 400, "{body}");
    assert!(error_msg(&body).contains("plugin_config_id"), "{body}");
    let (s, body) = admin.delete("consumers/mary");
    assert_eq!(s, 200, "{body}");
    assert!(etcd.get("/apisix/consumers/mary").is_none());

    // dump keeps the credentials, decrypted (a backup); push writes them back encrypted.
    let conf_s = conf.to_str().unwrap();
    let (ok, dumped, stderr) = pylon_once(&["config", "dump", "-c", conf_s]);
    assert!(ok, "{stderr}");
    assert!(dumped.contains("username: rose"), "{dumped}");
    assert!(dumped.contains("auth-rose"), "{dumped}");
    assert!(!dumped.contains("credential-key"), "{dumped}");
    let file = dir.path().join("dumped.yaml");
    std::fs::write(&file, &dumped).unwrap();
    etcd.run(&["del", "/apisix/", "--prefix"]);
    assert!(wait_until(WAIT, || with_key(
        port,
        "/hello",
        Some("auth-one")
    ) == 404));
    let (ok, stdout, stderr) =
        pylon_once(&["config", "push", "-c", conf_s, file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("pushed 6 objects"), "{stdout}");
    assert_eq!(
        stored(&etcd, "/apisix/consumers/rose")["plugins"]["key-auth"]["key"],
        encrypted.as_str()
    );
    assert!(wait_until(WAIT, || with_key(
        port,
        "/hello",
        Some("auth-rose")
    ) == 200));

    // Never logged.
    assert!(pylon.access_log_caught_up());
    let logs = format!("{}{}", pylon.log(), pylon.stdout());
    for secret in ["auth-one", "auth-rose", "auth-mary", encrypted.as_str()] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
}
