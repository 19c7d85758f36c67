//! Load balancing, health checks, retries, status codes and forwarding headers, through the
//! real `pylon` binary against in-process HTTP origins.

mod common;

use std::time::Duration;

use common::origins::{lb_resources, HttpOrigin};
use common::*;

fn origins(names: &[&str]) -> Vec<HttpOrigin> {
    names.iter().map(|n| HttpOrigin::start(n)).collect()
}

fn bodies(gw: &Gateway, n: usize) -> String {
    (0..n)
        .map(|_| {
            let (status, body) = gw.get("/", None);
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect::<Vec<_>>()
        .join("")
}

/// Polls `cond` every 50 ms, at most `tries` times.
fn eventually(tries: usize, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn roundrobin_is_smooth_and_exact() {
    let dir = tempfile::tempdir().unwrap();
    let o = origins(&["A", "B", "C", "D", "E"]);
    let nodes: Vec<(u16, u32)> = o
        .iter()
        .zip([5, 1, 1, 1, 1])
        .map(|(o, w)| (o.port, w))
        .collect();
    let gw = Gateway::start(dir.path(), &lb_resources(&nodes, ""));
    assert_eq!(bodies(&gw, 18), "ABACADAEAABACADAEA");
}

#[test]
fn roundrobin_three_to_one_never_picks_weight_zero() {
    let dir = tempfile::tempdir().unwrap();
    let o = origins(&["A", "Z", "B"]);
    let nodes = [(o[0].port, 3), (o[1].port, 0), (o[2].port, 1)];
    let gw = Gateway::start(dir.path(), &lb_resources(&nodes, ""));
    assert_eq!(bodies(&gw, 12), "AABAAABAAABA");
    assert_eq!(o[1].traffic(), 0);
}

fn user_nodes(gw: &Gateway, users: usize) -> Vec<String> {
    let client = reqwest::blocking::Client::new();
    (0..users)
        .map(|u| {
            let resp = client
                .get(gw.url("/"))
                .header("x-user", format!("user-{u}"))
                .send()
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            resp.text().unwrap()
        })
        .collect()
}

#[test]
fn chash_is_sticky_and_removing_a_node_moves_only_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let o = origins(&["A", "B", "C"]);
    let extra = "    type: chash\n    hash_on: header\n    key: X-User\n";
    let all: Vec<(u16, u32)> = o.iter().map(|o| (o.port, 1)).collect();
    let gw = Gateway::start(dir.path(), &lb_resources(&all, extra));
    let first = user_nodes(&gw, 60);
    assert_eq!(user_nodes(&gw, 60), first, "same key, same node");
    for name in ["A", "B", "C"] {
        assert!(
            first.iter().any(|n| n == name),
            "{name} got no key: {first:?}"
        );
    }
    drop(gw);
    // Same nodes without C.
    let dir2 = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir2.path(), &lb_resources(&all[..2], extra));
    let after = user_nodes(&gw, 60);
    for (b, a) in first.iter().zip(&after) {
        if b != "C" {
            assert_eq!(a, b, "a key that was not on C moved");
        }
    }
}

#[test]
fn least_conn_avoids_the_busy_node() {
    let dir = tempfile::tempdir().unwrap();
    let o = origins(&["slow", "fast"]);
    o[0].set_delay_ms(3000);
    let nodes = [(o[0].port, 1), (o[1].port, 1)];
    let gw = Gateway::start(dir.path(), &lb_resources(&nodes, "    type: least_conn\n"));
    // Park one request on the slow node (requests that land on the fast one return at once).
    let url = gw.url("/");
    let mut parked = Vec::new();
    while o[0].traffic() == 0 && parked.len() < 5 {
        let url = url.clone();
        parked.push(std::thread::spawn(move || {
            reqwest::blocking::get(&url).unwrap().status()
        }));
        eventually(20, || o[0].traffic() + o[1].traffic() == parked.len());
    }
    assert_eq!(o[0].traffic(), 1);
    // While it is busy, every request goes to the idle node.
    let fast_before = o[1].traffic();
    assert_eq!(bodies(&gw, 20), "fast".repeat(20));
    assert_eq!(o[1].traffic() - fast_before, 20);
    assert_eq!(o[0].traffic(), 1);
    for t in parked {
        assert_eq!(t.join().unwrap().as_u16(), 200);
    }
}

fn active_check(extra: &str) -> String {
    format!(
        "    checks:\n      active:\n        http_path: /health\n        healthy: {{interval: 0.1, successes: 2}}\n        unhealthy: {{interval: 0.1, http_failures: 2}}\n{extra}"
    )
}

#[test]
fn active_check_takes_a_node_out_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let o = origins(&["A", "B"]);
    let nodes = [(o[0].port, 1), (o[1].port, 1)];
    let gw = Gateway::start(dir.path(), &lb_resources(&nodes, &active_check("")));
    assert!(
        eventually(100, || o[0].probes() >= 2 && o[1].probes() >= 2),
        "no probes"
    );
    o[0].set_status(500);
    assert!(
        eventually(100, || gw.log().contains(&format!(
            "node 127.0.0.1:{} is now unhealthy",
            o[0].port
        ))),
        "{}",
        gw.log()
    );
    let before = o[0].traffic();
    assert_eq!(bodies(&gw, 10), "BBBBBBBBBB");
    assert_eq!(o[0].traffic(), before);
    o[0].set_status(200);
    assert!(
        eventually(100, || gw
            .log()
            .contains(&format!("node 127.0.0.1:{} is now healthy", o[0].port))),
        "{}",
        gw.log()
    );
    let b = bodies(&gw, 10);
    assert!(b.contains('A') && b.contains('B'), "{b}");
}

