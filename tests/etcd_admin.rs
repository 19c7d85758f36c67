//! The admin API and the command line on etcd: concurrent writers through two gateways,
//! TLS to etcd with client certificates, private keys encrypted with APISIX's keyring
//! scheme, and `pylon config push` / `dump`.

mod common;

use std::time::Duration;

use common::etcd::*;
use common::origins::HttpOrigin;
use common::{Origin, Pki};
use pylon::config::model::DataEncryption;
use pylon::etcd::crypt::Keyring;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const KEYRING: &str = "0123456789abcdef";

#[test]
fn concurrent_patches_through_two_gateways_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let origin = HttpOrigin::start("origin");
    etcd.put("/apisix/upstreams/u", &upstream_json(origin.port));
    let a = EtcdGateway::start(dir.path(), "a", &etcd.endpoint(), "");
    let b = EtcdGateway::start(dir.path(), "b", &etcd.endpoint(), "");
    let admins = [a.admin(), b.admin()];
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let admin = admins[i % 2].clone();
            std::thread::spawn(move || {
                let patch = json!({"labels": {format!("k{i}"): "v"}});
                admin.call(reqwest::Method::PATCH, "upstreams/u", Some(&patch), None)
            })
        })
        .collect();
    for h in handles {
        let (s, body) = h.join().unwrap();
        assert_eq!(s, 200, "{body}");
    }
    let stored: Value = serde_json::from_str(&etcd.get("/apisix/upstreams/u").unwrap()).unwrap();
    let labels = stored["labels"].as_object().unwrap();
    assert_eq!(labels.len(), 50, "lost updates: {stored}");

    // POST ids are unique across gateways; deleting what a route uses is refused.
    let (s1, r1) = a.admin().post("routes", &route_json("/p1", "u"));
    let (s2, r2) = b.admin().post("routes", &route_json("/p2", "u"));
    assert_eq!((s1, s2), (201, 201), "{r1} {r2}");
    assert_ne!(r1["key"], r2["key"]);
    let (s, body) = a.admin().delete("upstreams/u");
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("still used by"),
        "{body}"
    );
    // A route to an upstream that does not exist is refused, with the field.
    let (s, body) = a.admin().put("routes/x", &route_json("/x", "nope"));
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("upstream_id:"),
        "{body}"
    );
    assert!(etcd.get("/apisix/routes/x").is_none());
}

fn tls_gateway_lines(pki: &Pki, client: (&str, &str)) -> String {
    format!(
        "    tls: {{ cert: {}, key: {}, ca: {}, sni: test.com }}\n",
        client.0,
        client.1,
        pki.path("ca.crt")
    )
}

#[test]
fn etcd_with_client_certificate_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let etcd = Etcd::start_tls(
        dir.path(),
        EtcdTls {
            cert: pki.path("server.crt"),
            key: pki.path("server.key"),
            ca: pki.path("ca.crt"),
            client_cert_auth: true,
            client: Some((pki.path("client.crt"), pki.path("client.key"))),
        },
    );
    let origin = HttpOrigin::start("origin");
    etcd.put("/apisix/upstreams/u", &upstream_json(origin.port));
    etcd.put("/apisix/routes/1", &route_json("/hello", "u"));
    let good = tls_gateway_lines(&pki, (&pki.path("client.crt"), &pki.path("client.key")));
    let gw = EtcdGateway::start(dir.path(), "a", &etcd.endpoint(), &good);
    assert!(
        all_answer(&[&gw], "/hello", 200, WAIT),
        "{}",
        gw.pylon.log()
    );
    let (s, body) = gw.admin().put("routes/2", &route_json("/two", "u"));
    assert_eq!(s, 201, "{body}");

    // A client certificate from another CA: refused, with a clear error and no start.
    let other = Pki::new(&dir.path().join("other"), "test.com");
    let bad = tls_gateway_lines(&pki, (&other.path("client.crt"), &other.path("client.key")));
    let conf = etcd_conf(dir.path(), "b", &etcd.endpoint(), &bad);
    let conf = conf.to_str().unwrap();
    let (ok, _, stderr) = pylon_once(&["check", "-c", conf]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains(&etcd.endpoint()), "{stderr}");
    assert!(!pylon_once(&["run", "-c", conf]).0);
    // And without the sni override, the certificate (for test.com) does not match 127.0.0.1.
    let no_sni = good.replace(", sni: test.com", "");
    let conf = etcd_conf(dir.path(), "c", &etcd.endpoint(), &no_sni);
    let (ok, _, stderr) = pylon_once(&["check", "-c", conf.to_str().unwrap()]);
    assert!(!ok, "verification must not be skipped: {stderr}");
    assert!(stderr.contains("mismatch"), "{stderr}");
}

#[test]
fn etcd_with_user_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    let origin = HttpOrigin::start("origin");
    etcd.put("/apisix/upstreams/u", &upstream_json(origin.port));
    etcd.put("/apisix/routes/1", &route_json("/hello", "u"));
    etcd.enable_auth("root", "s3cret");
    let gw = EtcdGateway::start(
        dir.path(),
        "a",
        &etcd.endpoint(),
        "    user: root\n    password: s3cret\n",
    );
    assert!(
        all_answer(&[&gw], "/hello", 200, WAIT),
        "{}",
        gw.pylon.log()
    );
    let (s, body) = gw.admin().put("routes/2", &route_json("/two", "u"));
    assert_eq!(s, 201, "{body}");
    assert!(all_answer(&[&gw], "/two", 200, WAIT));
    assert!(!gw.pylon.log().contains("s3cret"), "the password is logged");

    let conf = etcd_conf(
        dir.path(),
        "b",
        &etcd.endpoint(),
        "    user: root\n    password: wrong\n",
    );
    let (ok, _, stderr) = pylon_once(&["check", "-c", conf.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        !stderr.contains("wrong"),
        "the password is printed: {stderr}"
    );
}

