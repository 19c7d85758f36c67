//! HTTPS listeners through the real `pylon` binary: SNI certificate selection, fallback,
//! RSA + ECDSA, chains, TLS versions, HTTP/2 via ALPN, and downstream mutual TLS. Clients:
//! curl, `openssl s_client` and OpenSSL handshakes made here.

mod common;

use common::tls::*;
use common::*;
use openssl::ssl::SslVersion;

#[test]
fn sni_picks_exact_then_one_level_wildcard() {
    let (dir, pki, origin) = setup();
    let a = issue_server(&pki, "a", &["a.example.com"], KeyKind::Rsa);
    let b = issue_server(&pki, "b", &["b.example.com"], KeyKind::Rsa);
    let wild = issue_server(&pki, "wild", &["*.example.com"], KeyKind::Rsa);
    let ssls = [
        ssl_entry("a", "snis: [a.example.com, A2.Example.com]", &a, ""),
        ssl_entry("wild", "snis: [\"*.example.com\"]", &wild, ""),
        ssl_entry("b", "sni: b.example.com", &b, ""),
    ]
    .concat();
    let res = https_resources(origin.port, &pki, ALL_ROUTE, &ssls);
    let gw = TlsGateway::start(dir.path(), "", &res);

    let cn = |sni: &str| gw.handshake(Some(sni), |_| {}).map(|h| h.cn);
    assert_eq!(cn("a.example.com").unwrap(), "a.example.com");
    assert_eq!(cn("a2.example.com").unwrap(), "a.example.com");
    assert_eq!(cn("b.example.com").unwrap(), "b.example.com");
    assert_eq!(cn("c.example.com").unwrap(), "*.example.com");
    // One level only: neither a deeper name nor the parent itself.
    assert!(cn("x.c.example.com").is_err());
    wait_for_log(
        &gw.gw,
        "TLS handshake refused: no ssl serves the SNI \"x.c.example.com\"",
    );
    assert!(cn("example.com").is_err());

    // A real client verifying the chain and name.
    let ca = pki.path("ca.crt");
    let r = gw.curl("c.example.com", "/hello", &ca, &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "Hello API7!"), "{r:?}");
    let r = gw.curl("a.example.com", "/hello", &ca, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(origin.seen().len(), 2);
}

#[test]
fn client_without_sni_gets_the_fallback_certificate() {
    let (dir, pki, origin) = setup();
    let a = issue_server(&pki, "a", &["a.example.com"], KeyKind::Rsa);
    let b = issue_server(&pki, "b", &["b.example.com"], KeyKind::Rsa);
    let ssls = [
        ssl_entry("a", "sni: a.example.com", &a, ""),
        ssl_entry("b", "sni: b.example.com", &b, ""),
    ]
    .concat();
    let res = https_resources(origin.port, &pki, ALL_ROUTE, &ssls);
    let gw = TlsGateway::start(dir.path(), "  fallback_sni: b.example.com\n", &res);

    assert_eq!(gw.handshake(None, |_| {}).unwrap().cn, "b.example.com");
    // openssl s_client without SNI.
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-noservername", "-connect"])
        .arg(format!("127.0.0.1:{}", gw.tls_port))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CN = b.example.com"), "{text}");
    // curl to an IP address sends no SNI.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10"])
        .arg(format!("https://127.0.0.1:{}/hello", gw.tls_port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello API7!");
    // A client that sends SNI still gets its own certificate.
    assert_eq!(
        gw.handshake(Some("a.example.com"), |_| {}).unwrap().cn,
        "a.example.com"
    );
}

#[test]
fn client_without_sni_fails_without_fallback_and_the_log_says_why() {
    let (dir, pki, origin) = setup();
    let a = issue_server(&pki, "a", &["a.example.com"], KeyKind::Rsa);
    let res = https_resources(
        origin.port,
        &pki,
        ALL_ROUTE,
        &ssl_entry("a", "sni: a.example.com", &a, ""),
    );
    let gw = TlsGateway::start(dir.path(), "", &res);
    let err = gw.handshake(None, |_| {}).unwrap_err();
    assert!(err.contains("unrecognized name"), "{err}");
    wait_for_log(
        &gw.gw,
        "TLS handshake refused: the client sent no SNI and gateway.fallback_sni is not set",
    );
    assert!(origin.seen().is_empty());
}

#[test]
fn rsa_and_ecdsa_pairs_serve_what_the_client_supports_with_the_chain() {
    let (dir, pki, origin) = setup();
    let inter = intermediate(&pki.ca, "Intermediate CA");
    let rsa = server_cert(&inter, "rsa", &["dual.example.com"], KeyKind::Rsa, 365);
    let rsa = write_pair(&pki.dir, "dual-rsa", &rsa, &[&inter.cert]);
    let ec = server_cert(&pki.ca, "ecdsa", &["dual.example.com"], KeyKind::Ecdsa, 365);
    let (ec_crt, ec_key) = write_pair(&pki.dir, "dual-ec", &ec, &[]);
    let extra = format!("    certs: [{ec_crt}]\n    keys: [{ec_key}]\n");
    let res = https_resources(
        origin.port,
        &pki,
        ALL_ROUTE,
        &ssl_entry("dual", "sni: dual.example.com", &rsa, &extra),
    );
    let gw = TlsGateway::start(dir.path(), "", &res);
    let sni = Some("dual.example.com");

    let tls12 = |cipher: &'static str| {
        move |b: &mut openssl::ssl::SslConnectorBuilder| {
            b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
            b.set_cipher_list(cipher).unwrap();
        }
    };
    let h = gw
        .handshake(sni, tls12("ECDHE-ECDSA-AES128-GCM-SHA256"))
        .unwrap();
    assert_eq!((h.key, h.cn.as_str(), h.sent), (KeyKind::Ecdsa, "ecdsa", 1));
    let h = gw
        .handshake(sni, tls12("ECDHE-RSA-AES128-GCM-SHA256"))
        .unwrap();
    // The RSA chain carries its intermediate.
    assert_eq!((h.key, h.cn.as_str(), h.sent), (KeyKind::Rsa, "rsa", 2));
    let tls13 = |sigalgs: &'static str| {
        move |b: &mut openssl::ssl::SslConnectorBuilder| {
            b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
            b.set_sigalgs_list(sigalgs).unwrap();
        }
    };
    let h = gw.handshake(sni, tls13("ECDSA+SHA256")).unwrap();
    assert_eq!((h.key, h.version.as_str()), (KeyKind::Ecdsa, "TLSv1.3"));
    let h = gw.handshake(sni, tls13("rsa_pss_rsae_sha256")).unwrap();
    assert_eq!((h.key, h.version.as_str()), (KeyKind::Rsa, "TLSv1.3"));

    // curl trusting only the root verifies both, the RSA one through the intermediate.
    let ca = pki.path("ca.crt");
    for cipher in [
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ] {
        let r = gw.curl(
            "dual.example.com",
            "/hello",
            &ca,
            &["--tls-max", "1.2", "--ciphers", cipher],
        );
        assert_eq!(r.status, 200, "{cipher}: {r:?}");
    }
}

