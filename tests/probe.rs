//! `pylon probe` against real upstreams, one test per way an upstream (mutual) TLS
//! connection fails: each verdict must name the cause and the field to change. nginx is the
//! founding guide's upstream (it refuses a client certificate with HTTP 400); HAProxy refuses
//! one with a TLS alert, which with TLS 1.3 arrives after the handshake.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::admin::{Admin, AdminGateway};
use common::peers::{client_cert_dated, haproxy_tls13, mtls_block, nginx};
use common::tls::wait_for_log;
use common::*;
use serde_json::Value;

/// What `pylon probe` printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Writes the configuration into `dir` and runs `pylon probe -c … args`.
fn run(dir: &Path, resources: &str, args: &[&str]) -> Run {
    let conf = write_config(dir, free_port(), resources);
    let out = Command::new(pylon_bin())
        .arg("probe")
        .arg("-c")
        .arg(&conf)
        .args(args)
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// `pylon probe --json`: (exit 0, the report).
fn probe_json(dir: &Path, resources: &str) -> (bool, Value) {
    let r = run(dir, resources, &["--json"]);
    let v: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", r.stdout, r.stderr));
    (r.ok, v)
}

/// The first node of the first upstream.
fn node(report: &Value) -> &Value {
    &report["upstreams"][0]["nodes"][0]
}

/// The node's first error finding.
fn first_error(report: &Value) -> &Value {
    node(report)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["severity"] == "error")
        .unwrap_or_else(|| panic!("no error finding in {report:#}"))
}

/// Asserts the node is unhealthy for `cause`, at `field`, and that its verdict holds every
/// one of `words`; returns the report.
fn expect_failure(dir: &Path, resources: &str, cause: &str, field: &str, words: &[&str]) -> Value {
    let (ok, report) = probe_json(dir, resources);
    assert!(!ok, "exit 0 for an unhealthy node: {report:#}");
    assert_eq!(report["healthy"], false);
    let e = first_error(&report);
    assert_eq!(e["cause"], cause, "{report:#}");
    assert_eq!(e["field"], field, "{report:#}");
    let verdict = node(&report)["verdict"].as_str().unwrap();
    for w in words {
        assert!(verdict.contains(w), "{w:?} not in the verdict {verdict:?}");
    }
    report
}

fn setup() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    (dir, pki)
}

/// The founding guide's nginx: mTLS with `pki`.
fn mtls_nginx(dir: &Path, pki: &Pki) -> common::peers::Peer {
    nginx(&dir.join("nginx"), "ssl", &mtls_block(pki, ""))
}

/// Another CA, `CN=OTHERCA`, written to `<dir>/other-ca.crt`; returns it and the path.
fn other_ca(dir: &Path) -> (pylon::certs::Issued, String) {
    let ca = pylon::certs::make_ca("OTHERCA", 365).unwrap();
    let path = dir.join("other-ca.crt");
    std::fs::write(&path, ca.cert.to_pem().unwrap()).unwrap();
    (ca, path.display().to_string())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn founding_scenario_is_healthy() {
    let (dir, pki) = setup();
    let upstream = mtls_nginx(dir.path(), &pki);
    let res = founding_resources(upstream.port, FOUNDING_TLS, &pki);

    let text = run(dir.path(), &res, &[]);
    assert!(
        text.ok,
        "{}{}\n{}",
        text.stdout,
        text.stderr,
        upstream.log()
    );
    assert!(text.stdout.contains("verdict   healthy"), "{}", text.stdout);
    assert!(
        text.stdout.contains("all 1 node(s) healthy"),
        "{}",
        text.stdout
    );

    let (ok, report) = probe_json(dir.path(), &res);
    assert!(ok);
    let n = node(&report);
    assert_eq!(n["healthy"], true);
    assert_eq!(n["verdict"], "healthy");
    assert_eq!(n["field"], "upstreams[0].nodes[0]");
    assert_eq!(n["tcp"]["connected"], true);
    let tls = &n["tls"];
    assert_eq!(tls["completed"], true);
    assert_eq!(tls["sni"], "test.com");
    assert!(tls["version"].as_str().unwrap().starts_with("TLSv1."));
    assert!(!tls["cipher"].as_str().unwrap().is_empty());
    assert_eq!(tls["alpn"], "http/1.1");
    assert_eq!(tls["server_chain"][0]["subject"], "CN=test.com");
    assert_eq!(tls["server_chain"][0]["issuer"], "CN=ROOTCA");
    assert_eq!(tls["server_chain"][0]["sans"][0], "test.com");
    assert_eq!(tls["verification"]["ok"], true);
    let cc = &tls["client_cert"];
    assert_eq!(cc["requested"], true);
    assert_eq!(cc["acceptable_cas"][0], "CN=ROOTCA");
    assert_eq!(cc["configured"]["source"], "ssl upstream-ssl");
    assert_eq!(cc["configured"]["cert"]["subject"], "CN=client");
    assert_eq!(cc["chains_to_acceptable"], true);
    assert!(cc["rejected"].is_null());
    assert_eq!(n["http"]["request"], "GET /");
    assert_eq!(n["http"]["status"], 200);

    // One upstream, or the upstream of one route; unknown names are errors.
    assert!(run(dir.path(), &res, &["--upstream", "default"]).ok);
    assert!(run(dir.path(), &res, &["--route", "hello"]).ok);
    let bad = run(dir.path(), &res, &["--upstream", "nope"]);
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("no upstream with id \"nope\""),
        "{}",
        bad.stderr
    );
    let bad = run(dir.path(), &res, &["--route", "nope"]);
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("no route with id \"nope\""),
        "{}",
        bad.stderr
    );
}

