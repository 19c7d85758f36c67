//! Downstream mutual TLS on HTTPS listeners through the real `pylon` binary: required,
//! accepted, skipped, depth, Host versus SNI, identity headers, and session resumption.

mod common;

use common::tls::*;
use common::*;
use openssl::ssl::SslVersion;

/// The serial of a PEM certificate file as upper-case hex.
fn serial_hex(path: &str) -> String {
    let cert = openssl::x509::X509::from_pem(&std::fs::read(path).unwrap()).unwrap();
    let hex = cert.serial_number().to_bn().unwrap().to_hex_str().unwrap();
    hex.to_string()
}

const CLIENT_HEADERS: &str =
    "  client_cert_headers: { subject_dn: X-Client-DN, serial: X-Client-Serial }\n";

#[test]
fn mtls_requires_a_valid_client_certificate_and_passes_its_identity() {
    let (dir, pki, origin) = setup();
    let other = Pki::new(&dir.path().join("other"), "test.com");
    let (alice_crt, alice_key) = pki.issue_client("alice");
    let (eve_crt, eve_key) = other.issue_client("eve");
    let secure = issue_server(&pki, "secure", &["secure.example.com"], KeyKind::Rsa);
    let client = format!(
        "    client:\n      ca: {}\n      depth: 1\n      skip_mtls_uri_regex: [\"^/public/\"]\n",
        pki.path("ca.crt")
    );
    let res = https_resources(
        origin.port,
        &pki,
        ALL_ROUTE,
        &ssl_entry("secure", "sni: secure.example.com", &secure, &client),
    );
    let gw = TlsGateway::start(dir.path(), CLIENT_HEADERS, &res);
    let ca = pki.path("ca.crt");
    let name = "secure.example.com";
    let alice = ["--cert", alice_crt.as_str(), "--key", alice_key.as_str()];

    // No certificate: 400, nothing reaches the upstream.
    let r = gw.curl(name, "/hello", &ca, &[]);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("client certificate"), "{r:?}");
    assert!(origin.seen().is_empty());
    wait_for_log(&gw.gw, "no client certificate was presented");

    // A certificate from another CA: 400.
    let r = gw.curl(
        name,
        "/hello",
        &ca,
        &["--cert", &eve_crt, "--key", &eve_key],
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(origin.seen().is_empty());
    wait_for_log(&gw.gw, "client certificate verification failed");

    // A valid one: proxied, with its subject DN and serial; a forged header is replaced.
    let forged = ["-H", "X-Client-DN: CN=mallory"];
    for version in ["--http1.1", "--http2"] {
        let args = [&alice[..], &forged[..], &[version]].concat();
        let r = gw.curl(name, "/hello", &ca, &args);
        assert_eq!((r.status, r.body.as_str()), (200, "Hello API7!"), "{r:?}");
        let seen = origin.seen().pop().unwrap();
        assert_eq!(seen.header("x-client-dn"), ["CN=alice"], "{version}");
        assert_eq!(
            seen.header("x-client-serial"),
            [serial_hex(&alice_crt)],
            "{version}"
        );
    }

    // A path matching skip_mtls_uri_regex needs no certificate; forged headers are dropped.
    let r = gw.curl(name, "/public/info", &ca, &forged);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = origin.seen().pop().unwrap();
    assert_eq!(seen.uri, "/public/info");
    assert!(seen.header("x-client-dn").is_empty(), "{seen:?}");
    // The regex is matched as written: "^/public/" does not match /publicity.
    assert_eq!(gw.curl(name, "/publicity", &ca, &[]).status, 400);
    // ... and against the normalized path: dot segments cannot step out of the skipped prefix.
    for escape in [
        "/public/../hello",
        "/public/%2e%2e/hello",
        "/public/..%2fhello",
    ] {
        let r = gw.curl(name, escape, &ca, &["--path-as-is"]);
        assert_eq!(r.status, 400, "{escape}: {r:?}");
    }

    // The plain listener strips the forged header too.
    let client = reqwest::blocking::Client::new();
    let resp = client
        .get(gw.gw.url("/hello"))
        .header("X-Client-DN", "CN=mallory")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(origin
        .seen()
        .pop()
        .unwrap()
        .header("x-client-dn")
        .is_empty());
}