#[test]
fn http2_and_http1_over_alpn_with_host_routing() {
    let (dir, pki, origin) = setup();
    let wild = issue_server(&pki, "wild", &["*.example.com"], KeyKind::Ecdsa);
    let routes = "  - { id: a, uri: /hello, hosts: [a.example.com], upstream_id: default }";
    let res = https_resources(
        origin.port,
        &pki,
        routes,
        &ssl_entry("wild", "snis: [\"*.example.com\"]", &wild, ""),
    );
    let gw = TlsGateway::start(dir.path(), "", &res);
    let ca = pki.path("ca.crt");

    let r = gw.curl("a.example.com", "/hello", &ca, &["--http2"]);
    assert_eq!(
        (r.status, r.http_version.as_str(), r.body.as_str()),
        (200, "2", "Hello API7!"),
        "{r:?}"
    );
    // With HTTP/2 the host comes from :authority; it reaches the upstream as Host.
    let host = origin.seen().last().unwrap().host.clone();
    assert_eq!(host, format!("a.example.com:{}", gw.tls_port));
    let r = gw.curl("a.example.com", "/hello", &ca, &["--http1.1"]);
    assert_eq!((r.status, r.http_version.as_str()), (200, "1.1"), "{r:?}");
    // The certificate serves b.example.com, but the route's hosts do not.
    for version in ["--http2", "--http1.1"] {
        let r = gw.curl("b.example.com", "/hello", &ca, &[version]);
        assert_eq!(r.status, 404, "{version}: {r:?}");
    }
    let h = gw
        .handshake(Some("a.example.com"), |b| {
            b.set_alpn_protos(b"\x02h2\x08http/1.1").unwrap()
        })
        .unwrap();
    assert_eq!(h.alpn.as_deref(), Some("h2"));
    let h = gw
        .handshake(Some("a.example.com"), |b| {
            b.set_alpn_protos(b"\x08http/1.1").unwrap()
        })
        .unwrap();
    assert_eq!(h.alpn.as_deref(), Some("http/1.1"));
}