#[test]
fn wrong_ca() {
    let (dir, pki) = setup();
    let upstream = mtls_nginx(dir.path(), &pki);
    let (_, other) = other_ca(dir.path());
    let res =
        founding_resources(upstream.port, FOUNDING_TLS, &pki).replace(&pki.path("ca.crt"), &other);
    let report = expect_failure(
        dir.path(),
        &res,
        "untrusted_server_cert",
        "ca_certificates[0].cert",
        &[
            "the upstream certificate CN=test.com is issued by CN=ROOTCA",
            "ca_certificate upstream-ca (CN=OTHERCA) does not hold",
            "unable to get local issuer certificate",
            "put the certificate of CN=ROOTCA in ca_certificates[0].cert",
        ],
    );
    let errors = &node(&report)["tls"]["verification"]["errors"];
    assert_eq!(errors[0]["code"], 20, "{errors}");
}

#[test]
fn no_client_certificate_configured() {
    let (dir, pki) = setup();
    let upstream = mtls_nginx(dir.path(), &pki);
    let tls = "      ca_certificate_id: upstream-ca\n      sni: test.com";
    let res = founding_resources(upstream.port, tls, &pki);
    let report = expect_failure(
        dir.path(),
        &res,
        "client_cert_missing",
        "upstreams[0].tls.client_cert_id",
        &[
            "the upstream requires a client certificate issued by CN=ROOTCA and none is configured",
            "set upstreams[0].tls.client_cert_id",
        ],
    );
    let cc = &node(&report)["tls"]["client_cert"];
    assert!(cc["configured"].is_null());
    assert!(
        cc["rejected"]
            .as_str()
            .unwrap()
            .contains("No required SSL certificate was sent"),
        "{cc}"
    );
}

#[test]
fn client_certificate_from_a_ca_the_upstream_does_not_accept() {
    let (dir, pki) = setup();
    let upstream = mtls_nginx(dir.path(), &pki);
    let (ca, _) = other_ca(dir.path());
    let (crt, key) = client_cert_dated(
        dir.path(),
        &ca,
        "stranger",
        now() - 86_400,
        now() + 86_400 * 30,
    );
    let res = founding_resources(upstream.port, FOUNDING_TLS, &pki)
        .replace(&pki.path("client.crt"), &crt)
        .replace(&pki.path("client.key"), &key);
    let report = expect_failure(
        dir.path(),
        &res,
        "client_cert_untrusted",
        "ssls[0].cert",
        &["the upstream accepts client certificates from CN=ROOTCA only; ssl upstream-ssl is issued by CN=OTHERCA"],
    );
    assert_eq!(
        node(&report)["tls"]["client_cert"]["chains_to_acceptable"],
        false
    );
}

