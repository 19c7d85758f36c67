//! Hot reload of the resources file through the real `pylon` binary: file changes (inotify
//! and polling), SIGHUP, refusal of invalid files, certificate rotation, the `#END` marker and
//! static-file changes.

mod common;

use std::time::{Duration, Instant};

use common::ops::*;
use common::*;

const SECOND: Duration = Duration::from_secs(1);

fn new_route_applies_within_one_second(env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let port = free_port();
    let conf = write_static(
        dir.path(),
        port,
        "",
        &plain_routes(origin.port, &[("a", "/a")], true),
    );
    let gw = Pylon::spawn(dir.path(), &conf, port, "pylon", &[], env);
    assert_eq!(gw.get("/a"), (200, "ok /a".into()));
    assert_eq!(gw.get("/b").0, 404);

    // A plain overwrite, as an editor or `cat >` does it.
    let written = Instant::now();
    std::fs::write(
        dir.path().join("resources.yaml"),
        plain_routes(origin.port, &[("a", "/a"), ("b", "/b")], true),
    )
    .unwrap();
    let applied = wait_until(SECOND, || gw.get("/b").0 == 200);
    let took = written.elapsed();
    assert!(applied, "/b not routed within 1 s:\n{}", gw.log());
    println!("new route answered {took:?} after the write");
    assert_eq!(gw.get("/a").0, 200);
    assert!(
        gw.log().contains("config version 2 applied from"),
        "{}",
        gw.log()
    );
    assert!(
        gw.log().contains("(2 routes, 0 services, 1 upstreams"),
        "{}",
        gw.log()
    );
}

#[test]
fn new_route_applies_within_one_second_with_inotify() {
    new_route_applies_within_one_second(&[]);
}

#[test]
fn new_route_applies_within_one_second_when_polling() {
    new_route_applies_within_one_second(&[("PYLON_WATCH", "poll")]);
}

#[test]
fn invalid_file_is_refused_with_check_messages_and_old_route_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let gw = Pylon::start(
        dir.path(),
        "",
        &plain_routes(origin.port, &[("a", "/a")], false),
    );
    assert_eq!(gw.get("/a").0, 200);

    // A dangling reference and unreadable certificate files.
    let broken = plain_routes(origin.port, &[("a", "/a"), ("b", "/b")], false).replace(
        "uri: /b\n    upstream_id: origin",
        "uri: /b\n    upstream_id: nowhere",
    )
        + "ssls:\n  - id: s\n    type: client\n    cert: missing.crt\n    key: missing.key\n";
    assert!(broken.contains("nowhere"));
    replace_file(&dir.path().join("resources.yaml"), &broken);
    assert!(
        gw.wait_log("keeps serving", 5 * SECOND),
        "no refusal logged:\n{}",
        gw.log()
    );

    // Every line `pylon check` prints for this file is in the gateway's log.
    let check = std::process::Command::new(pylon_bin())
        .args(["check", "-c"])
        .arg(&gw.conf)
        .output()
        .unwrap();
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    let messages: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: "))
        .collect();
    assert!(messages.len() >= 3, "{stderr}");
    let log = gw.log();
    for m in &messages {
        assert!(
            log.contains(&format!("reload refused: {m}")),
            "missing {m:?} in:\n{log}"
        );
    }
    assert!(log.contains("config version 1 keeps serving"), "{log}");

    // The running version still answers, the new route does not exist.
    assert_eq!(gw.get("/a"), (200, "ok /a".into()));
    assert_eq!(gw.get("/b").0, 404);

    // Fixed: applied.
    replace_file(
        &dir.path().join("resources.yaml"),
        &plain_routes(origin.port, &[("a", "/a"), ("b", "/b")], false),
    );
    assert!(
        wait_until(5 * SECOND, || gw.get("/b").0 == 200),
        "{}",
        gw.log()
    );
}

#[test]
fn sighup_reloads_even_without_changes() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let gw = Pylon::start(
        dir.path(),
        "",
        &plain_routes(origin.port, &[("a", "/a")], true),
    );
    gw.signal(libc::SIGHUP);
    assert!(
        gw.wait_log("config version 2 applied", 5 * SECOND),
        "{}",
        gw.log()
    );
    assert!(gw.log().contains("(SIGHUP)"), "{}", gw.log());
    gw.signal(libc::SIGHUP);
    assert!(gw.wait_log("config version 3 applied", 5 * SECOND));
    assert_eq!(gw.get("/a").0, 200);
}

