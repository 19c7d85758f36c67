//! Upstream mutual TLS through the real `pylon` binary: the founding scenario and its
//! failure modes.

mod common;

use common::*;

fn setup(server_name: &str) -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), server_name);
    (dir, pki)
}

#[test]
fn founding_scenario_presents_client_cert_and_sni() {
    let (dir, pki) = setup("test.com");
    let origin = Origin::start(&pki, true);
    let gw = Gateway::start(
        dir.path(),
        &founding_resources(origin.port, FOUNDING_TLS, &pki),
    );

    assert_eq!(gw.get("/hello", None), (200, "Hello API7!".to_string()));
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].cn, "client");
    assert_eq!(seen[0].sni, "test.com");

    // Path and query string reach the upstream unchanged; the client's Host is passed.
    let (status, _) = gw.get("/a/b%20c?x=1&y=%2F", None);
    assert_eq!(status, 200);
    let last = origin.seen().pop().unwrap();
    assert_eq!(last.uri, "/a/b%20c?x=1&y=%2F");
    assert_eq!(last.host, format!("127.0.0.1:{}", gw.port));
}

#[test]
fn no_route_gives_apisix_404_body() {
    let (dir, pki) = setup("test.com");
    let res = founding_resources(1, FOUNDING_TLS, &pki).replace("uri: /*", "uri: /only/*");
    let gw = Gateway::start(dir.path(), &res);
    assert_eq!(
        gw.get("/nope", None),
        (404, "{\"error_msg\":\"404 Route Not Found\"}\n".to_string())
    );
    // The method must match too: /hello is GET only.
    let client = reqwest::blocking::Client::new();
    let resp = client.post(gw.url("/hello")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

#[test]
fn upstream_connections_are_reused() {
    let (dir, pki) = setup("test.com");
    let origin = Origin::start(&pki, true);
    let gw = Gateway::start(
        dir.path(),
        &founding_resources(origin.port, FOUNDING_TLS, &pki),
    );
    for _ in 0..20 {
        assert_eq!(gw.get("/hello", None).0, 200);
    }
    let conns: std::collections::BTreeSet<u64> = origin.seen().iter().map(|s| s.conn).collect();
    assert_eq!(
        conns.len(),
        1,
        "expected one upstream TLS connection, got {conns:?}"
    );
}

#[test]
fn wrong_ca_is_refused_with_502_and_logged() {
    let (dir, pki) = setup("test.com");
    let other = Pki::new(&dir.path().join("other"), "test.com");
    let origin = Origin::start(&pki, true);
    // Trust another CA than the one that signed the origin's certificate.
    let res = founding_resources(origin.port, FOUNDING_TLS, &pki)
        .replace(&pki.path("ca.crt"), &other.path("ca.crt"));
    let gw = Gateway::start(dir.path(), &res);
    assert_eq!(gw.get("/hello", None).0, 502);
    assert!(origin.seen().is_empty());
    let log = gw.log();
    let line = log
        .lines()
        .find(|l| l.contains("-> 502"))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"));
    assert!(line.contains("route hello"), "{line}");
    assert!(line.contains("upstream default"), "{line}");
    assert!(
        line.contains(&format!("node 127.0.0.1:{}", origin.port)),
        "{line}"
    );
    assert!(line.contains("certificate verify failed"), "{line}");
}

#[test]
fn verify_false_accepts_an_untrusted_upstream() {
    let (dir, pki) = setup("test.com");
    let other = Pki::new(&dir.path().join("other"), "test.com");
    let origin = Origin::start(&pki, true);
    let tls = format!("{FOUNDING_TLS}\n      verify: false");
    let res = founding_resources(origin.port, &tls, &pki)
        .replace(&pki.path("ca.crt"), &other.path("ca.crt"));
    let gw = Gateway::start(dir.path(), &res);
    assert_eq!(gw.get("/hello", None), (200, "Hello API7!".to_string()));
}

#[test]
fn missing_client_cert_against_requiring_origin_is_502() {
    let (dir, pki) = setup("test.com");
    let origin = Origin::start(&pki, true);
    let tls = "      ca_certificate_id: upstream-ca\n      sni: test.com";
    let gw = Gateway::start(dir.path(), &founding_resources(origin.port, tls, &pki));
    assert_eq!(gw.get("/hello", None).0, 502);
    assert!(origin.seen().is_empty());
    let log = gw.log();
    assert!(
        log.lines().any(|l| l.contains("-> 502")
            && l.contains("route hello")
            // The alert itself (TLS 1.2, or it won the race), or else a closed connection
            // right after the handshake, which the line explains.
            && (l.contains("certificate required")
                || l.contains("closed the connection right after the TLS handshake"))),
        "{log}"
    );
}

#[test]
fn hostname_mismatch_is_502() {
    let (dir, pki) = setup("other.example");
    let origin = Origin::start(&pki, true);
    let gw = Gateway::start(
        dir.path(),
        &founding_resources(origin.port, FOUNDING_TLS, &pki),
    );
    assert_eq!(gw.get("/hello", None).0, 502);
    assert!(origin.seen().is_empty());
    assert!(
        gw.log().contains("certificate verify failed"),
        "{}",
        gw.log()
    );
}

#[test]
fn ip_only_upstream_without_name_is_refused_not_unverified() {
    let (dir, pki) = setup("test.com");
    let origin = Origin::start(&pki, true);
    // No tls.sni and pass_host: pass: the SNI comes from the client's Host.
    let tls = "      client_cert_id: upstream-ssl\n      ca_certificate_id: upstream-ca";
    let gw = Gateway::start(dir.path(), &founding_resources(origin.port, tls, &pki));
    // Host is an IP literal: no name to verify → 502, never an unverified connection.
    assert_eq!(gw.get("/hello", None).0, 502);
    assert!(origin.seen().is_empty());
    assert!(gw.log().contains("set tls.sni"), "{}", gw.log());
    // A Host that names the server: sent as SNI and verified.
    assert_eq!(
        gw.get("/hello", Some("test.com")),
        (200, "Hello API7!".to_string())
    );
    assert_eq!(origin.seen()[0].sni, "test.com");
}

#[test]
fn refused_connection_is_502() {
    let (dir, pki) = setup("test.com");
    let port = free_port();
    let gw = Gateway::start(dir.path(), &founding_resources(port, FOUNDING_TLS, &pki));
    assert_eq!(gw.get("/hello", None).0, 502);
    assert!(gw
        .log()
        .lines()
        .any(|l| l.contains("-> 502") && l.contains("route hello")));
}

#[test]
fn two_upstreams_on_one_node_keep_their_own_client_certs() {
    let (dir, pki) = setup("test.com");
    let origin = Origin::start(&pki, true);
    let (alice_crt, alice_key) = pki.issue_client("alice");
    let (bob_crt, bob_key) = pki.issue_client("bob");
    let port = origin.port;
    let upstream = |id: &str, ssl: &str| {
        format!(
            "  - id: {id}\n    scheme: https\n    nodes: {{\"127.0.0.1:{port}\": 1}}\n    tls:\n      client_cert_id: {ssl}\n      ca_certificate_id: ca\n      sni: test.com\n"
        )
    };
    let res = format!(
        "routes:\n  - {{id: a, uri: /a, upstream_id: ua}}\n  - {{id: b, uri: /b, upstream_id: ub}}\nupstreams:\n{}{}ssls:\n  - {{id: alice, type: client, cert: {alice_crt}, key: {alice_key}}}\n  - {{id: bob, type: client, cert: {bob_crt}, key: {bob_key}}}\nca_certificates:\n  - {{id: ca, cert: {}}}\n",
        upstream("ua", "alice"),
        upstream("ub", "bob"),
        pki.path("ca.crt"),
    );
    let gw = Gateway::start(dir.path(), &res);
    for _ in 0..20 {
        assert_eq!(gw.get("/a", None), (200, "ok alice".to_string()));
        assert_eq!(gw.get("/b", None), (200, "ok bob".to_string()));
    }
    let seen = origin.seen();
    assert_eq!(seen.len(), 40);
    for s in &seen {
        let expected = if s.uri == "/a" { "alice" } else { "bob" };
        assert_eq!(s.cn, expected, "{s:?}");
    }
    // One pooled connection per client certificate, each reused.
    let conns: std::collections::BTreeSet<u64> = seen.iter().map(|s| s.conn).collect();
    assert_eq!(conns.len(), 2, "{conns:?}");
}

#[test]
fn inline_pem_works_like_references() {
    let (dir, pki) = setup("test.com");
    let origin = Origin::start(&pki, true);
    let indent = |pem: String| pem.trim_end().replace('\n', "\n          ");
    let tls = format!(
        "      client_cert: |\n          {}\n      client_key: |\n          {}\n      ca_certs:\n        - |\n          {}\n      sni: test.com",
        indent(pki.pem("client.crt")),
        indent(pki.pem("client.key")),
        indent(pki.pem("ca.crt")),
    );
    let gw = Gateway::start(dir.path(), &founding_resources(origin.port, &tls, &pki));
    assert_eq!(gw.get("/hello", None), (200, "Hello API7!".to_string()));
    assert_eq!(origin.seen()[0].cn, "client");
}