#[test]
fn expired_client_certificate() {
    let (dir, pki) = setup();
    let upstream = mtls_nginx(dir.path(), &pki);
    let (crt, key) = client_cert_dated(
        dir.path(),
        &pki.ca,
        "expired",
        now() - 86_400 * 30,
        now() - 86_400,
    );
    let res = founding_resources(upstream.port, FOUNDING_TLS, &pki)
        .replace(&pki.path("client.crt"), &crt)
        .replace(&pki.path("client.key"), &key);
    let report = expect_failure(
        dir.path(),
        &res,
        "client_cert_expired",
        "ssls[0].cert",
        &[
            "client certificate CN=expired (ssl upstream-ssl) expired on",
            "renew it",
        ],
    );
    let cc = &node(&report)["tls"]["client_cert"];
    assert_eq!(cc["configured"]["cert"]["expired"], true);
    assert!(
        cc["rejected"]
            .as_str()
            .unwrap()
            .contains("The SSL certificate error"),
        "{cc}"
    );
}

#[test]
fn hostname_mismatch() {
    let (dir, pki) = setup();
    let upstream = mtls_nginx(dir.path(), &pki);
    let res = founding_resources(upstream.port, FOUNDING_TLS, &pki)
        .replace("sni: test.com", "sni: other.example");
    let report = expect_failure(
        dir.path(),
        &res,
        "hostname_mismatch",
        "upstreams[0].tls.sni",
        &["the upstream certificate is for test.com but SNI was other.example: set upstreams[0].tls.sni: test.com"],
    );
    assert_eq!(node(&report)["tls"]["sni"], "other.example");
    assert_eq!(
        node(&report)["tls"]["verification"]["errors"][0]["code"],
        62
    );
}

#[test]
fn ip_only_sni() {
    let (dir, pki) = setup();
    let upstream = mtls_nginx(dir.path(), &pki);
    // No tls.sni: the node is an IP address and the client's Host is passed (pass_host:
    // pass), so the SNI would be 127.0.0.1, which cannot be sent or verified.
    let tls = "      client_cert_id: upstream-ssl\n      ca_certificate_id: upstream-ca";
    let res = founding_resources(upstream.port, tls, &pki);
    let report = expect_failure(
        dir.path(),
        &res,
        "no_sni",
        "upstreams[0].tls.sni",
        &[
            "the upstream certificate is for test.com but SNI was 127.0.0.1",
            "set upstreams[0].tls.sni: test.com",
        ],
    );
    assert!(node(&report)["tls"]["sni"].is_null());
    // The same configuration with the Host the clients will send probes healthy.
    let named = run(dir.path(), &res, &["--host", "test.com"]);
    assert!(named.ok, "{}", named.stdout);
}

#[test]
fn upstream_not_listening() {
    let (dir, pki) = setup();
    let port = free_port();
    let res = founding_resources(port, FOUNDING_TLS, &pki);
    let report = expect_failure(
        dir.path(),
        &res,
        "connection_refused",
        "upstreams[0].nodes[0].port",
        &[&format!(
            "nothing listens on 127.0.0.1:{port} (connection refused)"
        )],
    );
    assert_eq!(node(&report)["tcp"]["failure"], "refused");
    assert!(node(&report)["tls"].is_null());
}

#[test]
fn plain_http_upstream_behind_scheme_https() {
    let (dir, pki) = setup();
    let upstream = nginx(&dir.path().join("nginx"), "", "");
    let res = founding_resources(upstream.port, FOUNDING_TLS, &pki);
    let report = expect_failure(
        dir.path(),
        &res,
        "plain_http",
        "upstreams[0].scheme",
        &[
            "speaks plain HTTP, not TLS",
            "set upstreams[0].scheme: http",
        ],
    );
    let tls = &node(&report)["tls"];
    assert_eq!(tls["completed"], false);
    assert!(
        tls["error"]
            .as_str()
            .unwrap()
            .contains("wrong version number"),
        "{tls}"
    );
    assert!(
        tls["plain_http"]
            .as_str()
            .unwrap()
            .starts_with("HTTP/1.1 200"),
        "{tls}"
    );
}

