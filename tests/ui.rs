//! The dashboard (`/ui/` on the admin listener) in real headless Chromium, over WebDriver:
//! the founding workflow done entirely through the pages against a running Pylon and the
//! founding guide's nginx (HTTPS, `ssl_verify_client on`), then a request through the
//! gateway; the error paths (wrong certificate key, server certificate as a client
//! certificate, wrong API key, an API validation error, Test connection with the wrong CA);
//! and the same pages on `config_provider: etcd`. Screenshots of each step go to
//! `target/ui-artifacts/<test>/`.

#[path = "ui/browser.rs"]
mod browser;
mod common;

use std::time::Duration;

use browser::Browser;
use common::admin::{AdminGateway, KEY};
use common::etcd::{Etcd, EtcdGateway};
use common::ops::wait_until;
use common::origins::HttpOrigin;
use common::peers::{mtls_block, nginx, Peer};
use common::Pki;
use serde_json::json;

/// The founding guide's nginx: HTTPS with `pki`'s server certificate, client certificates
/// required and verified against `pki`'s CA, `/hello` → `Hello API7!`.
fn founding_nginx(dir: &std::path::Path, pki: &Pki) -> Peer {
    let hello = "        location /hello { return 200 \"Hello API7!\"; }\n";
    nginx(&dir.join("nginx"), "ssl", &mtls_block(pki, hello))
}

/// The Enter key, as WebDriver types it.
const ENTER: char = '\u{E007}';

/// Opens the dashboard and signs in with the keyboard (type the key, press Enter).
fn sign_in(b: &Browser, key: &str) {
    b.open("/ui/");
    b.find("#signin-key");
    b.fill("#signin-key", &format!("{key}{ENTER}"));
}

/// Saves the form and waits for the confirmation naming `what`.
fn save(b: &Browser, what: &str) {
    b.click("#save");
    b.wait_text("#form-status", what);
}

