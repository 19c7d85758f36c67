//! The admin API through the real `pylon` binary: the founding scenario done entirely over
//! the API (and surviving a restart), authentication, validation messages, references,
//! concurrent writes, a crash in the middle of writes, and hand edits of the file.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::admin::*;
use common::ops::*;
use common::*;
use serde_json::json;

/// Creates the founding guide's objects over the API: the client ssl, the CA certificate,
/// the service with its upstream (no client certificate yet) and the route.
fn create_founding_objects(admin: &Admin, pki: &Pki, origin_port: u16) {
    let (s, body) = admin.put(
        "ssls/upstream-ssl",
        &json!({"type": "client", "cert": pki.pem("client.crt"), "key": pki.pem("client.key")}),
    );
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["key"], "/apisix/ssls/upstream-ssl");
    assert!(
        body["value"].get("key").is_none(),
        "private key returned: {body}"
    );
    let (s, body) = admin.put(
        "ca_certificates/upstream-ca",
        &json!({"cert": pki.pem("ca.crt")}),
    );
    assert_eq!(s, 201, "{body}");
    let (s, body) = admin.put(
        "services/mtls-nginx",
        &json!({
            "name": "mtls-nginx",
            "upstream": {
                "type": "roundrobin",
                "scheme": "https",
                "nodes": [{"host": "127.0.0.1", "port": origin_port, "weight": 100}],
                "tls": {"ca_certificate_id": "upstream-ca", "sni": "test.com"}
            }
        }),
    );
    assert_eq!(s, 201, "{body}");
    let (s, body) = admin.put(
        "routes/hello",
        &json!({"uri": "/hello", "methods": ["GET"], "service_id": "mtls-nginx"}),
    );
    assert_eq!(s, 201, "{body}");
    assert!(body["value"]["create_time"].as_i64().unwrap() > 0, "{body}");
}

#[test]
fn founding_scenario_over_the_admin_api_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("certs"), "test.com");
    let origin = Origin::start(&pki, true);
    let gw = AdminGateway::start(dir.path(), "#END\n");
    let admin = gw.admin();
    assert_eq!(gw.pylon.get("/hello").0, 404);

    create_founding_objects(&admin, &pki, origin.port);
    // The origin wants a client certificate the upstream does not present yet.
    assert_eq!(gw.pylon.get("/hello").0, 502);

    // The API7 guide's step: attach the client certificate with a JSON Patch.
    let ops = json!([{"op": "add", "path": "/upstream/tls", "value": {
        "client_cert_id": "upstream-ssl", "ca_certificate_id": "upstream-ca", "sni": "test.com"
    }}]);
    let (s, body) = admin.json_patch("services/mtls-nginx", &ops);
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["value"]["upstream"]["tls"]["client_cert_id"],
        "upstream-ssl"
    );
    assert_eq!(gw.pylon.get("/hello"), (200, "Hello API7!".into()));
    let seen = origin.seen();
    let last = seen.last().unwrap();
    assert_eq!(
        (last.cn.as_str(), last.sni.as_str()),
        ("client", "test.com")
    );

    // Private keys never come back.
    let (s, ssls) = admin.get("ssls");
    assert_eq!(s, 200);
    assert_eq!(ssls["total"], 1);
    assert!(!ssls.to_string().contains("PRIVATE KEY"), "{ssls}");
    let (_, routes) = admin.get("routes");
    assert_eq!(routes["list"][0]["key"], "/apisix/routes/hello");

    // The file is what `pylon check` accepts, and a restart serves it.
    let (ok, out) = check_conf(&gw.pylon.conf);
    assert!(ok, "{out}");
    assert!(out.contains("1 routes, 1 services, 0 upstreams, 1 ssls, 1 CA certificates"));
    let gw = gw.restart("restarted");
    assert_eq!(gw.pylon.get("/hello"), (200, "Hello API7!".into()));
    let (s, svc) = gw.admin().get("services/mtls-nginx");
    assert_eq!(s, 200);
    assert_eq!(
        svc["value"]["upstream"]["tls"]["client_cert_id"],
        "upstream-ssl"
    );
}

#[test]
fn requests_without_the_right_key_get_401() {
    let dir = tempfile::tempdir().unwrap();
    let gw = AdminGateway::start(dir.path(), "#END\n");
    for key in [None, Some("wrong"), Some("")] {
        let admin = Admin::new(gw.admin_port, key);
        let (s, body) = admin.get("routes");
        assert_eq!(s, 401, "{key:?}");
        assert_eq!(body["error_msg"], "failed to check token");
        let (s, _) = admin.put("routes/1", &json!({"uri": "/x", "upstream_id": "u"}));
        assert_eq!(s, 401);
    }
    let (s, body) = gw.admin().get("routes");
    assert_eq!((s, body), (200, json!({"total": 0, "list": []})));
    let (s, doc) = gw.admin().get("openapi.json");
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
}

