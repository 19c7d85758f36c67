//! The plugin framework through a running gateway: `plugins:` on routes, services, plugin
//! configs and global rules, merged as APISIX merges them; consumers; unknown plugins
//! refused (or skipped when configured); `_meta.disable`; and the documented examples of
//! `key-auth`, `limit-count` (local) and `proxy-rewrite`.

mod common;

use common::ops::wait_until;
use common::origins::HttpOrigin;
use common::plugins::{get, send};
use common::*;

fn url(gw: &Gateway, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", gw.port)
}

#[test]
fn key_auth_admits_consumers_by_key_and_hides_it_when_asked() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let gw = Gateway::start_with(
        dir.path(),
        &format!("  access_log: {{ path: {} }}\n", log.display()),
        &format!(
            r#"consumers:
  - username: jack
    plugins:
      key-auth: {{ key: auth-one }}
routes:
  - id: "1"
    uri: /open
    plugins:
      key-auth: {{}}
    upstream: {{ nodes: {{"127.0.0.1:{p}": 1}} }}
  - id: "2"
    uri: /hidden
    plugins:
      key-auth: {{ hide_credentials: true }}
    upstream: {{ nodes: {{"127.0.0.1:{p}": 1}} }}
"#,
            p = origin.port
        ),
    );
    let a = get(&url(&gw, "/open"), &[]);
    assert_eq!(a.status, 401);
    assert_eq!(a.body, "{\"message\":\"Missing API key in request\"}\n");
    assert_eq!(a.header("www-authenticate"), Some("apikey realm=\"key\""));
    let a = get(&url(&gw, "/open"), &[("apikey", "wrong")]);
    assert_eq!(
        (a.status, a.body.as_str()),
        (401, "{\"message\":\"Invalid API key in request\"}\n")
    );
    assert!(
        origin.seen().is_empty(),
        "nothing reaches the upstream without a key"
    );

    let a = get(&url(&gw, "/open"), &[("apikey", "auth-one")]);
    assert_eq!((a.status, a.body.as_str()), (200, "origin"));
    let seen = origin.seen().pop().unwrap();
    assert_eq!(
        seen.headers.get("apikey").map(String::as_str),
        Some("auth-one")
    );
    assert_eq!(
        seen.headers.get("x-consumer-username").map(String::as_str),
        Some("jack")
    );

    let a = get(&url(&gw, "/hidden?apikey=auth-one&page=2"), &[]);
    assert_eq!(a.status, 200);
    let seen = origin.seen().pop().unwrap();
    assert_eq!(seen.path, "/hidden?page=2", "the key left the query");
    let a = get(&url(&gw, "/hidden"), &[("apikey", "auth-one")]);
    assert_eq!(a.status, 200);
    assert!(!origin.seen().pop().unwrap().headers.contains_key("apikey"));
    // The key sent in the query is masked in the access log.
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("/hidden?apikey=***&page=2"))
    }));
    assert!(!std::fs::read_to_string(&log).unwrap().contains("auth-one"));
}

#[test]
fn limit_count_allows_count_per_window_and_the_route_wins_over_its_service() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            r#"services:
  - id: s
    plugins:
      limit-count: {{ count: 5, time_window: 60 }}
    upstream: {{ nodes: {{"127.0.0.1:{p}": 1}} }}
routes:
  - id: own
    uri: /own
    service_id: s
    plugins:
      limit-count: {{ count: 2, time_window: 60, rejected_code: 429, rejected_msg: "Requests are too frequent, please try again later." }}
  - id: inherited
    uri: /inherited
    service_id: s
"#,
            p = origin.port
        ),
    );
    let a = get(&url(&gw, "/own"), &[]);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(a.header("x-ratelimit-remaining"), Some("1"));
    let reset: u64 = a.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=60).contains(&reset), "reset {reset}");
    assert_eq!(
        get(&url(&gw, "/own"), &[]).header("x-ratelimit-remaining"),
        Some("0")
    );
    let a = get(&url(&gw, "/own"), &[]);
    assert_eq!(a.status, 429);
    assert_eq!(
        a.body,
        "{\"error_msg\":\"Requests are too frequent, please try again later.\"}\n"
    );
    assert_eq!(a.header("x-ratelimit-remaining"), Some("0"));

    // The service's limit (5) applies to the route without its own, with its own counter.
    let statuses: Vec<u16> = (0..6)
        .map(|_| get(&url(&gw, "/inherited"), &[]).status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 503]);
}