#[test]
fn founding_workflow_through_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("certs"), "test.com");
    let origin = founding_nginx(dir.path(), &pki);
    let gw = AdminGateway::start(dir.path(), "#END\n");
    assert_eq!(gw.pylon.get("/hello").0, 404);
    let b = Browser::start(gw.admin_port, "founding_workflow", 1280, 900);

    b.open("/ui");
    b.find("#signin-key");
    b.shot("sign-in");
    sign_in(&b, KEY);
    b.wait_text("#page-title", "Overview");
    b.wait_text("#config-provider", "yaml");
    b.shot("overview-empty");

    // The CA certificate, from its file.
    b.page("#/ca_certificates", "CA certificates");
    b.click("#new");
    b.wait_text("#page-title", "New CA certificate");
    b.fill("#f-id", "upstream-ca");
    b.fill("#f-name", "ROOTCA");
    b.upload("#f-cert-file", &pki.path("ca.crt"));
    b.wait_text("#facts .subject", "CN=ROOTCA");
    b.shot("ca-certificate-inspected");
    save(&b, "Created CA certificate upstream-ca");
    b.wait_text("#facts .subject", "CN=ROOTCA");

    // The client certificate and its key, from files: inspected before saving.
    b.page("#/ssls/new", "New SSL certificate");
    b.fill("#f-id", "upstream-ssl");
    b.fill("#f-name", "client");
    b.choose("#f-type", "client");
    b.upload("#f-cert-file", &pki.path("client.crt"));
    b.upload("#f-key-file", &pki.path("client.key"));
    b.wait_text("#key-facts", "matches the certificate");
    assert_eq!(b.text("#facts .eku"), "clientAuth");
    assert_eq!(b.text("#facts .issuer"), "CN=ROOTCA");
    assert!(b.text("#facts .key-type").starts_with("RSA 2048"));
    b.shot("client-certificate-inspected");
    save(&b, "Created SSL certificate upstream-ssl");
    // After saving, the key is never shown again.
    b.wait_text("#key-facts", "stored, never shown");
    assert_eq!(
        b.script("return document.getElementById('f-key').value;"),
        ""
    );
    assert!(!b.source().contains("PRIVATE KEY"));

    // The upstream: HTTPS node, client certificate and CA picked by name and subject, SNI.
    b.page("#/upstreams/new", "New upstream");
    b.fill("#f-id", "mtls-nginx");
    b.fill("#f-name", "nginx mTLS");
    b.fill("#f-nodes-0-host", "127.0.0.1");
    b.fill("#f-nodes-0-port", &origin.port.to_string());
    b.choose("#f-scheme", "https");
    b.wait_for(
        "TLS settings shown",
        "!document.getElementById('tls').hidden",
    );
    let client_option = b.text("#f-tls-client_cert_id option[value='upstream-ssl']");
    assert_eq!(client_option, "client — CN=client (upstream-ssl)");
    b.choose("#f-tls-client_cert_id", "upstream-ssl");
    b.choose("#f-tls-ca_certificate_id", "upstream-ca");
    b.fill("#f-tls-sni", "test.com");
    b.shot("upstream-form");
    save(&b, "Created upstream mtls-nginx");
    b.click("#test-connection");
    b.wait_text("#probe-summary", "Every node answered.");
    let verdict = b.text("#probe-result .verdict");
    assert_eq!(verdict, "healthy");
    b.shot("upstream-test-connection");

    b.page("#/services/new", "New service");
    b.fill("#f-id", "mtls-nginx");
    b.fill("#f-name", "mtls-nginx");
    b.choose("#f-upstream_id", "mtls-nginx");
    save(&b, "Created service mtls-nginx");
    b.shot("service");

    b.page("#/routes/new", "New route");
    b.fill("#f-id", "hello");
    b.fill("#f-uri", "/hello");
    b.click("#f-methods-GET");
    b.choose("#f-service_id", "mtls-nginx");
    b.shot("route-form");
    save(&b, "Created route hello");

    // The gateway now proxies to nginx with the client certificate.
    assert_eq!(gw.pylon.get("/hello"), (200, "Hello API7!".into()));

    b.page("#/routes", "Routes");
    b.fill("#search", "hel");
    b.wait_text("#list-count", "1 of 1 shown");
    b.shot("routes-search");
    b.fill("#search", "nothing-like-this");
    b.wait_text("#list-count", "0 of 1 shown");
    b.wait_text("#list", "No routes match");

    b.page("#/", "Overview");
    b.wait_text("#count-routes", "1");
    b.wait_text("#expiring", "CN=client");
    assert!(b.text("#expiring").contains("days left"));
    b.wait_text("#node-health", &format!("127.0.0.1:{}", origin.port));
    b.shot("overview");

    // Narrow screens: nothing is cut off.
    b.resize(390, 844);
    assert!(!b.overflows(), "the overview is wider than 390 px");
    b.shot("overview-390px");
    b.page("#/upstreams/mtls-nginx", "Upstream mtls-nginx");
    b.find("#f-nodes-0-host");
    assert!(!b.overflows(), "the upstream page is wider than 390 px");
    b.shot("upstream-390px");
    b.page("#/routes", "Routes");
    assert!(!b.overflows(), "the routes list is wider than 390 px");
    b.shot("routes-390px");

    // Delete asks first; cancelling keeps the route.
    b.resize(1280, 900);
    b.click("button[aria-label='Delete route hello']");
    b.wait_for(
        "the confirmation",
        "document.getElementById('confirm').open",
    );
    b.shot("delete-confirmation");
    b.click("#confirm-no");
    assert_eq!(gw.admin().get("routes/hello").0, 200);
}