#[test]
fn bad_bodies_get_400_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let gw = AdminGateway::start(dir.path(), "#END\n");
    let admin = gw.admin();
    let before = std::fs::read_to_string(gw.resources_path()).unwrap();
    let cases = [
        (
            "routes/1",
            json!({"uri": "/a", "upstream_id": "u", "priority": "high"}),
            "priority: invalid type",
        ),
        (
            "upstreams/u",
            json!({"nodes": [{"host": "127.0.0.1", "port": 80, "weight": 1, "wieght": 2}]}),
            "nodes[0].wieght: unknown field `wieght`",
        ),
        (
            "routes/1",
            json!({"uri": "/a", "service_id": "missing"}),
            "service_id: no service with id \"missing\"",
        ),
        (
            "upstreams/u",
            json!({"scheme": "https", "nodes": {"127.0.0.1:443": 1}, "tls": {"client_cert_id": "x"}}),
            "tls.client_cert_id: ",
        ),
        (
            "routes/a%2Fb",
            json!({"uri": "/a", "upstream_id": "u"}),
            "id: ",
        ),
        (
            "routes/1",
            json!({"id": "2", "uri": "/a"}),
            "id: \"2\" does not match",
        ),
    ];
    for (path, body, expected) in cases {
        let (s, resp) = admin.put(path, &body);
        assert_eq!(s, 400, "{path} {body}: {resp}");
        let msg = resp["error_msg"].as_str().unwrap();
        assert!(
            msg.starts_with(expected),
            "{path}: {msg:?} should start with {expected:?}"
        );
    }
    let (s, resp) = admin.call(
        reqwest::Method::PUT,
        "routes/1",
        Some(&json!("not an object")),
        None,
    );
    assert_eq!(s, 400, "{resp}");
    // Nothing was written.
    assert_eq!(
        std::fs::read_to_string(gw.resources_path()).unwrap(),
        before
    );
    assert_eq!(admin.get("routes/1").0, 404);
}

#[test]
fn deleting_a_referenced_upstream_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gw = AdminGateway::start(dir.path(), "#END\n");
    let admin = gw.admin();
    let origin = PlainOrigin::start();
    let nodes = json!({format!("127.0.0.1:{}", origin.port): 1});
    assert_eq!(
        admin.put("upstreams/default", &json!({"nodes": nodes})).0,
        201
    );
    assert_eq!(
        admin
            .put("services/mtls-nginx", &json!({"upstream_id": "default"}))
            .0,
        201
    );
    assert_eq!(
        admin
            .put(
                "routes/r",
                &json!({"uri": "/r", "service_id": "mtls-nginx"})
            )
            .0,
        201
    );
    assert_eq!(gw.pylon.get("/r"), (200, "ok /r".into()));

    let (s, body) = admin.delete("upstreams/default");
    assert_eq!(s, 400, "{body}");
    assert_eq!(
        body["error_msg"],
        "upstream \"default\" is still used by services[0] (id mtls-nginx)"
    );
    let (s, body) = admin.delete("services/mtls-nginx");
    assert_eq!(s, 400, "{body}");
    assert_eq!(gw.pylon.get("/r").0, 200);

    let (s, body) = admin.delete("routes/r");
    assert_eq!(
        (s, body),
        (200, json!({"deleted": "1", "key": "/apisix/routes/r"}))
    );
    assert_eq!(admin.delete("services/mtls-nginx").0, 200);
    assert_eq!(admin.delete("upstreams/default").0, 200);
    assert_eq!(admin.get("upstreams/default").0, 404);
    assert_eq!(admin.delete("upstreams/default").0, 404);
    assert_eq!(gw.pylon.get("/r").0, 404);
}