#[test]
fn encrypted_keys_are_served_never_returned_and_push_dump_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let etcd = Etcd::start(dir.path());
    let origin = Origin::start(&pki, true);
    let keyring = Keyring::new(&DataEncryption {
        enable_encrypt_fields: true,
        keyring: vec![KEYRING.into()],
    });
    // An SSL object written as APISIX writes it: the key encrypted with the keyring.
    let encrypted = keyring.encrypt(&pki.pem("client.key"));
    assert!(!encrypted.contains("PRIVATE KEY"));
    etcd.put(
        "/apisix/ssls/upstream-ssl",
        &json!({"type": "client", "cert": pki.pem("client.crt"), "key": encrypted}),
    );
    etcd.put(
        "/apisix/ca_certificates/upstream-ca",
        &json!({"cert": pki.pem("ca.crt")}),
    );
    etcd.put(
        "/apisix/upstreams/default",
        &json!({"scheme": "https", "nodes": {format!("127.0.0.1:{}", origin.port): 100},
                "tls": {"client_cert_id": "upstream-ssl", "ca_certificate_id": "upstream-ca", "sni": "test.com"}}),
    );
    etcd.put("/apisix/routes/hello", &route_json("/hello", "default"));
    let extra = format!("  data_encryption: {{ keyring: [\"{KEYRING}\"] }}\n");
    let admin_port = common::free_port();
    let lines = etcd_gateway_lines(&etcd.endpoint(), admin_port, "");
    let sub = dir.path().join("a");
    std::fs::create_dir_all(&sub).unwrap();
    let port = common::free_port();
    let conf = common::ops::write_static(&sub, port, &format!("{lines}{extra}"), "");
    let pylon = common::ops::Pylon::spawn(&sub, &conf, port, "pylon", &[], &[]);
    assert!(
        common::ops::wait_until(WAIT, || status(port, "/hello") == 200),
        "{}",
        pylon.log()
    );
    assert_eq!(origin.seen().last().unwrap().cn, "client");

    // Never returned, never logged.
    let admin = common::admin::Admin::new(admin_port, Some(common::admin::KEY));
    assert!(common::ops::wait_until(WAIT, || common::ops::listening(
        admin_port
    )));
    let (s, body) = admin.get("ssls/upstream-ssl");
    assert_eq!(s, 200);
    assert!(body["value"].get("key").is_none(), "{body}");
    assert!(!pylon.log().contains(&encrypted) && !pylon.log().contains("PRIVATE KEY"));
    // Keys written through the admin API are stored encrypted.
    let (s, body) = admin.put(
        "ssls/second",
        &json!({"type": "client", "cert": pki.pem("client.crt"), "key": pki.pem("client.key")}),
    );
    assert_eq!(s, 201, "{body}");
    let stored: Value = serde_json::from_str(&etcd.get("/apisix/ssls/second").unwrap()).unwrap();
    let key = stored["key"].as_str().unwrap();
    assert!(!key.contains("PRIVATE KEY"), "stored in clear: {key}");
    assert_eq!(keyring.decrypt(key).unwrap(), pki.pem("client.key"));

    // dump: a resources file with the keys decrypted, which push writes back.
    let conf_s = conf.to_str().unwrap();
    let (ok, dumped, stderr) = pylon_once(&["config", "dump", "-c", conf_s]);
    assert!(ok, "{stderr}");
    assert!(
        dumped.contains("id: hello") && dumped.contains("BEGIN PRIVATE KEY"),
        "{dumped}"
    );
    let file = sub.join("dumped.yaml");
    std::fs::write(&file, &dumped).unwrap();
    etcd.run(&["del", "/apisix/", "--prefix"]);
    assert!(common::ops::wait_until(WAIT, || status(port, "/hello") == 404));
    let file_s = file.to_str().unwrap();
    let (ok, stdout, stderr) = pylon_once(&["config", "push", "-c", conf_s, file_s]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("pushed 5 objects"), "{stdout}");
    assert!(
        common::ops::wait_until(WAIT, || status(port, "/hello") == 200),
        "{}",
        pylon.log()
    );
    let stored = etcd.get("/apisix/ssls/upstream-ssl").unwrap();
    assert!(
        !stored.contains("PRIVATE KEY"),
        "push must encrypt: {stored}"
    );

    // push refuses an invalid file and writes nothing.
    std::fs::write(
        &file,
        "routes:\n  - id: r\n    uri: /r\n    upstream_id: missing\n",
    )
    .unwrap();
    let (ok, _, stderr) = pylon_once(&["config", "push", "-c", conf_s, file_s]);
    assert!(!ok);
    assert!(stderr.contains("routes[0].upstream_id"), "{stderr}");
    assert!(etcd.get("/apisix/routes/r").is_none());
}