#[test]
fn errors_show_next_to_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("certs"), "test.com");
    let origin = founding_nginx(dir.path(), &pki);
    let gw = AdminGateway::start(dir.path(), "#END\n");
    let admin = gw.admin();
    let b = Browser::start(gw.admin_port, "errors", 1280, 900);

    // A wrong API key: the sign-in error, and nothing else shown.
    sign_in(&b, "not-the-key-of-this-gateway");
    let msg = b.wait_text("#signin-key-error", "refused");
    assert!(msg.contains("failed to check token"), "{msg}");
    assert!(b.script("return document.getElementById('app').hidden;") == json!(true));
    b.shot("wrong-api-key");
    b.fill("#signin-key", &format!("{KEY}{ENTER}"));
    b.wait_text("#page-title", "Overview");

    // A key that is not the certificate's: the mismatch next to the key field, before
    // saving (inspect) and as the admin API's refusal when saving anyway.
    let (_, other_key) = pki.issue_client("other");
    b.page("#/ssls/new", "New SSL certificate");
    b.fill("#f-id", "bad-pair");
    b.choose("#f-type", "client");
    b.upload("#f-cert-file", &pki.path("client.crt"));
    b.upload("#f-key-file", &other_key);
    let mismatch = "private key does not match certificate (subject CN=client)";
    b.wait_text("#f-key-error", mismatch);
    b.wait_text("#key-facts", "does NOT match");
    b.shot("key-mismatch-inspected");
    b.script("document.getElementById('f-key-error').textContent = '';");
    b.click("#save");
    b.wait_text("#f-key-error", mismatch);
    assert_eq!(admin.get("ssls/bad-pair").0, 404);
    b.shot("key-mismatch-refused");

    // A server certificate as a client certificate: refused at the certificate field.
    b.page("#/ssls/new", "New SSL certificate");
    b.fill("#f-id", "server-as-client");
    b.choose("#f-type", "client");
    b.upload("#f-cert-file", &pki.path("server.crt"));
    b.upload("#f-key-file", &pki.path("server.key"));
    b.wait_text("#f-cert-error", "lacks clientAuth");
    b.click("#save");
    b.wait_text("#f-cert-error", "lacks clientAuth");
    assert_eq!(admin.get("ssls/server-as-client").0, 404);
    b.shot("server-certificate-as-client");

    // A validation error of the admin API lands next to the node field it names.
    b.page("#/upstreams/new", "New upstream");
    b.fill("#f-id", "bad-port");
    b.fill("#f-nodes-0-host", "127.0.0.1");
    b.fill("#f-nodes-0-port", "70000");
    b.click("#save");
    let e = b.wait_text("#f-nodes-0-port-error", "70000");
    assert!(e.contains("u16"), "{e}");
    b.shot("node-port-refused");

    // Test connection with a CA that did not issue nginx's certificate: the probe's verdict.
    let stranger = pylon::certs::make_ca("Some Other CA", 30).unwrap();
    let stranger_pem = String::from_utf8(stranger.cert.to_pem().unwrap()).unwrap();
    let (s, body) = admin.put("ca_certificates/wrong-ca", &json!({"cert": stranger_pem}));
    assert_eq!(s, 201, "{body}");
    let (s, body) = admin.put(
        "ssls/upstream-ssl",
        &json!({"type": "client", "cert": pki.pem("client.crt"), "key": pki.pem("client.key")}),
    );
    assert_eq!(s, 201, "{body}");
    let (s, body) = admin.put(
        "upstreams/wrong-ca",
        &json!({"scheme": "https", "nodes": [{"host": "127.0.0.1", "port": origin.port, "weight": 1}],
                "tls": {"client_cert_id": "upstream-ssl", "ca_certificate_id": "wrong-ca", "sni": "test.com"}}),
    );
    assert_eq!(s, 201, "{body}");
    b.page("#/upstreams/wrong-ca", "Upstream wrong-ca");
    b.click("#test-connection");
    b.wait_text("#probe-summary", "At least one node fails");
    let (s, report) = admin.get("upstreams/wrong-ca/probe");
    assert_eq!(s, 200, "{report}");
    let expected = report["upstreams"][0]["nodes"][0]["verdict"]
        .as_str()
        .unwrap();
    assert!(!expected.is_empty() && expected != "healthy", "{report}");
    assert_eq!(b.text("#probe-result .verdict"), expected);
    assert!(b.text("#probe-result").contains("CA"), "{}", b.body_text());
    b.shot("test-connection-wrong-ca");

    // The overview shows node health as the active health checks see it.
    let live = HttpOrigin::start("live");
    let dead = common::free_port();
    let checks = json!({"active": {"http_path": "/health",
        "healthy": {"interval": 0.1, "successes": 1},
        "unhealthy": {"interval": 0.1, "http_failures": 1, "tcp_failures": 1}}});
    let (s, body) = admin.put(
        "upstreams/checked",
        &json!({"nodes": {format!("127.0.0.1:{}", live.port): 1, format!("127.0.0.1:{dead}"): 1},
                "checks": checks}),
    );
    assert_eq!(s, 201, "{body}");
    let (s, body) = admin.put(
        "routes/checked",
        &json!({"uri": "/checked", "upstream_id": "checked"}),
    );
    assert_eq!(s, 201, "{body}");
    let down = wait_until(Duration::from_secs(10), || {
        let (_, st) = admin.get("status");
        st["upstreams"].as_array().unwrap().iter().any(|u| {
            u["id"] == "checked"
                && u["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n["healthy"] == false)
        })
    });
    assert!(
        down,
        "the dead node never turned unhealthy:\n{}",
        gw.pylon.log()
    );
    b.page("#/", "Overview");
    let health = b.wait_text("#node-health", &format!("127.0.0.1:{dead}"));
    assert!(
        health.contains("Unhealthy") && health.contains("Healthy"),
        "{health}"
    );
    assert!(health.contains("Not checked"), "{health}");
    b.shot("node-health");
}

