//! The limit plugins through running gateways: `limit-count` with `policy: redis` shared by
//! two gateways through a real Redis (Debian's `redis-server`), and what happens when Redis
//! is down; `limit-req` (leaky bucket, delay and `nodelay`); `limit-conn` (concurrent
//! requests held open by a slow origin).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ops::{listening, wait_until, Pylon};
use common::origins::HttpOrigin;
use common::plugins::{get, Answer};
use common::*;

/// A `redis-server` on a free loopback port with its files in a temporary folder, saving
/// nothing; killed on drop.
struct Redis {
    port: u16,
    password: String,
    /// The CA redis-cli trusts, for a TLS Redis.
    tls_ca: Option<String>,
    child: Option<Child>,
}

impl Redis {
    fn start(dir: &Path, password: &str) -> Redis {
        Redis::start_with(dir, password, None)
    }

    /// With `tls`, Redis listens with TLS only, with `pki`'s server certificate.
    fn start_with(dir: &Path, password: &str, tls: Option<&Pki>) -> Redis {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        match tls {
            None => cmd.args(["--port", &port.to_string()]),
            Some(pki) => cmd
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cert-file", &pki.path("server.crt")])
                .args(["--tls-key-file", &pki.path("server.key")])
                .args(["--tls-ca-cert-file", &pki.path("ca.crt")])
                .args(["--tls-auth-clients", "no"]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--requirepass", password])
            .arg("--dir")
            .arg(dir)
            .args(["--logfile", "redis.log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let r = Redis {
            port,
            password: password.to_string(),
            tls_ca: tls.map(|p| p.path("ca.crt")),
            child: Some(child),
        };
        assert!(
            wait_until(Duration::from_secs(20), || listening(port)
                && r.cli(&["ping"]).trim() == "PONG"),
            "redis-server did not start:\n{}",
            std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
        );
        r
    }

    /// `redis-cli <args>`: its standard output.
    fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        if let Some(ca) = &self.tls_ca {
            cmd.args(["--tls", "--cacert", ca]);
        }
        let out = cmd
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .env("REDISCLI_AUTH", &self.password)
            .args(args)
            .output()
            .expect("redis-cli (apt-get install redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A gateway serving from three single-thread runtimes (`threads: 3`, `work_stealing:
/// false`), so that requests reach the Redis connection from several runtimes; with
/// `env` for the process.
fn multi_runtime_gateway(dir: &Path, resources: &str, env: &[(&str, &str)]) -> Pylon {
    std::fs::create_dir_all(dir).unwrap();
    let port = free_port();
    let conf = dir.join("pylon.yaml");
    std::fs::write(
        &conf,
        format!(
            "gateway:\n  listen: [\"127.0.0.1:{port}\"]\n  threads: 3\n  work_stealing: false\n  pid_file: {d}/pylon.pid\n  upgrade_sock: {d}/upgrade.sock\nresources: resources.yaml\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("resources.yaml"), resources).unwrap();
    Pylon::spawn(dir, &conf, port, "pylon", &[], env)
}

fn origin_route(id: &str, uri: &str, plugin: &str, origin: &HttpOrigin) -> String {
    format!(
        "  - id: {id}\n    uri: {uri}\n    plugins:\n{plugin}    upstream: {{ nodes: {{\"127.0.0.1:{p}\": 1}} }}\n",
        p = origin.port
    )
}

#[test]
fn limit_count_with_redis_is_shared_by_two_gateways() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), "fleet-s3cret");
    let origin = HttpOrigin::start("origin");
    let plugin = format!(
        "      limit-count:\n        count: 5\n        time_window: 60\n        rejected_code: 429\n        policy: redis\n        redis_host: 127.0.0.1\n        redis_port: {}\n        redis_password: fleet-s3cret\n        redis_database: 2\n        redis_timeout: 5000\n",
        redis.port
    );
    // limit-req with policy: redis too: 0.1 r/s with a burst of 1 and nodelay lets two
    // requests through in all, whichever gateway they reach.
    let req_plugin = format!(
        "      limit-req: {{ rate: 0.1, burst: 1, key: remote_addr, nodelay: true, policy: redis, redis_host: 127.0.0.1, redis_port: {}, redis_password: fleet-s3cret, redis_timeout: 5000 }}\n",
        redis.port
    );
    let resources = format!(
        "routes:\n{}{}",
        origin_route("shared", "/r", &plugin, &origin),
        origin_route("req", "/req", &req_plugin, &origin)
    );
    let d1 = dir.path().join("gw1");
    std::fs::create_dir_all(&d1).unwrap();
    let gw1 = Gateway::start(&d1, &resources);
    let gw2 = multi_runtime_gateway(&dir.path().join("gw2"), &resources, &[]);
    let urls = |path: &str| {
        [
            gw1.url(path),
            format!("http://127.0.0.1:{}{path}", gw2.port),
        ]
    };

    let r = urls("/r");
    let answers: Vec<Answer> = (0..8).map(|i| get(&r[i % 2], &[])).collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429, 429, 429],
        "{}\n{}",
        gw1.log(),
        gw2.log()
    );
    let remaining: Vec<&str> = answers
        .iter()
        .map(|a| a.header("x-ratelimit-remaining").unwrap())
        .collect();
    assert_eq!(remaining, ["4", "3", "2", "1", "0", "0", "0", "0"]);
    assert_eq!(answers[0].header("x-ratelimit-limit"), Some("5"));
    let reset: u64 = answers[7]
        .header("x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&reset), "reset {reset}");
    assert_eq!(
        origin.traffic(),
        5,
        "rejected requests never reach the origin"
    );

    // One counter in the configured database, named the same by both gateways, with the
    // window as its time to live.
    let keys = redis.cli(&["-n", "2", "--scan", "--pattern", "plugin-limit-count:*"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys, ["plugin-limit-count:v1:route/shared:5:60:127.0.0.1"]);
    assert_eq!(redis.cli(&["-n", "2", "get", keys[0]]).trim(), "8");
    let ttl: i64 = redis
        .cli(&["-n", "2", "ttl", keys[0]])
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&ttl), "ttl {ttl}");

    let req = urls("/req");
    let statuses: Vec<u16> = (0..4).map(|i| get(&req[i % 2], &[]).status).collect();
    assert_eq!(statuses, [200, 200, 503, 503]);
    let keys = redis.cli(&["--scan", "--pattern", "limit_req:*"]);
    assert_eq!(
        keys.trim(),
        "limit_req:plugin-limit-req:route/req:0.1:1:127.0.0.1"
    );

    for log in [gw1.log(), gw2.log()] {
        assert!(
            !log.contains("fleet-s3cret"),
            "the password is never logged"
        );
    }
}

#[test]
fn limit_count_with_redis_down_answers_500_or_degrades() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(dir.path(), "down-s3cret");
    let origin = HttpOrigin::start("origin");
    let limit = |extra: &str, port: u16| {
        format!(
            "      limit-count:\n        count: 100\n        time_window: 60\n        policy: redis\n        redis_host: 127.0.0.1\n        redis_port: {port}\n        redis_password: down-s3cret\n        redis_timeout: 5000\n{extra}"
        )
    };
    let nobody = free_port();
    let resources = format!(
        "routes:\n{}{}{}",
        origin_route("strict", "/strict", &limit("", redis.port), &origin),
        origin_route(
            "degrade",
            "/degrade",
            &limit("        allow_degradation: true\n", redis.port),
            &origin
        ),
        origin_route("never", "/never", &limit("", nobody), &origin),
    );
    let gw = Gateway::start(dir.path(), &resources);

    // Up: both count.
    for path in ["/strict", "/degrade"] {
        let a = get(&gw.url(path), &[]);
        assert_eq!(
            (a.status, a.header("x-ratelimit-remaining")),
            (200, Some("99")),
            "{}",
            gw.log()
        );
    }
    // A Redis nobody listens on: APISIX's 500.
    let a = get(&gw.url("/never"), &[]);
    assert_eq!(a.status, 500);
    assert_eq!(a.body, "{\"error_msg\":\"failed to limit count\"}\n");

    // Redis goes away after the connection was made.
    redis.kill();
    assert!(wait_until(Duration::from_secs(10), || !listening(
        redis.port
    )));
    for _ in 0..2 {
        let a = get(&gw.url("/strict"), &[]);
        assert_eq!(
            (a.status, a.body.as_str()),
            (500, "{\"error_msg\":\"failed to limit count\"}\n")
        );
        let a = get(&gw.url("/degrade"), &[]);
        assert_eq!((a.status, a.body.as_str()), (200, "origin"));
        assert_eq!(
            a.header("x-ratelimit-remaining"),
            None,
            "no counter, no quota"
        );
    }
    let log = gw.log();
    assert!(
        log.contains("Redis 127.0.0.1:"),
        "the failure is logged:\n{log}"
    );
    assert!(!log.contains("down-s3cret"), "the password is never logged");
}

#[test]
fn limit_count_over_tls_verifies_redis_by_default() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pki")).unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "127.0.0.1");
    let redis = Redis::start_with(dir.path(), "tls-s3cret", Some(&pki));
    let origin = HttpOrigin::start("origin");
    let limit = |extra: &str| {
        format!(
            "      limit-count: {{ count: 3, time_window: 60, policy: redis, redis_host: 127.0.0.1, redis_port: {}, redis_password: tls-s3cret, redis_ssl: true, redis_timeout: 5000{extra} }}\n",
            redis.port
        )
    };
    let resources = format!(
        "routes:\n{}{}",
        origin_route("verified", "/verified", &limit(""), &origin),
        origin_route(
            "unverified",
            "/unverified",
            &limit(", redis_ssl_verify: false"),
            &origin
        ),
    );
    let gw = Gateway::start(dir.path(), &resources);
    // A gateway whose OpenSSL trusts the test CA (SSL_CERT_FILE), as an operator adds a
    // private CA to the system's bundle.
    let ca = pki.path("ca.crt");
    let trusting = multi_runtime_gateway(
        &dir.path().join("trusting"),
        &resources,
        &[("SSL_CERT_FILE", &ca)],
    );
    // The test CA is not one the system trusts: verification (the default) fails.
    let a = get(&gw.url("/verified"), &[]);
    assert_eq!(
        (a.status, a.body.as_str()),
        (500, "{\"error_msg\":\"failed to limit count\"}\n")
    );
    // Without verification the connection is encrypted and counts.
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(&gw.url("/unverified"), &[]).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 503], "{}", gw.log());
    let keys = redis.cli(&["--scan", "--pattern", "plugin-limit-count:*"]);
    assert_eq!(
        keys.trim(),
        "plugin-limit-count:v1:route/unverified:3:60:127.0.0.1"
    );
    // Verified against a trusted CA, for the certificate's address.
    let url = format!("http://127.0.0.1:{}/verified", trusting.port);
    let statuses: Vec<u16> = (0..4).map(|_| get(&url, &[]).status).collect();
    assert_eq!(statuses, [200, 200, 200, 503], "{}", trusting.log());
}