#[test]
fn ssl_protocols_limit_versions_per_ssl() {
    let (dir, pki, origin) = setup();
    let c12 = issue_server(&pki, "v12", &["v12.example.com"], KeyKind::Rsa);
    let c13 = issue_server(&pki, "v13", &["v13.example.com"], KeyKind::Rsa);
    let any = issue_server(&pki, "any", &["any.example.com"], KeyKind::Rsa);
    let ssls = [
        ssl_entry(
            "v12",
            "sni: v12.example.com",
            &c12,
            "    ssl_protocols: [TLSv1.2]\n",
        ),
        ssl_entry(
            "v13",
            "sni: v13.example.com",
            &c13,
            "    ssl_protocols: [TLSv1.3]\n",
        ),
        ssl_entry("any", "sni: any.example.com", &any, ""),
    ]
    .concat();
    let res = https_resources(origin.port, &pki, ALL_ROUTE, &ssls);
    let gw = TlsGateway::start(dir.path(), "", &res);
    let version = |sni: &str, min: Option<SslVersion>, max: Option<SslVersion>| {
        gw.handshake(Some(sni), |b| {
            b.set_min_proto_version(min).unwrap();
            b.set_max_proto_version(max).unwrap();
        })
        .map(|h| h.version)
    };
    let (v12, v13) = (Some(SslVersion::TLS1_2), Some(SslVersion::TLS1_3));
    assert_eq!(version("v12.example.com", None, None).unwrap(), "TLSv1.2");
    assert!(version("v12.example.com", v13, None).is_err());
    assert_eq!(version("v13.example.com", None, None).unwrap(), "TLSv1.3");
    assert!(version("v13.example.com", None, v12).is_err());
    assert_eq!(version("any.example.com", None, None).unwrap(), "TLSv1.3");
    assert_eq!(version("any.example.com", None, v12).unwrap(), "TLSv1.2");

    let ca = pki.path("ca.crt");
    let r = gw.curl("v12.example.com", "/hello", &ca, &["--tlsv1.3"]);
    assert!(!r.ok && r.status == 0, "{r:?}");
    let r = gw.curl("v12.example.com", "/hello", &ca, &[]);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn check_reports_tls_listener_and_server_ssl_problems() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let a = issue_server(&pki, "a", &["a.example.com"], KeyKind::Rsa);
    let soon = server_cert(&pki.ca, "soon", &["soon.example.com"], KeyKind::Rsa, 10);
    let soon = write_pair(&pki.dir, "soon", &soon, &[]);
    let listen = "  tls_listen: [\"127.0.0.1:9443\"]\n";

    // Valid, with warnings: expiry soon, a fallback nobody serves, a name the cert lacks.
    let ssls = [
        ssl_entry("a", "snis: [a.example.com, z.example.com]", &a, ""),
        ssl_entry("soon", "sni: soon.example.com", &soon, ""),
    ]
    .concat();
    let res = https_resources(1, &pki, ALL_ROUTE, &ssls);
    let out = check_with(
        dir.path(),
        &format!("{listen}  fallback_sni: nobody.example.com\n"),
        &res,
    );
    assert!(out.ok, "{}", out.stderr);
    for expected in [
        "ssls[2].cert: certificate CN=soon expires on",
        "no ssl serves gateway.fallback_sni \"nobody.example.com\"",
        "ssls[1].snis[1]: no certificate of this ssl lists z.example.com",
    ] {
        assert!(out.stderr.contains(expected), "{expected}:\n{}", out.stderr);
    }

    // Invalid: every problem with its path.
    let bad = [
        ssl_entry("nonames", "status: 1", &a, ""),
        ssl_entry(
            "dup",
            "snis: [A.example.com]",
            &a,
            "    ssl_protocols: [TLSv1.1]\n",
        ),
        ssl_entry(
            "re",
            "sni: \"*.*.example.com\"",
            &a,
            &format!(
                "    client: {{ ca: {}, skip_mtls_uri_regex: [\"(\"] }}\n",
                pki.path("ca.crt")
            ),
        ),
    ]
    .concat();
    let res = https_resources(1, &pki, ALL_ROUTE, &[ssls.as_str(), &bad].concat());
    let out = check_with(dir.path(), listen, &res);
    assert!(!out.ok);
    for expected in [
        "ssls[3].snis: required for type server",
        "ssls[4].snis[0]: a.example.com is already served by ssls[1]",
        "ssls[4].ssl_protocols[0]: TLSv1.1 is not supported",
        "ssls[5].sni: \"*.*.example.com\": a wildcard must be the whole first label",
        "ssls[5].client.skip_mtls_uri_regex[0]: not a valid regular expression",
    ] {
        assert!(out.stderr.contains(expected), "{expected}:\n{}", out.stderr);
    }

    // Shape errors in client and static-file errors.
    let res = https_resources(
        1,
        &pki,
        ALL_ROUTE,
        &ssl_entry(
            "a",
            "sni: a.example.com",
            &a,
            "    client: { ca: x, dpth: 2 }\n",
        ),
    );
    let out = check_with(dir.path(), listen, &res);
    assert!(
        out.stderr
            .contains("ssls[1].client.dpth: unknown field `dpth`"),
        "{}",
        out.stderr
    );
    let res = https_resources(1, &pki, ALL_ROUTE, &ssls);
    let out = check_with(
        dir.path(),
        "  tls_listen: [\"nope\"]\n  fallback_sni: \"*.example.com\"\n  client_cert_headers: { serial: \"a b\" }\n",
        &res,
    );
    assert!(!out.ok);
    for expected in [
        "gateway.tls_listen[0]: \"nope\" is not an address",
        "gateway.fallback_sni: must be a host name, not a wildcard",
        "gateway.client_cert_headers.serial: \"a b\" is not a valid HTTP header name",
    ] {
        assert!(out.stderr.contains(expected), "{expected}:\n{}", out.stderr);
    }

    // Listeners without any server certificate: a warning.
    let res = https_resources(1, &pki, ALL_ROUTE, "");
    let out = check_with(dir.path(), listen, &res);
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr.contains("no enabled ssl of type server"),
        "{}",
        out.stderr
    );
}