#[test]
fn active_https_check_uses_the_client_certificate_and_sni() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let origin = Origin::start(&pki, true);
    let res = founding_resources(origin.port, FOUNDING_TLS, &pki).replace(
        "    tls:\n",
        "    checks:\n      active:\n        type: https\n        http_path: /hello\n        healthy: {interval: 0.1, successes: 1}\n        unhealthy: {interval: 0.1, http_failures: 1}\n    tls:\n",
    );
    let gw = Gateway::start(dir.path(), &res);
    assert!(eventually(100, || origin.seen().len() >= 2), "no probes");
    let probe = &origin.seen()[0];
    assert_eq!(
        (probe.cn.as_str(), probe.sni.as_str()),
        ("client", "test.com")
    );
    origin.set_status(503);
    assert!(
        eventually(100, || gw.log().contains(
            "is now unhealthy (1 consecutive bad HTTP statuses, active check)"
        )),
        "{}",
        gw.log()
    );
    origin.set_status(200);
    assert!(
        eventually(100, || gw.log().contains("is now healthy")),
        "{}",
        gw.log()
    );
    assert_eq!(gw.get("/hello", None), (200, "Hello API7!".to_string()));
}

#[test]
fn passive_check_stops_traffic_to_a_failing_node() {
    let dir = tempfile::tempdir().unwrap();
    let o = origins(&["A", "B"]);
    o[0].set_status(500);
    let nodes = [(o[0].port, 1), (o[1].port, 1)];
    let extra = "    checks:\n      passive:\n        unhealthy: {http_statuses: [500], http_failures: 2}\n";
    let gw = Gateway::start(dir.path(), &lb_resources(&nodes, extra));
    let client = reqwest::blocking::Client::new();
    for _ in 0..20 {
        client.get(gw.url("/")).send().unwrap();
    }
    assert_eq!(
        o[0].traffic(),
        2,
        "A should get exactly the 2 failures that marked it down"
    );
    assert_eq!(o[1].traffic(), 18);
    assert!(gw
        .log()
        .contains("is now unhealthy (2 consecutive bad HTTP statuses, passive check)"));
}

#[test]
fn dead_node_fails_over_to_the_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let o = origins(&["B"]);
    let dead = free_port();
    let gw = Gateway::start(dir.path(), &lb_resources(&[(dead, 1), (o[0].port, 1)], ""));
    assert_eq!(bodies(&gw, 6), "BBBBBB");
    assert!(
        gw.log()
            .contains("connect failed, retrying on another node"),
        "{}",
        gw.log()
    );
}

fn error_line(gw: &Gateway, code: u16) -> String {
    let log = gw.log();
    log.lines()
        .find(|l| l.contains(&format!("-> {code}:")))
        .unwrap_or_else(|| panic!("no {code} line in:\n{log}"))
        .to_string()
}

#[test]
fn status_502_503_504_each_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let dead = free_port();
    let slow = HttpOrigin::start("slow");
    slow.set_delay_ms(2000);
    let res = format!(
        "routes:\n  - {{id: refused, uri: /refused, upstream_id: dead}}\n  - {{id: nodns, uri: /nodns, upstream_id: nodns}}\n  - {{id: slow, uri: /slow, upstream_id: slow, timeout: {{read: 0.3}}}}\nupstreams:\n  - {{id: dead, nodes: [{{host: 127.0.0.1, port: {dead}, weight: 1}}]}}\n  - {{id: nodns, nodes: [{{host: no-such-host.invalid, port: 80, weight: 1}}]}}\n  - {{id: slow, nodes: [{{host: 127.0.0.1, port: {}, weight: 1}}]}}\n",
        slow.port
    );
    let gw = Gateway::start(dir.path(), &res);
    assert_eq!(gw.get("/refused", None).0, 502);
    let line = error_line(&gw, 502);
    assert!(
        line.contains("route refused upstream dead")
            && line.contains(&format!("node 127.0.0.1:{dead}")),
        "{line}"
    );
    assert!(line.contains("ConnectRefused"), "{line}");
    assert_eq!(gw.get("/nodns", None).0, 503);
    let line = error_line(&gw, 503);
    assert!(
        line.contains("route nodns upstream nodns") && line.contains("no available node"),
        "{line}"
    );
    assert_eq!(gw.get("/slow", None).0, 504);
    let line = error_line(&gw, 504);
    assert!(
        line.contains("route slow upstream slow") && line.contains("ReadTimedout"),
        "{line}"
    );
}

