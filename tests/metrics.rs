//! Prometheus metrics through the real `pylon` binary: names, counters moving, certificate
//! expiry, reload counters and the listener's address rules.

mod common;

use std::time::Duration;

use common::ops::*;
use common::*;

const LIMIT: Duration = Duration::from_secs(5);

const NAMES: &[&str] = &[
    "pylon_http_requests_total",
    "pylon_http_request_duration_seconds",
    "pylon_upstream_response_duration_seconds",
    "pylon_upstream_connect_failures_total",
    "pylon_upstream_node_healthy",
    "pylon_certificate_expiry_timestamp_seconds",
    "pylon_config_reloads_total",
    "pylon_config_version",
    "pylon_http_connections_open",
    "pylon_access_log_dropped_total",
];

#[test]
fn names_counters_expiry_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let origin = Origin::start(&pki, true);
    let mport = free_port();
    let closed = free_port();
    // A second upstream nobody listens on, for connect failures.
    let resources = founding_resources(origin.port, FOUNDING_TLS, &pki).replace(
        "services:",
        &format!(
            "  - id: dead\n    uri: /dead\n    upstream:\n      id: dead\n      nodes: {{ \"127.0.0.1:{closed}\": 1 }}\nservices:"
        ),
    );
    let gw = Pylon::start(
        dir.path(),
        &format!("  metrics_listen: \"127.0.0.1:{mport}\"\n"),
        &resources,
    );

    let before = scrape(mport);
    assert_eq!(sample(&before, "pylon_config_version"), Some(1.0));
    let node = format!(
        "pylon_upstream_node_healthy{{node=\"127.0.0.1:{}\",upstream=\"default\"}}",
        origin.port
    );
    assert_eq!(sample(&before, &node), Some(1.0), "{before}");

    // Certificate expiry: the ssl's and the CA's notAfter, as Unix time.
    let not_after = |file: &str| {
        let cert = openssl::x509::X509::from_pem(pki.pem(file).as_bytes()).unwrap();
        pylon::config::inventory::not_after_unix(&cert).unwrap() as f64
    };
    let ssl = r#"pylon_certificate_expiry_timestamp_seconds{id="upstream-ssl",kind="ssl"}"#;
    let ca =
        r#"pylon_certificate_expiry_timestamp_seconds{id="upstream-ca",kind="ca_certificate"}"#;
    assert_eq!(sample(&before, ssl), Some(not_after("client.crt")));
    assert_eq!(sample(&before, ca), Some(not_after("ca.crt")));

    // The request counter moves by exactly the requests made.
    let hello = r#"pylon_http_requests_total{route="hello",status="200"}"#;
    let start = sample(&before, hello).unwrap_or(0.0);
    for _ in 0..3 {
        assert_eq!(gw.get("/hello").0, 200);
    }
    assert_eq!(gw.get("/dead").0, 502);
    let after = scrape(mport);
    // Labelled series appear once they have a value: all of them have one now.
    for name in NAMES {
        assert!(
            after.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{after}"
        );
    }
    assert_eq!(sample(&after, hello), Some(start + 3.0), "{after}");
    let hist = r#"pylon_http_request_duration_seconds_count{route="hello"}"#;
    assert_eq!(sample(&after, hist), Some(start + 3.0));
    let up = r#"pylon_upstream_response_duration_seconds_count{upstream="default"}"#;
    assert_eq!(sample(&after, up), Some(3.0));
    let refused = r#"pylon_upstream_connect_failures_total{cause="refused",upstream="dead"}"#;
    assert_eq!(sample(&after, refused), Some(1.0), "{after}");
    assert_eq!(
        sample(
            &after,
            r#"pylon_http_requests_total{route="dead",status="502"}"#
        ),
        Some(1.0)
    );

    // Reloads: a good one moves the version, a bad one counts as failed.
    let path = dir.path().join("resources.yaml");
    replace_file(&path, &resources.replace("uri: /dead", "uri: /dead2"));
    assert!(wait_until(LIMIT, || sample(
        &scrape(mport),
        "pylon_config_version"
    ) == Some(2.0)));
    replace_file(&path, "routes: [\n#END\n");
    assert!(gw.wait_log("keeps serving", LIMIT), "{}", gw.log());
    let m = scrape(mport);
    assert_eq!(
        sample(&m, r#"pylon_config_reloads_total{result="ok"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"pylon_config_reloads_total{result="failed"}"#),
        Some(1.0)
    );
    assert_eq!(sample(&m, "pylon_config_version"), Some(2.0));

    // Only /metrics is served.
    assert_eq!(get(&format!("http://127.0.0.1:{mport}/other")).0, 404);
}