#[test]
fn file_without_end_marker_waits_when_running_version_had_one() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let gw = Pylon::start(
        dir.path(),
        "",
        &plain_routes(origin.port, &[("a", "/a")], true),
    );
    let path = dir.path().join("resources.yaml");
    // Valid YAML, but the writer has not finished (no #END yet).
    std::fs::write(&path, plain_routes(origin.port, &[("b", "/b")], false)).unwrap();
    assert!(
        gw.wait_log("does not end with #END yet", 5 * SECOND),
        "{}",
        gw.log()
    );
    assert_eq!(gw.get("/a").0, 200, "half-written file was applied");
    assert_eq!(gw.get("/b").0, 404);

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"#END\n").unwrap();
    drop(f);
    assert!(
        wait_until(5 * SECOND, || gw.get("/b").0 == 200),
        "{}",
        gw.log()
    );
    assert_eq!(gw.get("/a").0, 404);
}

#[test]
fn certificate_rotation_on_disk_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let origin = Origin::start(&pki, true);
    let gw = Pylon::start(
        dir.path(),
        "",
        &founding_resources(origin.port, FOUNDING_TLS, &pki),
    );
    assert_eq!(gw.get("/hello"), (200, "Hello API7!".into()));
    assert_eq!(origin.seen().last().unwrap().cn, "client");

    // Rotate: a new certificate and key (CN=client2) moved over the files the ssl names.
    let (crt, key) = pki.issue_client("client2");
    std::fs::rename(&key, pki.dir.join("client.key")).unwrap();
    std::fs::rename(&crt, pki.dir.join("client.crt")).unwrap();

    let rotated = wait_until(5 * SECOND, || {
        gw.get("/hello").0 == 200 && origin.seen().last().unwrap().cn == "client2"
    });
    assert!(
        rotated,
        "new client certificate not presented:\n{}",
        gw.log()
    );
    assert!(gw.log().contains("applied from"), "{}", gw.log());
}

#[test]
fn static_file_change_is_reported_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let gw = Pylon::start(
        dir.path(),
        "",
        &plain_routes(origin.port, &[("a", "/a")], true),
    );
    let text = std::fs::read_to_string(&gw.conf).unwrap();
    let other = free_port();
    let changed = text.replace("threads: 1", "threads: 2").replace(
        &format!("127.0.0.1:{}", gw.port),
        &format!("127.0.0.1:{other}"),
    );
    std::fs::write(&gw.conf, changed).unwrap();
    assert!(
        gw.wait_log("gateway.listen, gateway.threads): not applied", 5 * SECOND),
        "{}",
        gw.log()
    );
    assert!(!gw.log().contains("config version 2"), "{}", gw.log());
    assert_eq!(gw.get("/a").0, 200);
    assert!(!listening(other));
}

#[test]
fn server_certificate_rotation_on_disk_takes_effect() {
    use common::tls::*;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let origin = Origin::start(&pki, true);
    let (crt, key) = issue_server(&pki, "site", &["api.example.com"], KeyKind::Rsa);
    let ssl = format!("  - {{ id: site, snis: [api.example.com], cert: {crt}, key: {key} }}");
    let gw = TlsGateway::start(
        dir.path(),
        "",
        &https_resources(origin.port, &pki, ALL_ROUTE, &ssl),
    );
    let served = || gw.handshake(Some("api.example.com"), |_| {}).map(|h| h.cn);
    assert_eq!(served().unwrap(), "api.example.com");

    // Renew: a new certificate (other CN, same name) and key moved over the same files.
    let renewed = server_cert(
        &pki.ca,
        "renewed",
        &["api.example.com"],
        KeyKind::Ecdsa,
        365,
    );
    let (new_crt, new_key) = write_pair(&pki.dir, "renewed", &renewed, &[]);
    std::fs::rename(new_key, &key).unwrap();
    std::fs::rename(new_crt, &crt).unwrap();
    assert!(
        wait_until(5 * SECOND, || served().is_ok_and(|cn| cn == "renewed")),
        "renewed certificate not served:\n{}",
        gw.gw.log()
    );
}
