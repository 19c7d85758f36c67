//! Fleet configuration through a real etcd: several gateways following one etcd, writes with
//! etcdctl (APISIX JSON) and through the admin API, etcd killed, compacted, wiped and
//! replaced, invalid items, and starting from the local snapshot.

mod common;

use std::time::Duration;

use common::etcd::*;
use common::ops::wait_until;
use common::origins::HttpOrigin;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn three_gateways_follow_etcdctl_and_admin_writes() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let origin = HttpOrigin::start("origin");
    let gws: Vec<EtcdGateway> = ["a", "b", "c"]
        .iter()
        .map(|n| EtcdGateway::start(dir.path(), n, &etcd.endpoint(), ""))
        .collect();
    let all: Vec<&EtcdGateway> = gws.iter().collect();
    assert!(all_answer(&all, "/hello", 404, WAIT));

    // APISIX JSON, written as an APISIX operator would.
    etcd.put("/apisix/upstreams/u1", &upstream_json(origin.port));
    etcd.put("/apisix/routes/1", &route_json("/hello", "u1"));
    assert!(
        all_answer(&all, "/hello", 200, WAIT),
        "{}",
        gws[0].pylon.log()
    );

    etcd.del("/apisix/routes/1");
    assert!(
        all_answer(&all, "/hello", 404, WAIT),
        "{}",
        gws[1].pylon.log()
    );

    // Through gateway A's admin API: answers on B and C.
    let (s, body) = gws[0]
        .admin()
        .put("routes/2", &route_json("/via-admin", "u1"));
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["key"], "/apisix/routes/2");
    // The write was in etcd before the answer, and A serves it already.
    assert!(etcd.get("/apisix/routes/2").is_some());
    assert_eq!(gws[0].status("/via-admin"), 200);
    assert!(all_answer(&all, "/via-admin", 200, WAIT));
    // Reads come from etcd: B lists what A wrote.
    let (s, list) = gws[1].admin().get("routes");
    assert_eq!(s, 200);
    assert_eq!(list["total"], 1, "{list}");

    // Keys Pylon does not serve are passed over with one info line.
    etcd.put(
        "/apisix/stream_routes/1",
        &json!({"server_port": 9100, "upstream_id": "u1"}),
    );
    etcd.put("/apisix/routes/3", &route_json("/three", "u1"));
    assert!(all_answer(&all, "/three", 200, WAIT));
    assert!(gws[2].pylon.log().contains("not served by Pylon"));
}

#[test]
fn etcd_down_keeps_serving_and_writes_answer_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    let origin = HttpOrigin::start("origin");
    etcd.put("/apisix/upstreams/u1", &upstream_json(origin.port));
    etcd.put("/apisix/routes/1", &route_json("/hello", "u1"));
    let gws: Vec<EtcdGateway> = ["a", "b", "c"]
        .iter()
        .map(|n| EtcdGateway::start(dir.path(), n, &etcd.endpoint(), ""))
        .collect();
    let all: Vec<&EtcdGateway> = gws.iter().collect();
    assert!(all_answer(&all, "/hello", 200, WAIT));

    etcd.kill();
    assert!(
        gws[0].pylon.wait_log("etcd unreachable", WAIT),
        "{}",
        gws[0].pylon.log()
    );
    let mut not_ok = 0;
    for _ in 0..100 {
        for g in &gws {
            if g.status("/hello") != 200 {
                not_ok += 1;
            }
        }
    }
    assert_eq!(not_ok, 0, "non-2xx answers while etcd was down");
    let (s, body) = gws[1].admin().put("routes/2", &route_json("/two", "u1"));
    assert_eq!(s, 503, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("nothing was changed"),
        "{body}"
    );

    etcd.restart();
    // Reconnection uses backoff capped at 5 s; the next change applies everywhere.
    assert!(wait_until(Duration::from_secs(15), || {
        gws[1].admin().put("routes/2", &route_json("/two", "u1")).0 == 201
    }));
    assert!(
        all_answer(&all, "/two", 200, WAIT),
        "{}",
        gws[2].pylon.log()
    );
    assert!(gws[2].pylon.log().contains("etcd reachable again"));
}

#[test]
fn changes_and_deletions_made_while_cut_off_apply_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let origin = HttpOrigin::start("origin");
    etcd.put("/apisix/upstreams/u1", &upstream_json(origin.port));
    etcd.put("/apisix/routes/old", &route_json("/old", "u1"));
    let gw = EtcdGateway::start(dir.path(), "a", &etcd.endpoint(), "");
    assert!(all_answer(&[&gw], "/old", 200, WAIT));

    // Cut the gateway off (stopped), change and delete, compact past its revision.
    common::ops::signal(gw.pylon.pid(), libc::SIGSTOP);
    etcd.del("/apisix/routes/old");
    for i in 0..20 {
        etcd.put(
            &format!("/apisix/routes/n{i}"),
            &route_json(&format!("/n{i}"), "u1"),
        );
    }
    etcd.del("/apisix/routes/n0");
    etcd.compact();
    common::ops::signal(gw.pylon.pid(), libc::SIGCONT);

    assert!(all_answer(&[&gw], "/n19", 200, WAIT), "{}", gw.pylon.log());
    assert_eq!(gw.status("/old"), 404);
    assert_eq!(gw.status("/n0"), 404);
    assert_eq!(gw.status("/n7"), 200);
}