#[test]
fn limit_req_rejects_beyond_the_burst_and_delays_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let origin = HttpOrigin::start("origin");
    // APISIX's examples, with slower rates so that no request can find the bucket drained
    // by the time it arrives: 0.1 r/s without burst; 0.25 r/s with a burst of 1 (the
    // second request waits 4 s); 0.01 r/s with a burst of 1 and nodelay (waiting would take
    // 100 s, beyond the client's 10 s timeout).
    let resources = format!(
        "routes:\n{}{}{}",
        origin_route(
            "strict",
            "/strict",
            "      limit-req: { rate: 0.1, burst: 0, key: remote_addr, key_type: var, rejected_code: 429, policy: local, nodelay: true }\n",
            &origin
        ),
        origin_route(
            "burst",
            "/burst",
            "      limit-req: { rate: 0.25, burst: 1, key: remote_addr, rejected_code: 429, rejected_msg: slow down }\n",
            &origin
        ),
        origin_route(
            "nodelay",
            "/nodelay",
            "      limit-req: { rate: 0.01, burst: 1, key: remote_addr, nodelay: true }\n",
            &origin
        ),
    );
    let gw = Gateway::start(dir.path(), &resources);

    let statuses: Vec<u16> = (0..4)
        .map(|_| get(&gw.url("/strict"), &[]).status)
        .collect();
    assert_eq!(statuses, [200, 429, 429, 429]);

    // nodelay: the burst goes through at once, beyond it 503 with no body.
    assert_eq!(get(&gw.url("/nodelay"), &[]).status, 200);
    assert_eq!(get(&gw.url("/nodelay"), &[]).status, 200);
    let a = get(&gw.url("/nodelay"), &[]);
    assert_eq!((a.status, a.body.as_str()), (503, ""));

    // The first request passes; of two more at once, one waits its turn (4 s) and passes,
    // the other is over the burst.
    assert_eq!(get(&gw.url("/burst"), &[]).status, 200);
    let url = gw.url("/burst");
    let timed = |url: String| {
        std::thread::spawn(move || {
            let t = Instant::now();
            (get(&url, &[]), t.elapsed())
        })
    };
    let b = timed(url.clone());
    std::thread::sleep(Duration::from_millis(200));
    let c = timed(url);
    let mut results = [b.join().unwrap(), c.join().unwrap()];
    results.sort_by_key(|(a, _)| a.status);
    let (ok, ok_took) = &results[0];
    let (rejected, _) = &results[1];
    assert_eq!(ok.status, 200);
    assert!(
        *ok_took >= Duration::from_millis(3900),
        "the request within the burst waited its turn: {ok_took:?}"
    );
    assert_eq!(
        (rejected.status, rejected.body.as_str()),
        (429, "{\"error_msg\":\"slow down\"}\n")
    );
}