#[test]
fn a_host_protected_by_mtls_cannot_be_reached_through_another_sni() {
    let (dir, pki, origin) = setup();
    let open = issue_server(&pki, "open", &["open.example.com"], KeyKind::Rsa);
    let secure = issue_server(&pki, "secure", &["secure.example.com"], KeyKind::Rsa);
    let client = format!("    client: {{ ca: {} }}\n", pki.path("ca.crt"));
    let ssls = [
        ssl_entry("open", "sni: open.example.com", &open, ""),
        ssl_entry("secure", "sni: secure.example.com", &secure, &client),
    ]
    .concat();
    let res = https_resources(origin.port, &pki, ALL_ROUTE, &ssls);
    let gw = TlsGateway::start(dir.path(), "", &res);
    let ca = pki.path("ca.crt");

    let r = gw.curl("open.example.com", "/hello", &ca, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    // Handshake as open.example.com (no client certificate asked), then ask for the
    // protected host.
    let r = gw.curl(
        "open.example.com",
        "/hello",
        &ca,
        &["-H", "Host: secure.example.com"],
    );
    assert_eq!(r.status, 400, "{r:?}");
    wait_for_log(&gw.gw, "SNI differs from Host");
    assert_eq!(origin.seen().len(), 1);
}

#[test]
fn tls_sessions_resume_only_under_the_same_client_verification() {
    let (dir, pki, origin) = setup();
    let other = Pki::new(&dir.path().join("other"), "test.com");
    let (alice_crt, alice_key) = pki.issue_client("alice");
    let one = issue_server(&pki, "one", &["one.example.com"], KeyKind::Rsa);
    let two = issue_server(&pki, "two", &["two.example.com"], KeyKind::Rsa);
    let trust = |p: &Pki| format!("    client: {{ ca: {} }}\n", p.path("ca.crt"));
    let ssls = [
        ssl_entry("one", "sni: one.example.com", &one, &trust(&pki)),
        ssl_entry("two", "sni: two.example.com", &two, &trust(&other)),
    ]
    .concat();
    let res = https_resources(origin.port, &pki, ALL_ROUTE, &ssls);
    let gw = TlsGateway::start(dir.path(), CLIENT_HEADERS, &res);
    let port = gw.tls_port;
    let with_alice = |b: &mut openssl::ssl::SslConnectorBuilder| {
        b.set_certificate_file(&alice_crt, openssl::ssl::SslFiletype::PEM)
            .unwrap();
        b.set_private_key_file(&alice_key, openssl::ssl::SslFiletype::PEM)
            .unwrap();
    };
    for max in [SslVersion::TLS1_2, SslVersion::TLS1_3] {
        let limit =
            |b: &mut openssl::ssl::SslConnectorBuilder| b.set_max_proto_version(Some(max)).unwrap();
        let host = "one.example.com";
        let (_, status, session) = request_with_session(port, host, host, "/hello", None, |b| {
            with_alice(b);
            limit(b);
        });
        assert!(status.contains(" 200 "), "{max:?}: {status}");
        let session = session.expect("the gateway issues sessions");
        // Resumed under the same ssl: still verified as alice, without sending the cert.
        let (reused, status, _) =
            request_with_session(port, host, host, "/hello", Some(&session), limit);
        assert!(reused, "{max:?}");
        assert!(status.contains(" 200 "), "{max:?}: {status}");
        assert_eq!(
            origin.seen().pop().unwrap().header("x-client-dn"),
            ["CN=alice"]
        );
        // Not resumed under an ssl that trusts another CA: full handshake, no certificate.
        let two = "two.example.com";
        let (reused, status, _) =
            request_with_session(port, two, two, "/hello", Some(&session), limit);
        assert!(!reused, "{max:?}");
        assert!(status.contains(" 400 "), "{max:?}: {status}");
    }
}

#[test]
fn client_depth_limits_the_chain_the_client_sends() {
    let (dir, pki, origin) = setup();
    let inter = intermediate(&pki.ca, "Client Intermediate");
    let carol = pylon::certs::issue(&inter, "carol", pylon::certs::Role::Client, 365).unwrap();
    // The client sends its intermediate with its certificate.
    let (carol_crt, carol_key) = write_pair(&pki.dir, "carol", &carol, &[&inter.cert]);
    let d0 = issue_server(&pki, "d0", &["d0.example.com"], KeyKind::Rsa);
    let d1 = issue_server(&pki, "d1", &["d1.example.com"], KeyKind::Rsa);
    let client = |depth: u32| {
        format!(
            "    client: {{ ca: {}, depth: {depth} }}\n",
            pki.path("ca.crt")
        )
    };
    let ssls = [
        ssl_entry("d0", "sni: d0.example.com", &d0, &client(0)),
        ssl_entry("d1", "sni: d1.example.com", &d1, &client(1)),
    ]
    .concat();
    let res = https_resources(origin.port, &pki, ALL_ROUTE, &ssls);
    let gw = TlsGateway::start(dir.path(), CLIENT_HEADERS, &res);
    let ca = pki.path("ca.crt");
    let carol = ["--cert", carol_crt.as_str(), "--key", carol_key.as_str()];

    // depth 1: the client certificate and one intermediate below the trusted CA.
    let r = gw.curl("d1.example.com", "/hello", &ca, &carol);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        origin.seen().pop().unwrap().header("x-client-dn"),
        ["CN=carol"]
    );
    // depth 0: only certificates signed directly by the trusted CA.
    let r = gw.curl("d0.example.com", "/hello", &ca, &carol);
    assert_eq!(r.status, 400, "{r:?}");
    wait_for_log(&gw.gw, "client certificate verification failed");
    let (alice_crt, alice_key) = pki.issue_client("alice");
    let alice = ["--cert", alice_crt.as_str(), "--key", alice_key.as_str()];
    assert_eq!(gw.curl("d0.example.com", "/hello", &ca, &alice).status, 200);
}
