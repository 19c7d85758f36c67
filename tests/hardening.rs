//! What a hostile client or a careless operator could do, each checked against the real
//! binary: client aborts and node health, listener collisions, key material in certificate
//! fields, secrets on disk, pipelined requests, requests without Host, and certificate
//! paths that are not regular files.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::admin::*;
use common::ops::*;
use common::origins::{lb_resources, HttpOrigin};
use common::*;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(10);

/// Sends `raw` on a new connection, waits `linger`, then closes it (a client that gives up).
fn send_and_leave(port: u16, raw: &str, linger: Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    std::thread::sleep(linger);
}

/// Sends `raw` and reads until the server closes or `limit` passes.
fn exchange(port: u16, raw: &str, limit: Duration) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn client_aborts_neither_mark_nodes_unhealthy_nor_retry() {
    let dir = tempfile::tempdir().unwrap();
    let a = HttpOrigin::start("A");
    let b = HttpOrigin::start("B");
    let extra = "    checks:\n      passive:\n        unhealthy: {tcp_failures: 1, timeouts: 1, http_failures: 1}\n";
    let mport = free_port();
    let gw = Pylon::start(
        dir.path(),
        &format!("  metrics_listen: \"{mport}\"\n"),
        &lb_resources(&[(a.port, 1), (b.port, 1)], extra),
    );
    // Bodies promised but never sent, and a bad chunk size (400).
    for _ in 0..3 {
        let raw = "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhello";
        send_and_leave(gw.port, raw, Duration::from_millis(300));
    }
    let bad_chunk = "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let answer = exchange(gw.port, bad_chunk, Duration::from_secs(3));
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    // Slow nodes and an impatient client: one request, no retry after the client left.
    a.set_delay_ms(1500);
    b.set_delay_ms(1500);
    // Counted by path: the POSTs above may reach an origin late under load.
    let slow = |o: &HttpOrigin| o.seen().iter().filter(|r| r.path == "/slow").count();
    send_and_leave(
        gw.port,
        "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_millis(300),
    );
    send_and_leave(
        gw.port,
        "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_millis(300),
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        slow(&a) + slow(&b),
        2,
        "a request was retried after the client left"
    );

    assert!(wait_until(LIMIT, || listening(mport)));
    let m = scrape(mport);
    for o in [&a, &b] {
        let series = format!(
            "pylon_upstream_node_healthy{{node=\"127.0.0.1:{}\",upstream=\"u\"}}",
            o.port
        );
        assert_eq!(sample(&m, &series), Some(1.0), "{series}\n{}", gw.log());
    }
    assert!(!gw.log().contains("is now unhealthy"), "{}", gw.log());
}

#[test]
fn check_refuses_overlapping_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cases = [
        format!("  admin: {{ listen: \"127.0.0.1:{port}\" }}\n"),
        format!("  metrics_listen: \"{port}\"\n"),
        format!("  tls_listen: [\"0.0.0.0:{port}\"]\n"),
    ];
    for extra in &cases {
        let conf = write_static(dir.path(), port, extra, "");
        let (ok, text) = check_conf(&conf);
        assert!(!ok, "{extra}: {text}");
        assert!(
            text.contains(&format!("overlaps gateway.listen[0] (127.0.0.1:{port})")),
            "{text}"
        );
    }
    // Duplicate listen entries, and 0.0.0.0 against 127.0.0.1 on one port.
    let conf = dir.path().join("pylon.yaml");
    std::fs::write(
        &conf,
        format!("gateway:\n  listen: [\"0.0.0.0:{port}\", \"127.0.0.1:{port}\"]\n"),
    )
    .unwrap();
    let (ok, text) = check_conf(&conf);
    assert!(!ok);
    assert!(text.contains("gateway.listen[1]: 127.0.0.1"), "{text}");
}