#[test]
fn plugin_configs_and_global_rules_apply_and_meta_disable_turns_off() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            r#"global_rules:
  - id: g
    plugins:
      proxy-rewrite: {{ headers: {{ set: {{ X-Global: "yes" }} }} }}
plugin_configs:
  - id: pc
    plugins:
      proxy-rewrite: {{ uri: /from-plugin-config }}
      limit-count: {{ count: 1, time_window: 60 }}
routes:
  - id: "1"
    uri: /pc
    plugin_config_id: pc
    plugins:
      limit-count: {{ count: 1, time_window: 60, _meta: {{ disable: true }} }}
    upstream: {{ nodes: {{"127.0.0.1:{p}": 1}} }}
"#,
            p = origin.port
        ),
    );
    // The route's own limit-count (disabled) replaces the plugin config's: no limit.
    for _ in 0..3 {
        assert_eq!(get(&url(&gw, "/pc?q=1"), &[]).status, 200);
    }
    let seen = origin.seen().pop().unwrap();
    assert_eq!(seen.path, "/from-plugin-config?q=1");
    // Global rules run for routes, and for requests no route matches.
    assert_eq!(
        seen.headers.get("x-global").map(String::as_str),
        Some("yes")
    );
    assert_eq!(get(&url(&gw, "/nothing"), &[]).status, 404);
}

#[test]
fn proxy_rewrite_documented_example() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &format!(
            r#"routes:
  - id: "1"
    uri: /test/index.html
    plugins:
      proxy-rewrite:
        uri: /test/home.html
        host: iresty.com
        method: POST
        headers:
          set: {{ X-Api-Version: v1, X-Client: "$remote_addr" }}
          add: {{ X-Request-ID: "112233" }}
          remove: [User-Agent]
    upstream: {{ nodes: {{"127.0.0.1:{p}": 1}} }}
  - id: "2"
    uri: /iresty/*
    plugins:
      proxy-rewrite: {{ regex_uri: ["^/iresty/(.*)/(.*)/(.*)", "/$1_$2_$3"] }}
    upstream: {{ nodes: {{"127.0.0.1:{p}": 1}} }}
"#,
            p = origin.port
        ),
    );
    assert_eq!(
        get(&url(&gw, "/test/index.html"), &[("user-agent", "curl")]).status,
        200
    );
    let seen = origin.seen().pop().unwrap();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/test/home.html")
    );
    assert_eq!(seen.headers["host"], "iresty.com");
    assert_eq!(seen.headers["x-api-version"], "v1");
    assert_eq!(seen.headers["x-client"], "127.0.0.1");
    assert_eq!(seen.headers["x-request-id"], "112233");
    assert!(!seen.headers.contains_key("user-agent"));
    assert_eq!(send("GET", &url(&gw, "/iresty/a/b/c?x=1"), &[]).status, 200);
    assert_eq!(origin.seen().pop().unwrap().path, "/a_b_c?x=1");
}

#[test]
fn unknown_plugins_are_refused_with_their_path_or_skipped_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let res = r#"routes:
  - id: "1"
    uri: /a
    plugins:
      key-auht: {}
    upstream: { nodes: {"127.0.0.1:1": 1} }
  - id: "2"
    uri: /b
    plugins:
      limit-count: { count: 0, time_window: 60 }
    upstream: { nodes: {"127.0.0.1:1": 1} }
consumers:
  - username: jack
    plugins:
      key-auth: {}
  - username: ann
    plugins:
      key-auth: { key: same-key }
  - username: bob
    plugins:
      key-auth: { key: same-key }
"#;
    let out = check(dir.path(), res);
    assert!(!out.ok);
    let text = out.stdout + &out.stderr;
    assert!(
        text.contains("routes[0].plugins.key-auht: unknown plugin"),
        "{text}"
    );
    assert!(
        text.contains("routes[1].plugins.limit-count.count: must be > 0"),
        "{text}"
    );
    assert!(
        text.contains("consumers[0].plugins.key-auth: missing field `key`"),
        "{text}"
    );

    let ok = r#"routes:
  - id: "1"
    uri: /a
    plugins:
      prometheus: {}
    upstream: { nodes: {"127.0.0.1:1": 1} }
"#;
    let out = check_with(dir.path(), "  ignore_unknown_plugins: true\n", ok);
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(
        (out.stdout.clone() + &out.stderr).contains("routes[0].plugins.prometheus: unknown plugin"),
        "a warning names it: {}{}",
        out.stdout,
        out.stderr
    );
}