#[test]
fn limit_conn_limits_concurrent_requests_and_releases_them() {
    let dir = tempfile::tempdir().unwrap();
    let origin = HttpOrigin::start("origin");
    // APISIX's example (conn 2, burst 1, default_conn_delay 0.1, 429), and one with a
    // longer delay to see it.
    let resources = format!(
        "routes:\n{}{}",
        origin_route(
            "example",
            "/get",
            "      limit-conn: { conn: 2, burst: 1, default_conn_delay: 0.1, key_type: var, key: remote_addr, policy: local, rejected_code: 429 }\n",
            &origin
        ),
        origin_route(
            "delayed",
            "/delayed",
            "      limit-conn: { conn: 1, burst: 1, default_conn_delay: 1, only_use_default_delay: true, key: remote_addr, rejected_msg: busy }\n",
            &origin
        ),
    );
    let gw = Gateway::start(dir.path(), &resources);
    // Slow enough that all five are in flight together even on a loaded machine.
    origin.set_delay_ms(5000);

    // Five at once: two go through, one waits then goes through, two are rejected.
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let url = gw.url("/get");
            std::thread::spawn(move || get(&url, &[]).status)
        })
        .collect();
    let mut statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(origin.traffic(), 3);

    // Every slot was given back: one at a time, requests go through again.
    origin.set_delay_ms(0);
    for _ in 0..4 {
        assert_eq!(get(&gw.url("/get"), &[]).status, 200);
    }

    // One held open; the next waits one default_conn_delay (1 s) before its upstream
    // request; a third is over conn + burst.
    origin.set_delay_ms(4000);
    let seen = origin.traffic();
    let url = gw.url("/delayed");
    let first = std::thread::spawn(move || get(&url, &[]).status);
    assert!(wait_until(Duration::from_secs(10), || origin.traffic() > seen));
    // Of two more at once, one waits its turn and goes through, the other is over
    // conn + burst.
    let timed = |url: String| {
        std::thread::spawn(move || {
            let t = Instant::now();
            (get(&url, &[]), t.elapsed())
        })
    };
    let second = timed(gw.url("/delayed"));
    std::thread::sleep(Duration::from_millis(200));
    let third = timed(gw.url("/delayed"));
    let mut results = [second.join().unwrap(), third.join().unwrap()];
    results.sort_by_key(|(a, _)| a.status);
    assert_eq!(first.join().unwrap(), 200);
    let (ok, took) = &results[0];
    assert_eq!(ok.status, 200);
    assert!(
        *took >= Duration::from_millis(4950),
        "waited 1 s, then the origin's 4 s: {took:?}"
    );
    let (rejected, _) = &results[1];
    assert_eq!(
        (rejected.status, rejected.body.as_str()),
        (503, "{\"error_msg\":\"busy\"}\n")
    );
}