#[test]
fn tls13_post_handshake_rejection() {
    let (dir, pki) = setup();
    let upstream = haproxy_tls13(&dir.path().join("haproxy"), &pki);

    // No client certificate: TLS 1.3 alert 116 after the client's handshake is done.
    let tls = "      ca_certificate_id: upstream-ca\n      sni: test.com";
    let res = founding_resources(upstream.port, tls, &pki);
    let report = expect_failure(
        dir.path(),
        &res,
        "client_cert_missing",
        "upstreams[0].tls.client_cert_id",
        &[
            "requires a client certificate issued by CN=ROOTCA",
            "TLS alert after the handshake: certificate required",
        ],
    );
    let t = &node(&report)["tls"];
    assert_eq!(t["version"], "TLSv1.3");
    assert_eq!(
        t["completed"], true,
        "the client's handshake completes: {t}"
    );
    assert!(t["alert"].is_null());
    assert!(
        node(&report)["http"]["error"]
            .as_str()
            .unwrap()
            .contains("tlsv13 alert certificate required"),
        "{report:#}"
    );

    // A client certificate from another CA: alert "unknown ca", again after the handshake.
    let (ca, _) = other_ca(dir.path());
    let (crt, key) = client_cert_dated(
        dir.path(),
        &ca,
        "stranger",
        now() - 86_400,
        now() + 86_400 * 30,
    );
    let res = founding_resources(upstream.port, FOUNDING_TLS, &pki)
        .replace(&pki.path("client.crt"), &crt)
        .replace(&pki.path("client.key"), &key);
    expect_failure(
        dir.path(),
        &res,
        "client_cert_untrusted",
        "ssls[0].cert",
        &[
            "ssl upstream-ssl is issued by CN=OTHERCA",
            "TLS alert after the handshake: unknown ca",
        ],
    );

    // And the right certificate passes.
    let res = founding_resources(upstream.port, FOUNDING_TLS, &pki);
    let ok = run(dir.path(), &res, &[]);
    assert!(ok.ok, "{}\n{}", ok.stdout, upstream.log());
}

#[test]
fn admin_api_probe() {
    let (dir, pki) = setup();
    let upstream = mtls_nginx(dir.path(), &pki);
    let res = founding_resources(upstream.port, FOUNDING_TLS, &pki)
        .replace("sni: test.com", "sni: other.example");
    let gw = AdminGateway::start(dir.path(), &res);
    let admin = gw.admin();

    let (status, report) = admin.get("upstreams/default/probe");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["healthy"], false);
    let e = first_error(&report);
    assert_eq!(e["cause"], "hostname_mismatch");
    assert_eq!(e["field"], "/apisix/upstreams/default tls.sni");
    assert_eq!(e["fix"], "set /apisix/upstreams/default tls.sni: test.com");

    // Fixed through the API, the probe says healthy.
    let (status, _) = admin.call(
        reqwest::Method::PATCH,
        "upstreams/default",
        Some(&serde_json::json!({"tls": {"sni": "test.com"}})),
        None,
    );
    assert_eq!(status, 200);
    let (status, report) = admin.get("upstreams/default/probe");
    assert_eq!(
        (status, &report["healthy"]),
        (200, &Value::Bool(true)),
        "{report:#}"
    );

    // Authenticated like the rest; unknown upstreams are 404.
    let (status, _) = Admin::new(gw.admin_port, None).get("upstreams/default/probe");
    assert_eq!(status, 401);
    let (status, _) = admin.get("upstreams/nope/probe");
    assert_eq!(status, 404);
}

#[test]
fn a_tls_502_names_the_probe_command() {
    let (dir, pki) = setup();
    let upstream = mtls_nginx(dir.path(), &pki);
    let (_, other) = other_ca(dir.path());
    let res =
        founding_resources(upstream.port, FOUNDING_TLS, &pki).replace(&pki.path("ca.crt"), &other);
    let gw = Gateway::start(dir.path(), &res);
    assert_eq!(gw.get("/hello", None).0, 502);
    let log = wait_for_log(&gw, "pylon probe -c ");
    let line = log.lines().find(|l| l.contains("-> 502")).unwrap();
    assert!(
        line.contains(&format!(
            "run `pylon probe -c {} --route hello`",
            dir.path().join("pylon.yaml").display()
        )),
        "{line}"
    );
    // The command it names finds the cause.
    let out = Command::new(pylon_bin())
        .args(["probe", "--route", "hello", "-c"])
        .arg(dir.path().join("pylon.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("is issued by CN=ROOTCA"), "{text}");
}