#[test]
fn fifty_concurrent_puts_are_all_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let gw = AdminGateway::start(dir.path(), "#END\n");
    let admin = gw.admin();
    let nodes = json!({format!("127.0.0.1:{}", origin.port): 1});
    assert_eq!(admin.put("upstreams/u", &json!({"nodes": nodes})).0, 201);
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let admin = admin.clone();
            std::thread::spawn(move || {
                admin.put(
                    &format!("routes/r{i}"),
                    &json!({"uri": format!("/r{i}"), "upstream_id": "u"}),
                )
            })
        })
        .collect();
    for t in threads {
        let (s, body) = t.join().unwrap();
        assert_eq!(s, 201, "{body}");
    }
    let (_, list) = admin.get("routes");
    assert_eq!(list["total"], 50);
    let text = std::fs::read_to_string(gw.resources_path()).unwrap();
    for i in 0..50 {
        assert!(
            text.contains(&format!("uri: /r{i}\n")),
            "r{i} missing:\n{text}"
        );
        assert_eq!(gw.pylon.get(&format!("/r{i}")).0, 200);
    }
    let (ok, out) = check_conf(&gw.pylon.conf);
    assert!(ok, "{out}");
    assert!(out.contains("50 routes"), "{out}");
    // 1 at start + 51 changes, each applied exactly once.
    assert!(
        gw.pylon.log().contains("config version 52 applied"),
        "{}",
        gw.pylon.log()
    );
    assert!(
        !gw.pylon.log().contains("config version 53"),
        "{}",
        gw.pylon.log()
    );
}

#[test]
fn a_kill_during_writes_leaves_a_loadable_file_with_every_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let gw = AdminGateway::start(dir.path(), "#END\n");
    let admin = gw.admin();
    let nodes = json!({format!("127.0.0.1:{}", origin.port): 1});
    assert_eq!(admin.put("upstreams/u", &json!({"nodes": nodes})).0, 201);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (admin, acked, stop) = (admin.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let id = format!("t{t}-{i}");
                    let body = json!({"uri": format!("/{id}"), "upstream_id": "u"});
                    let url = format!("http://127.0.0.1:{}/apisix/admin/routes/{id}", admin.port());
                    let r = reqwest::blocking::Client::new()
                        .put(url)
                        .header("X-API-KEY", KEY)
                        .body(body.to_string())
                        .timeout(Duration::from_secs(5))
                        .send();
                    match r {
                        Ok(r) if r.status().as_u16() == 201 => acked.lock().unwrap().push(id),
                        Ok(r) => panic!("{id}: {}", r.status()),
                        Err(_) => break, // the gateway is gone
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || acked
        .lock()
        .unwrap()
        .len()
        >= 40));
    gw.pylon.signal(libc::SIGKILL);
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let (ok, out) = check_conf(&gw.pylon.conf);
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(gw.resources_path()).unwrap();
    for id in &acked {
        assert!(
            text.contains(&format!("uri: /{id}\n")),
            "{id} acknowledged but lost"
        );
    }
    let gw = gw.restart("restarted");
    let (_, list) = gw.admin().get("routes");
    assert!(list["total"].as_u64().unwrap() >= acked.len() as u64);
    assert_eq!(gw.pylon.get(&format!("/{}", acked[0])).0, 200);
}

#[test]
fn a_hand_edit_is_loaded_before_an_api_change_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let gw = AdminGateway::start(dir.path(), &plain_routes(origin.port, &[("a", "/a")], true));
    let admin = gw.admin();
    let file = gw.resources_path();

    // A hand edit, immediately followed by an API change (before the watcher's debounce).
    replace_file(
        &file,
        &plain_routes(origin.port, &[("a", "/a"), ("b", "/b")], true),
    );
    let (s, body) = admin.put("routes/c", &json!({"uri": "/c", "upstream_id": "origin"}));
    assert_eq!(s, 201, "{body}");
    for path in ["/a", "/b", "/c"] {
        assert_eq!(gw.pylon.get(path).0, 200, "{path}");
    }
    let (_, list) = admin.get("routes");
    assert_eq!(list["total"], 3, "{list}");

    // A broken hand edit is neither served nor overwritten.
    let broken = "routes:\n  - id: x\n    uri: /x\n    upstream_id: nowhere\n#END\n";
    replace_file(&file, broken);
    let (s, body) = admin.put("routes/d", &json!({"uri": "/d", "upstream_id": "origin"}));
    assert_eq!(s, 409, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("changed by hand") && msg.contains("upstream_id"),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), broken);
    assert_eq!(gw.pylon.get("/c").0, 200);
}

#[test]
fn a_non_loopback_admin_listener_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config_with(
        dir.path(),
        free_port(),
        "  admin: { listen: \"0.0.0.0:9180\" }\n",
        "#END\n",
    );
    let (ok, out) = check_conf(&conf);
    assert!(!ok);
    assert!(out.contains("gateway.admin.api_key: required"), "{out}");
    let conf = write_config_with(
        dir.path(),
        free_port(),
        "  admin: { listen: \"127.0.0.1:9180\", api_key: k, extra: 1 }\n",
        "#END\n",
    );
    let (ok, out) = check_conf(&conf);
    assert!(!ok);
    assert!(
        out.contains("gateway.admin.extra: unknown field `extra`"),
        "{out}"
    );
}