#[test]
fn dashboard_on_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("certs"), "test.com");
    let etcd = Etcd::start(dir.path());
    let gw = EtcdGateway::start(dir.path(), "a", &etcd.endpoint(), "");
    let web = HttpOrigin::start("web");
    let b = Browser::start(gw.admin_port, "etcd", 1280, 900);
    sign_in(&b, KEY);
    b.wait_text("#config-provider", "etcd");
    b.shot("overview-etcd");

    b.page("#/ca_certificates/new", "New CA certificate");
    b.fill("#f-id", "root");
    b.upload("#f-cert-file", &pki.path("ca.crt"));
    b.wait_text("#facts .subject", "CN=ROOTCA");
    save(&b, "Created CA certificate root");

    b.page("#/upstreams/new", "New upstream");
    b.fill("#f-id", "web");
    b.fill("#f-nodes-0-host", "127.0.0.1");
    b.fill("#f-nodes-0-port", &web.port.to_string());
    save(&b, "Created upstream web");

    b.page("#/routes/new", "New route");
    b.fill("#f-uri", "/web");
    b.choose("#f-upstream_id", "web");
    save(&b, "Created route");
    assert!(
        wait_until(Duration::from_secs(10), || gw.status("/web") == 200),
        "the route did not apply:\n{}",
        gw.pylon.log()
    );
    // Stored in etcd, as the API wrote it.
    assert!(etcd.get("/apisix/upstreams/web").is_some());

    b.page("#/", "Overview");
    b.wait_text("#count-upstreams", "1");
    b.wait_text("#expiring", "CN=ROOTCA");
    b.shot("overview-etcd-objects");
    b.page("#/upstreams", "Upstreams");
    b.click("button[aria-label='Delete upstream web']");
    b.wait_for(
        "the confirmation",
        "document.getElementById('confirm').open",
    );
    b.click("#confirm-yes");
    // Still used by the route: the API's refusal is shown, and the upstream stays.
    b.wait_text("#list-error", "still used by");
    assert!(etcd.get("/apisix/upstreams/web").is_some());
    b.shot("delete-refused");
}