#[test]
fn post_is_not_retried_after_it_was_sent_but_get_is() {
    let dir = tempfile::tempdir().unwrap();
    let o = origins(&["slow", "fast"]);
    o[0].set_delay_ms(2000);
    let nodes = [(o[0].port, 1), (o[1].port, 1)];
    let extra = "    timeout: {connect: 1, send: 1, read: 0.3}\n    retries: 1\n";
    let gw = Gateway::start(dir.path(), &lb_resources(&nodes, extra));
    let client = reqwest::blocking::Client::new();
    // Round robin starts at the slow node.
    let post = client.post(gw.url("/")).body("payload").send().unwrap();
    assert_eq!(post.status().as_u16(), 504);
    assert_eq!(
        o[1].seen().iter().filter(|s| s.method == "POST").count(),
        0,
        "POST was retried"
    );
    // The next request starts at the fast node; the one after at the slow node, then retries.
    assert_eq!(gw.get("/", None), (200, "fast".to_string()));
    assert_eq!(gw.get("/", None), (200, "fast".to_string()));
    assert_eq!(o[0].seen().iter().filter(|s| s.method == "GET").count(), 1);
}

#[test]
fn forwarding_headers_and_pass_host() {
    let dir = tempfile::tempdir().unwrap();
    let o = origins(&["A"]);
    let p = o[0].port;
    let res = format!(
        "routes:\n  - {{id: pass, uri: /pass, upstream_id: pass}}\n  - {{id: node, uri: /node, upstream_id: node}}\n  - {{id: rw, uri: /rw, upstream_id: rw}}\nupstreams:\n  - {{id: pass, nodes: {{\"127.0.0.1:{p}\": 1}}}}\n  - {{id: node, pass_host: node, nodes: {{\"127.0.0.1:{p}\": 1}}}}\n  - {{id: rw, pass_host: rewrite, upstream_host: backend.internal, nodes: {{\"127.0.0.1:{p}\": 1}}}}\n"
    );
    let gw = Gateway::start(dir.path(), &res);
    let client = reqwest::blocking::Client::new();
    for path in ["/pass", "/node", "/rw"] {
        let r = client
            .get(gw.url(path))
            .header("host", "api.example.com:8080")
            .header("x-forwarded-for", "203.0.113.7")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let seen = o[0].seen();
    let h = |i: usize, name: &str| seen[i].headers.get(name).cloned().unwrap_or_default();
    assert_eq!(h(0, "host"), "api.example.com:8080");
    assert_eq!(h(1, "host"), format!("127.0.0.1:{p}"));
    assert_eq!(h(2, "host"), "backend.internal");
    assert_eq!(h(0, "x-forwarded-for"), "203.0.113.7, 127.0.0.1");
    assert_eq!(h(0, "x-real-ip"), "127.0.0.1");
    assert_eq!(h(0, "x-forwarded-proto"), "http");
    assert_eq!(h(0, "x-forwarded-host"), "api.example.com");
    assert_eq!(h(0, "x-forwarded-port"), gw.port.to_string());
}

#[test]
fn pooled_connection_closed_by_the_upstream_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let o = origins(&["A"]);
    o[0].set_connection_lifetime_ms(150);
    let gw = Gateway::start(dir.path(), &lb_resources(&[(o[0].port, 1)], ""));
    for round in 1..=5u64 {
        // Each request finds the previous (now idle, pooled) connection closed by the origin.
        assert_eq!(gw.get("/", None), (200, "A".to_string()), "round {round}");
        assert!(
            eventually(100, || o[0].connections().1 >= round),
            "origin did not close"
        );
    }
    assert_eq!(o[0].connections().0, 5);
    assert!(!gw.log().contains("-> 50"), "{}", gw.log());
}

/// Sends one raw HTTP/1.1 request (no client-side path normalization) and returns the status.
fn raw_status(port: u16, path: &str, host: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0)
}

#[test]
fn dot_segments_cannot_step_out_of_a_route() {
    let dir = tempfile::tempdir().unwrap();
    let o = origins(&["A"]);
    let res = format!(
        "routes:\n  - {{id: pub, uri: /pub/*, hosts: [test.com], upstream_id: u}}\nupstreams:\n  - {{id: u, nodes: {{\"127.0.0.1:{}\": 1}}}}\n",
        o[0].port
    );
    let gw = Gateway::start(dir.path(), &res);
    assert_eq!(raw_status(gw.port, "/pub/x", "test.com"), 200);
    for escape in [
        "/pub/../hello",
        "/pub/%2e%2e/hello",
        "/pub/..%2fhello",
        "/pub/%2E%2E/%2e/hello",
    ] {
        assert_eq!(raw_status(gw.port, escape, "test.com"), 404, "{escape}");
    }
    // Dot segments that stay inside the prefix still match, and reach the origin unchanged.
    assert_eq!(raw_status(gw.port, "/pub/a/../b", "test.com"), 200);
    assert_eq!(o[0].seen().last().unwrap().path, "/pub/a/../b");
    // A trailing dot on the host name is the same name.
    assert_eq!(raw_status(gw.port, "/pub/x", "TEST.COM."), 200);
}