#[test]
fn connections_open_gauge_follows_clients() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let mport = free_port();
    let gw = Pylon::start(
        dir.path(),
        &format!("  metrics_listen: \"{mport}\"\n"),
        &plain_routes(origin.port, &[("a", "/a")], true),
    );
    let open = |n: f64| {
        wait_until(LIMIT, || {
            sample(&scrape(mport), "pylon_http_connections_open") == Some(n)
        })
    };
    assert!(open(0.0));
    let a = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let b = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    assert!(open(2.0), "{}", scrape(mport));
    drop(a);
    drop(b);
    assert!(open(0.0), "{}", scrape(mport));
}

#[test]
fn metrics_listen_port_alone_binds_loopback_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mport = free_port();
    let conf = write_static(
        dir.path(),
        free_port(),
        &format!("  metrics_listen: \"{mport}\"\n"),
        "",
    );
    let text = std::fs::read_to_string(&conf).unwrap();
    let check = |text: &str| {
        std::fs::write(&conf, text).unwrap();
        std::process::Command::new(pylon_bin())
            .args(["check", "-c"])
            .arg(&conf)
            .output()
            .unwrap()
    };
    assert!(check(&text).status.success());
    let bad = check(&text.replace(&format!("\"{mport}\""), "\"localhost\""));
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("gateway.metrics_listen: \"localhost\" is not host:port"),
        "{stderr}"
    );

    let port = free_port();
    let conf = write_static(
        dir.path(),
        port,
        &format!("  metrics_listen: \"{mport}\"\n"),
        "",
    );
    let gw = Pylon::spawn(dir.path(), &conf, port, "pylon", &[], &[]);
    assert!(gw
        .log()
        .contains(&format!("metrics on http://127.0.0.1:{mport}/metrics")));
    // The log line comes before Pingora binds: wait for the port, not the line.
    assert!(wait_until(LIMIT, || listening(mport)), "{}", gw.log());
    assert!(scrape(mport).contains("pylon_config_version 1"));
}

#[test]
fn node_health_gauge_follows_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let mport = free_port();
    let closed = free_port();
    let resources = format!(
        r#"routes:
  - {{ id: a, uri: /a, upstream_id: checked }}
upstreams:
  - id: checked
    nodes:
      - {{ host: 127.0.0.1, port: {up}, weight: 1 }}
      - {{ host: 127.0.0.1, port: {closed}, weight: 1 }}
    checks:
      active:
        http_path: /health
        healthy: {{ interval: 0.1, successes: 1 }}
        unhealthy: {{ interval: 0.1, tcp_failures: 1 }}
#END
"#,
        up = origin.port
    );
    let gw = Pylon::start(
        dir.path(),
        &format!("  metrics_listen: \"{mport}\"\n"),
        &resources,
    );
    let series = |port: u16| {
        format!("pylon_upstream_node_healthy{{node=\"127.0.0.1:{port}\",upstream=\"checked\"}}")
    };
    assert!(
        wait_until(LIMIT, || sample(&scrape(mport), &series(closed))
            == Some(0.0)),
        "{}\n{}",
        scrape(mport),
        gw.log()
    );
    assert_eq!(sample(&scrape(mport), &series(origin.port)), Some(1.0));
}