#[test]
fn private_keys_in_certificate_fields_are_refused_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let gw = AdminGateway::start(dir.path(), "");
    let admin = gw.admin();
    let both = format!("{}{}", pki.pem("client.crt"), pki.pem("client.key"));
    let (s, body) = admin.put(
        "ssls/s",
        &json!({"type": "client", "cert": both, "key": pki.pem("client.key")}),
    );
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("cert: holds a private key"),
        "{body}"
    );
    let (s, body) = admin.put("ca_certificates/c", &json!({"cert": both}));
    assert_eq!(s, 400, "{body}");
    for (_, text) in [
        admin.put("ca_certificates/c", &json!({"cert": both})),
        admin.get("ca_certificates"),
    ] {
        assert!(!text.to_string().contains("PRIVATE KEY"), "{text}");
    }
    // The same in a file: pylon check names the field.
    let res = format!(
        "ca_certificates:\n  - id: c\n    cert: {}\n",
        pki.path("client.key")
    );
    let out = check(&dir.path().join("pki"), &res);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("ca_certificates[0].cert: holds a private key"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_resources_file_holding_a_passphrase_is_not_world_readable() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let encrypted = dir.path().join("pki/client-enc.key");
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-aes256", "-passout", "pass:hunter2", "-in"])
        .arg(pki.path("client.key"))
        .arg("-out")
        .arg(&encrypted)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gw = AdminGateway::start(dir.path(), "");
    let path = gw.resources_path();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Key and certificate by path: only the passphrase is secret in the file.
    let (s, body) = gw.admin().put(
        "ssls/s",
        &json!({"type": "client", "cert": pki.path("client.crt"),
                "key": encrypted.to_str().unwrap(), "key_passphrase": "hunter2"}),
    );
    assert_eq!(s, 201, "{body}");
    assert!(std::fs::read_to_string(&path).unwrap().contains("hunter2"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = HttpOrigin::start("A");
    let gw = AdminGateway::start(dir.path(), &lb_resources(&[(a.port, 1)], ""));
    let two = "GET /one HTTP/1.1\r\nHost: t\r\n\r\nGET /two HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let out = exchange(gw.pylon.port, two, LIMIT);
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    let paths: Vec<String> = a.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/one", "/two"]);
    // The admin API too.
    let two = format!(
        "GET /apisix/admin/routes HTTP/1.1\r\nHost: t\r\nX-API-KEY: {KEY}\r\n\r\nGET /apisix/admin/upstreams HTTP/1.1\r\nHost: t\r\nX-API-KEY: {KEY}\r\nConnection: close\r\n\r\n"
    );
    let out = exchange(gw.admin_port, &two, LIMIT);
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
}

#[test]
fn requests_without_host() {
    let dir = tempfile::tempdir().unwrap();
    let a = HttpOrigin::start("A");
    let gw = Pylon::start(dir.path(), "", &lb_resources(&[(a.port, 1)], ""));
    let out = exchange(gw.port, "GET /x HTTP/1.1\r\n\r\n", LIMIT);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let out = exchange(
        gw.port,
        "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        LIMIT,
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(a.traffic(), 0);
    // HTTP/1.0 may omit Host: routed by path, and the upstream still gets one.
    let out = exchange(gw.port, "GET /x HTTP/1.0\r\n\r\n", LIMIT);
    assert!(
        out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200"),
        "{out}"
    );
    let seen = a.seen();
    let expected = format!("127.0.0.1:{}", a.port);
    assert_eq!(seen[0].headers.get("host"), Some(&expected));
}

#[test]
fn certificate_paths_must_be_small_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.pem");
    let rc = unsafe {
        libc::mkfifo(
            std::ffi::CString::new(fifo.to_str().unwrap())
                .unwrap()
                .as_ptr(),
            0o600,
        )
    };
    assert_eq!(rc, 0);
    let big = dir.path().join("big.pem");
    std::fs::write(&big, vec![b'A'; 2 * 1024 * 1024]).unwrap();
    for (path, why) in [
        (fifo.to_str().unwrap(), "not a regular file"),
        ("/dev/zero", "not a regular file"),
        (big.to_str().unwrap(), "larger than 1048576 bytes"),
    ] {
        let res = format!("ca_certificates:\n  - id: c\n    cert: {path}\n");
        let started = std::time::Instant::now();
        let out = check(dir.path(), &res);
        assert!(!out.ok);
        assert!(out.stderr.contains(why), "{path}: {}", out.stderr);
        assert!(started.elapsed() < Duration::from_secs(5), "{path} blocked");
    }
    // Through the admin API: answered at once with the reason.
    let sub = dir.path().join("gw");
    std::fs::create_dir_all(&sub).unwrap();
    let gw = AdminGateway::start(&sub, "");
    let (s, body) = gw.admin().put(
        "ca_certificates/c",
        &json!({"cert": fifo.to_str().unwrap()}),
    );
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{body}"
    );
}

#[test]
fn ambiguous_paths_and_framing_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = HttpOrigin::start("A");
    let gw = Pylon::start(dir.path(), "", &lb_resources(&[(a.port, 1)], ""));
    for path in [
        "/pub/..;/admin",
        "/pub/%5c..%5cadmin",
        "/pub/%252e%252e/admin",
    ] {
        let out = exchange(
            gw.port,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"),
            LIMIT,
        );
        assert!(out.starts_with("HTTP/1.1 400"), "{path}: {out}");
    }
    let framing = [
        ("Content-Length: 5, 5\r\n", "400"),
        ("Content-Length: 5\r\nContent-Length: 5\r\n", "400"),
        ("Transfer-Encoding: gzip, chunked\r\n", "501"),
    ];
    for (headers, status) in framing {
        let raw = format!("POST /x HTTP/1.1\r\nHost: t\r\n{headers}\r\nhello");
        let out = exchange(gw.port, &raw, LIMIT);
        assert!(
            out.starts_with(&format!("HTTP/1.1 {status}")),
            "{headers}: {out}"
        );
    }
    assert_eq!(
        a.traffic(),
        0,
        "refused requests reached the upstream: {:?}",
        a.seen()
    );
    // Both Content-Length and chunked: framed by Transfer-Encoding, and the upstream never
    // sees both (RFC 9112 §6.3).
    let raw = "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let out = exchange(gw.port, raw, LIMIT);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let seen = a.seen();
    assert!(!seen[0].headers.contains_key("content-length"), "{seen:?}");
    // An ordinary path with a semicolon and an escaped percent still goes through.
    let out = exchange(
        gw.port,
        "GET /a;b/100%25 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        LIMIT,
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // The option turns the path check off, for upstreams that need such paths.
    let dir = tempfile::tempdir().unwrap();
    let gw = Pylon::start(
        dir.path(),
        "  reject_ambiguous_paths: false\n",
        &lb_resources(&[(a.port, 1)], ""),
    );
    let out = exchange(
        gw.port,
        "GET /pub/..;/admin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        LIMIT,
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[test]
fn a_flood_of_junk_handshakes_writes_a_bounded_log() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let tls_port = free_port();
    let resources = format!(
        "ssls:\n  - id: s\n    cert: {}\n    key: {}\n    snis: [test.com]\n",
        pki.path("server.crt"),
        pki.path("server.key")
    );
    let extra = format!("  tls_listen: [\"127.0.0.1:{tls_port}\"]\n  fallback_sni: test.com\n");
    let gw = Pylon::start(dir.path(), &extra, &resources);
    assert!(wait_until(LIMIT, || listening(tls_port)));
    for _ in 0..200 {
        exchange(
            tls_port,
            "\x16\x03\x01\x00\x05junk, not a TLS handshake\r\n",
            Duration::from_secs(2),
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = gw.log();
    let noisy = log
        .lines()
        .filter(|l| l.contains("ERROR pingora") && l.contains("handshake"))
        .count();
    // Pingora logs each one; the limiter lets BURST through per window.
    assert!(noisy >= 1, "{log}");
    let limit = 2 * pylon::ops::log_limit::BURST as usize;
    assert!(noisy <= limit, "{noisy} lines:\n{log}");
}