#[test]
fn a_wiped_etcd_with_other_content_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    let origin = HttpOrigin::start("origin");
    etcd.put("/apisix/upstreams/u1", &upstream_json(origin.port));
    for i in 0..10 {
        etcd.put(
            &format!("/apisix/routes/r{i}"),
            &route_json(&format!("/r{i}"), "u1"),
        );
    }
    let gws: Vec<EtcdGateway> = ["a", "b"]
        .iter()
        .map(|n| EtcdGateway::start(dir.path(), n, &etcd.endpoint(), ""))
        .collect();
    let all: Vec<&EtcdGateway> = gws.iter().collect();
    assert!(all_answer(&all, "/r9", 200, WAIT));

    etcd.wipe_and_restart();
    etcd.put("/apisix/upstreams/u1", &upstream_json(origin.port));
    etcd.put("/apisix/routes/new", &route_json("/new", "u1"));
    assert!(
        all_answer(&all, "/new", 200, Duration::from_secs(15)),
        "{}",
        gws[0].pylon.log()
    );
    assert!(all_answer(&all, "/r9", 404, WAIT));
    assert_eq!(gws[1].status("/r0"), 404);
}

#[test]
fn invalid_items_are_skipped_and_the_rest_applies() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let origin = HttpOrigin::start("origin");
    etcd.put("/apisix/upstreams/u1", &upstream_json(origin.port));
    etcd.put("/apisix/routes/good", &route_json("/good", "u1"));
    etcd.put("/apisix/routes/changed", &route_json("/changed", "u1"));
    let gw = EtcdGateway::start(dir.path(), "a", &etcd.endpoint(), "");
    assert!(all_answer(&[&gw], "/changed", 200, WAIT));

    // A bad field, a dangling upstream_id, a missing service, not JSON at all, and a valid
    // item changed into an invalid one.
    etcd.put(
        "/apisix/routes/bad",
        &json!({"uri": "/bad", "upstream_id": "u1", "bogus": 1}),
    );
    etcd.put("/apisix/routes/dangling", &route_json("/dangling", "nope"));
    etcd.put(
        "/apisix/routes/noservice",
        &json!({"uri": "/noservice", "service_id": "s"}),
    );
    etcd.put_raw("/apisix/routes/notjson", "{uri: /x");
    etcd.put(
        "/apisix/routes/changed",
        &json!({"uri": "changed-no-slash", "upstream_id": "u1"}),
    );
    etcd.put("/apisix/routes/after", &route_json("/after", "u1"));

    assert!(
        all_answer(&[&gw], "/after", 200, WAIT),
        "{}",
        gw.pylon.log()
    );
    assert_eq!(gw.status("/good"), 200);
    assert_eq!(gw.status("/bad"), 404);
    assert_eq!(
        gw.status("/dangling"),
        503,
        "APISIX answers 503 for a missing upstream"
    );
    assert_eq!(gw.status("/noservice"), 404);
    assert_eq!(
        gw.status("/changed"),
        200,
        "the previous value keeps serving"
    );
    let log = gw.pylon.log();
    for needle in [
        "/apisix/routes/bad skipped (not served): bogus: unknown field",
        "/apisix/routes/noservice skipped (not served): service_id: no service",
        "/apisix/routes/notjson skipped",
        "/apisix/routes/changed skipped (its previous value keeps serving): uri:",
        "routes/dangling.upstream_id: no upstream with id \"nope\": its requests answer 503",
    ] {
        assert!(log.contains(needle), "{needle:?} not in:\n{log}");
    }

    // `pylon check` lists every invalid item with its key and exits 1.
    let (ok, _, stderr) = pylon_once(&["check", "-c", gw.pylon.conf.to_str().unwrap()]);
    assert!(!ok, "{stderr}");
    for key in [
        "routes/bad: bogus",
        "routes/noservice: service_id",
        "routes/notjson",
        "routes/changed: uri",
    ] {
        assert!(
            stderr.contains(&format!("error: /apisix/{key}")),
            "{key}: {stderr}"
        );
    }

    // Fixing the item applies it.
    etcd.put("/apisix/routes/bad", &route_json("/bad", "u1"));
    assert!(all_answer(&[&gw], "/bad", 200, WAIT));
}

#[test]
fn start_from_the_snapshot_when_etcd_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path());
    let origin = HttpOrigin::start("origin");
    etcd.put("/apisix/upstreams/u1", &upstream_json(origin.port));
    etcd.put("/apisix/routes/1", &route_json("/hello", "u1"));
    let gw = EtcdGateway::start(dir.path(), "a", &etcd.endpoint(), "");
    assert!(all_answer(&[&gw], "/hello", 200, WAIT));
    let snapshot = dir.path().join("a/etcd-snapshot.json");
    // Written once changes stop for a second.
    assert!(wait_until(WAIT, || snapshot.exists()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&snapshot).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the snapshot may hold keys");
    drop(gw);
    etcd.kill();

    // With a snapshot: serves it, says so, and switches to etcd when it answers.
    let gw = EtcdGateway::start(dir.path(), "a", &etcd.endpoint(), "");
    assert_eq!(gw.status("/hello"), 200);
    assert!(
        gw.pylon.log().contains("starting from the snapshot"),
        "{}",
        gw.pylon.log()
    );

    // Without one: exits non-zero with the reason.
    let conf = etcd_conf(dir.path(), "b", &etcd.endpoint(), "");
    let (ok, _, stderr) = pylon_once(&["run", "-c", conf.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("no usable snapshot"), "{stderr}");
    assert!(stderr.contains(&etcd.endpoint()), "{stderr}");

    etcd.restart();
    etcd.put("/apisix/routes/2", &route_json("/two", "u1"));
    assert!(
        all_answer(&[&gw], "/two", 200, Duration::from_secs(15)),
        "{}",
        gw.pylon.log()
    );
}
