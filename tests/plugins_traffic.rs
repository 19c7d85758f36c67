//! The traffic plugins through a running gateway, with APISIX's documented examples:
//! `ip-restriction`, `real-ip` (and that a spoofed header from an untrusted peer changes
//! nothing: not the upstream's `X-Real-IP`, not `ip-restriction`, not a limit's key, not
//! the access log), `response-rewrite`, `redirect`, `cors` and `request-id`; and their
//! configuration errors, named by path.

mod common;

use std::path::Path;
use std::time::Duration;

use common::ops::wait_until;
use common::origins::{HttpOrigin, HttpSeen};
use common::plugins::{get, send};
use common::*;

fn url(gw: &Gateway, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", gw.port)
}

fn header<'a>(seen: &'a HttpSeen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).map(String::as_str)
}

/// `routes:` to the origin on `port`, one route per line of `spec`: `id uri plugins`, the
/// plugins as a YAML flow mapping.
fn routes(port: u16, spec: &str) -> String {
    let mut out = String::from("routes:\n");
    for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, ' ');
        let (id, uri) = (parts.next().unwrap(), parts.next().unwrap());
        let plugins = parts.next().unwrap();
        out.push_str(&format!(
            "  - id: {id}\n    uri: {uri}\n    plugins: {plugins}\n    upstream: {{ nodes: {{\"127.0.0.1:{port}\": 1}} }}\n"
        ));
    }
    out
}

#[test]
fn ip_restriction_whitelist_blacklist_and_the_real_ip_example() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &routes(
            origin.port,
            r#"
                white /anything { ip-restriction: { whitelist: ["192.168.0.1/24"], message: "Access denied" } }
                local /local { ip-restriction: { whitelist: ["127.0.0.0/8", "::1"] } }
                black /black { ip-restriction: { blacklist: ["10.0.0.0/8", "127.0.0.1"], response_code: 404 } }
                realip /real { ip-restriction: { whitelist: ["192.168.1.241", "2001:db8::/32"] }, real-ip: { source: arg_realip } }
            "#,
        ),
    );
    let a = get(&url(&gw, "/anything"), &[]);
    assert_eq!(
        (a.status, a.body.as_str()),
        (403, "{\"message\":\"Access denied\"}\n")
    );
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert!(
        origin.seen().is_empty(),
        "a refused request does not reach the upstream"
    );
    assert_eq!(get(&url(&gw, "/local"), &[]).status, 200);
    let a = get(&url(&gw, "/black"), &[]);
    assert_eq!(
        (a.status, a.body.as_str()),
        (404, "{\"message\":\"Your IP address is not allowed\"}\n")
    );

    // real-ip (priority 23000) runs before ip-restriction (3000): the address it found is
    // the one checked, and the one the upstream sees.
    assert_eq!(
        get(&url(&gw, "/real?realip=192.168.1.241"), &[]).status,
        200
    );
    let seen = origin.seen().pop().unwrap();
    assert_eq!(header(&seen, "x-real-ip"), Some("192.168.1.241"));
    assert_eq!(header(&seen, "x-forwarded-for"), Some("192.168.1.241"));
    assert_eq!(
        get(&url(&gw, "/real?realip=192.168.10.24"), &[]).status,
        403
    );
    assert_eq!(get(&url(&gw, "/real?realip=2001:db8::7"), &[]).status, 200);
    assert_eq!(get(&url(&gw, "/real?realip=2001:db9::7"), &[]).status, 403);
}

fn log_line_for(log: &Path, path: &str) -> String {
    let found = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(path)
    });
    assert!(found, "no access log line for {path}");
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .find(|l| l.contains(path))
        .unwrap()
        .to_string()
}

#[test]
fn real_ip_examples_and_a_spoofed_header_from_an_untrusted_peer_changes_nothing() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let show = r#"response-rewrite: { headers: { remote_addr: "$remote_addr", remote_port: "$remote_port" } }"#;
    let gw = Gateway::start_with(
        dir.path(),
        &format!("  access_log: {{ path: {} }}\n", log.display()),
        &routes(
            origin.port,
            &format!(
                r#"
                arg /get {{ real-ip: {{ source: arg_realip, trusted_addresses: ["127.0.0.0/24"] }}, {show} }}
                xff /xff {{ real-ip: {{ source: http_x_forwarded_for, trusted_addresses: ["127.0.0.0/24"] }}, {show} }}
                multi /multi {{ real-ip: {{ source: http_x_forwarded_for, recursive: true, trusted_addresses: ["192.128.0.0/16", "127.0.0.1/32"] }}, {show} }}
                spoof /spoof {{ real-ip: {{ source: http_x_forwarded_for, trusted_addresses: ["10.0.0.0/8"] }}, limit-count: {{ count: 1, time_window: 60 }} }}
                spoof-ipr /spoof-ipr {{ real-ip: {{ source: http_x_real_ip, trusted_addresses: ["10.0.0.0/8"] }}, ip-restriction: {{ whitelist: ["1.2.3.4"] }} }}
                trusted /trusted {{ real-ip: {{ source: http_x_forwarded_for, trusted_addresses: ["127.0.0.0/8"] }}, limit-count: {{ count: 1, time_window: 60 }} }}
            "#
            ),
        ),
    );
    // From a query argument, with a port.
    let a = get(&url(&gw, "/get?realip=1.2.3.4:9080"), &[]);
    assert_eq!(a.status, 200);
    assert_eq!(a.header("remote_addr"), Some("1.2.3.4"));
    assert_eq!(a.header("remote_port"), Some("9080"));
    // From X-Forwarded-For.
    let a = get(&url(&gw, "/xff"), &[("x-forwarded-for", "10.26.3.19")]);
    assert_eq!(a.header("remote_addr"), Some("10.26.3.19"));
    let seen = origin.seen().pop().unwrap();
    assert_eq!(header(&seen, "x-real-ip"), Some("10.26.3.19"));
    // Behind several proxies: the last untrusted address, right to left.
    let a = get(
        &url(&gw, "/multi"),
        &[("x-forwarded-for", "127.0.0.2, 192.128.1.1, 127.0.0.1")],
    );
    assert_eq!(a.header("remote_addr"), Some("127.0.0.2"));
    assert!(log_line_for(&log, "/multi").starts_with("127.0.0.2 "));

    // The peer (127.0.0.1) is not trusted: the claimed address changes nothing.
    let a = get(&url(&gw, "/spoof?n=1"), &[("x-forwarded-for", "1.1.1.1")]);
    assert_eq!(a.status, 200);
    let seen = origin.seen().pop().unwrap();
    assert_eq!(header(&seen, "x-real-ip"), Some("127.0.0.1"));
    assert_eq!(header(&seen, "x-forwarded-for"), Some("1.1.1.1, 127.0.0.1"));
    assert!(log_line_for(&log, "/spoof?n=1").starts_with("127.0.0.1 "));
    // ... the limit still counts 127.0.0.1, whatever address is claimed ...
    let a = get(&url(&gw, "/spoof?n=2"), &[("x-forwarded-for", "2.2.2.2")]);
    assert_eq!(a.status, 503);
    // ... and ip-restriction still sees 127.0.0.1.
    let a = get(&url(&gw, "/spoof-ipr"), &[("x-real-ip", "1.2.3.4")]);
    assert_eq!(a.status, 403);

    // A trusted peer: each claimed address has its own counter, and is logged.
    assert_eq!(
        get(&url(&gw, "/trusted?n=1"), &[("x-forwarded-for", "1.1.1.1")]).status,
        200
    );
    assert_eq!(
        get(&url(&gw, "/trusted?n=2"), &[("x-forwarded-for", "2.2.2.2")]).status,
        200
    );
    assert_eq!(
        get(&url(&gw, "/trusted?n=3"), &[("x-forwarded-for", "1.1.1.1")]).status,
        503
    );
    assert!(log_line_for(&log, "/trusted?n=2").starts_with("2.2.2.2 "));
}

#[test]
fn response_rewrite_documented_examples() {
    let origin = HttpOrigin::start(
        "{\"X-Amzn-Trace-Id\": \"Root=1-6500095d\", \"also\": \"X-Amzn-Trace-Id\"}",
    );
    let failing = HttpOrigin::start("not here");
    failing.set_status(404);
    let dir = tempfile::tempdir().unwrap();
    let headers_example = r#"{ response-rewrite: { body: "{\"code\":\"ok\",\"message\":\"new json body\"}", headers: { set: { X-Server-id: 3, X-Server-status: "on", X-Server-client-addr: "$remote_addr:$remote_port" } }, vars: [["status", "==", 200]] } }"#;
    let mut res = routes(
        origin.port,
        &format!(
            r#"
                headers /headers {headers_example}
                filters /filters {{ response-rewrite: {{ filters: [{{ regex: "X-Amzn-Trace-Id", scope: global, replace: "X-Amzn-Trace-Id-Replace" }}] }} }}
                b64 /b64 {{ response-rewrite: {{ body: "SGVsbG8gV29ybGQ=", body_base64: true }} }}
                auth /auth {{ key-auth: {{}}, response-rewrite: {{ status_code: 200, body: "{{\"code\": 200, \"msg\": \"success\"}}" }} }}
                add /add {{ response-rewrite: {{ headers: {{ add: ["Set-Cookie: a=1; Max-Age=60"], set: {{ X-Gone: "1", X-Kept: "$request_method $uri" }}, remove: ["X-Gone"] }} }} }}
            "#
        ),
    );
    res.push_str(&routes(failing.port, &format!("missing /missing {headers_example}"))[8..]);
    res.push_str(
        "consumers:\n  - username: jack\n    plugins:\n      key-auth: { key: jack-key }\n",
    );
    let gw = Gateway::start(dir.path(), &res);

    let a = get(&url(&gw, "/headers"), &[]);
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "{\"code\":\"ok\",\"message\":\"new json body\"}");
    assert_eq!(
        a.header("content-length"),
        Some(a.body.len().to_string().as_str())
    );
    assert_eq!(a.header("x-server-id"), Some("3"));
    assert_eq!(a.header("x-server-status"), Some("on"));
    assert!(a
        .header("x-server-client-addr")
        .unwrap()
        .starts_with("127.0.0.1:"));
    // vars: a 404 from the upstream is left alone.
    let a = get(&url(&gw, "/missing"), &[]);
    assert_eq!((a.status, a.body.as_str()), (404, "not here"));
    assert_eq!(a.header("x-server-id"), None);

    let a = get(&url(&gw, "/filters"), &[]);
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body,
        "{\"X-Amzn-Trace-Id-Replace\": \"Root=1-6500095d\", \"also\": \"X-Amzn-Trace-Id-Replace\"}"
    );
    assert_eq!(a.header("content-length"), None);
    assert_eq!(a.header("transfer-encoding"), Some("chunked"));

    let a = get(&url(&gw, "/b64"), &[]);
    assert_eq!((a.status, a.body.as_str()), (200, "Hello World"));
    assert_eq!(a.header("content-length"), Some("11"));

    // The response of key-auth is rewritten too (the header and body filters run for it).
    for key in [&[("apikey", "jack-key")][..], &[]] {
        let a = get(&url(&gw, "/auth"), key);
        assert_eq!(
            (a.status, a.body.as_str()),
            (200, "{\"code\": 200, \"msg\": \"success\"}")
        );
        assert_eq!(a.header("content-length"), Some("31"));
    }

    let a = get(&url(&gw, "/add"), &[]);
    assert_eq!(a.header("set-cookie"), Some("a=1; Max-Age=60"));
    assert_eq!(
        a.header("x-gone"),
        None,
        "remove runs after set, as in APISIX's code"
    );
    assert_eq!(a.header("x-kept"), Some("GET /add"));
    assert_eq!(a.body, origin.name);
    // HEAD: the new length, no body.
    let a = send("HEAD", &url(&gw, "/b64"), &[]);
    assert_eq!((a.status, a.body.as_str()), (200, ""));
}

/// An origin on a free port that answers every request with the raw bytes `response`
/// (status line, headers, blank line, body as framed by the headers), then closes.
fn raw_origin(response: Vec<u8>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(&response);
        }
    });
    port
}

#[test]
fn response_rewrite_of_chunked_and_compressed_upstream_bodies() {
    use std::io::Write;
    let chunked = raw_origin(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
            .to_vec(),
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"hello world, hello").unwrap();
    let gz = gz.finish().unwrap();
    let mut gzip_response = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nETag: \"v1\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    gzip_response.extend_from_slice(&gz);
    let gzipped = raw_origin(gzip_response);
    let zstd = raw_origin(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: zstd\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            .to_vec(),
    );
    let filter =
        r#"{ response-rewrite: { filters: [{ regex: hello, replace: bye, scope: global }] } }"#;
    let dir = tempfile::tempdir().unwrap();
    let mut res = routes(
        chunked,
        &format!("body /body {{ response-rewrite: {{ body: new }} }}\nfilter /filter {filter}"),
    );
    res.push_str(&routes(gzipped, &format!("gzip /gzip {filter}"))[8..]);
    res.push_str(&routes(zstd, &format!("zstd /zstd {filter}"))[8..]);
    let gw = Gateway::start(dir.path(), &res);

    let a = get(&url(&gw, "/body"), &[]);
    assert_eq!((a.status, a.body.as_str()), (200, "new"));
    assert_eq!(a.header("content-length"), Some("3"));
    assert_eq!(a.header("transfer-encoding"), None);
    let a = get(&url(&gw, "/filter"), &[]);
    assert_eq!(a.body, "bye world");
    // Decoded, rewritten, sent plain.
    let a = get(&url(&gw, "/gzip"), &[]);
    assert_eq!(a.body, "bye world, bye");
    assert_eq!(a.header("content-encoding"), None);
    assert_eq!(a.header("etag"), None);
    // An encoding Pylon cannot decode: left alone.
    let a = get(&url(&gw, "/zstd"), &[]);
    assert_eq!(a.body, "hello");
    assert_eq!(a.header("content-encoding"), Some("zstd"));
}

#[test]
fn redirect_documented_examples() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(
        dir.path(),
        "  plugin_attr: { redirect: { https_port: 9443 } }\n",
        &routes(
            origin.port,
            r#"
                1 /test/index.html { redirect: { uri: /test/default.html, ret_code: 301 } }
                2 /test { redirect: { uri: "$uri/index.html", ret_code: 301 } }
                3 /hello { redirect: { http_to_https: true } }
                4 /iresty/* { redirect: { regex_uri: ["^/iresty/(.*)/(.*)/(.*)", "/$1-$2-$3"] } }
                5 /q { redirect: { uri: "/new?from=q", append_query_string: true, encode_uri: true } }
            "#,
        ),
    );
    let a = get(&url(&gw, "/test/index.html"), &[]);
    assert_eq!(a.status, 301);
    assert_eq!(a.header("location"), Some("/test/default.html"));
    assert_eq!(a.header("content-type"), Some("text/html"));
    assert!(
        a.body
            .contains("<center><h1>301 Moved Permanently</h1></center>"),
        "{}",
        a.body
    );
    assert_eq!(
        get(&url(&gw, "/test"), &[]).header("location"),
        Some("/test/index.html")
    );

    let a = get(&url(&gw, "/hello?x=1"), &[]);
    assert_eq!(a.status, 301);
    assert_eq!(
        a.header("location"),
        Some("https://127.0.0.1:9443/hello?x=1")
    );
    assert_eq!(send("POST", &url(&gw, "/hello"), &[]).status, 308);
    // Already HTTPS behind a proxy that says so: proxied.
    let a = get(&url(&gw, "/hello"), &[("x-forwarded-proto", "https")]);
    assert_eq!((a.status, a.body.as_str()), (200, "origin"));

    let a = get(&url(&gw, "/iresty/a/b/c"), &[]);
    assert_eq!((a.status, a.header("location")), (302, Some("/a-b-c")));
    assert_eq!(get(&url(&gw, "/iresty/nomatch"), &[]).status, 200);

    let a = get(&url(&gw, "/q?a=1&b=2"), &[]);
    assert_eq!(a.header("location"), Some("/new?from=q&a=1&b=2"));
    assert!(origin.seen().iter().all(|s| !s.path.starts_with("/test")));
}

#[test]
fn cors_documented_examples_and_preflight() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let mut res = routes(
        origin.port,
        r#"
                list /anything { cors: { allow_origins: "http://sub.domain.com,http://sub2.domain.com", allow_methods: "GET,POST", allow_headers: "headr1,headr2", expose_headers: "ex-headr1,ex-headr2", max_age: 50, allow_credential: true } }
                regex /regex { cors: { allow_methods: "GET,POST", allow_headers: "headr1,headr2", expose_headers: "ex-headr1,ex-headr2", max_age: 50, allow_origins_by_regex: [".*\\.test.com$"] } }
                default /default { cors: {} }
                auth /auth { key-auth: {}, cors: { allow_origins: "**", allow_methods: "**", allow_headers: "**", expose_headers: "*" } }
            "#,
    );
    res.push_str(
        "consumers:\n  - username: jack\n    plugins:\n      key-auth: { key: jack-key }\n",
    );
    let gw = Gateway::start(dir.path(), &res);

    let a = send(
        "HEAD",
        &url(&gw, "/anything"),
        &[("origin", "http://sub2.domain.com")],
    );
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("http://sub2.domain.com")
    );
    assert_eq!(a.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(a.header("vary"), Some("Origin"));
    assert_eq!(a.header("access-control-allow-methods"), Some("GET,POST"));
    assert_eq!(a.header("access-control-max-age"), Some("50"));
    assert_eq!(
        a.header("access-control-expose-headers"),
        Some("ex-headr1,ex-headr2")
    );
    assert_eq!(
        a.header("access-control-allow-headers"),
        Some("headr1,headr2")
    );
    let a = send(
        "HEAD",
        &url(&gw, "/anything"),
        &[("origin", "http://sub3.domain.com")],
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.header("access-control-allow-origin"), None);
    assert_eq!(a.header("access-control-allow-methods"), None);
    assert_eq!(a.header("vary"), Some("Origin"));

    let a = get(&url(&gw, "/regex"), &[("origin", "http://a.test.com")]);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("http://a.test.com")
    );
    assert_eq!(
        a.header("access-control-allow-headers"),
        Some("headr1,headr2")
    );
    let a = get(&url(&gw, "/regex"), &[("origin", "http://a.test2.com")]);
    assert_eq!(a.header("access-control-allow-origin"), None);

    let a = get(&url(&gw, "/default"), &[]);
    assert_eq!(a.header("access-control-allow-origin"), Some("*"));
    assert_eq!(a.header("access-control-allow-methods"), Some("*"));
    assert_eq!(a.header("access-control-allow-headers"), Some("*"));
    assert_eq!(a.header("access-control-max-age"), Some("5"));
    assert_eq!(a.header("vary"), None);

    // Preflight: answered by the gateway, before authentication.
    let before = origin.seen().len();
    let a = send(
        "OPTIONS",
        &url(&gw, "/auth"),
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-token,content-type"),
        ],
    );
    assert_eq!((a.status, a.body.as_str()), (200, ""));
    assert_eq!(a.header("content-length"), Some("0"));
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        a.header("access-control-allow-headers"),
        Some("x-token,content-type")
    );
    assert_eq!(
        a.header("access-control-allow-methods"),
        Some("GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE")
    );
    assert_eq!(
        origin.seen().len(),
        before,
        "the preflight did not go upstream"
    );
    // A 401 from key-auth carries the CORS headers too.
    let a = get(&url(&gw, "/auth"), &[("origin", "https://sub.domain.com")]);
    assert_eq!(a.status, 401);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://sub.domain.com")
    );
    assert_eq!(a.header("access-control-expose-headers"), Some("*"));
}

#[test]
fn request_id_documented_examples() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        dir.path(),
        &routes(
            origin.port,
            r#"
                default /anything { request-id: { header_name: X-Request-Id, include_in_response: true, algorithm: uuid } }
                custom /custom { request-id: { header_name: X-Req-Identifier, include_in_response: true } }
                hidden /hidden { request-id: { header_name: X-Req-Identifier, include_in_response: false } }
                nano /nano { request-id: { algorithm: nanoid } }
            "#,
        ),
    );
    let a = get(&url(&gw, "/anything"), &[]);
    let id = a.header("x-request-id").unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(
        header(&origin.seen().pop().unwrap(), "x-request-id"),
        Some(id.as_str())
    );
    let again = get(&url(&gw, "/anything"), &[]);
    assert_ne!(again.header("x-request-id"), Some(id.as_str()));
    // An empty id is replaced; a sent one is kept.
    let a = get(&url(&gw, "/anything"), &[("x-request-id", "")]);
    assert_eq!(a.header("x-request-id").unwrap().len(), 36);
    let a = get(
        &url(&gw, "/anything"),
        &[("x-request-id", "some-custom-request-id")],
    );
    assert_eq!(a.header("x-request-id"), Some("some-custom-request-id"));
    assert_eq!(
        header(&origin.seen().pop().unwrap(), "x-request-id"),
        Some("some-custom-request-id")
    );

    let a = get(&url(&gw, "/custom"), &[]);
    let id = a.header("x-req-identifier").unwrap().to_string();
    assert_eq!(
        header(&origin.seen().pop().unwrap(), "x-req-identifier"),
        Some(id.as_str())
    );
    let a = get(&url(&gw, "/hidden"), &[]);
    assert_eq!(a.header("x-req-identifier"), None);
    assert_eq!(
        header(&origin.seen().pop().unwrap(), "x-req-identifier").map(str::len),
        Some(36)
    );
    assert_eq!(
        get(&url(&gw, "/nano"), &[])
            .header("x-request-id")
            .map(str::len),
        Some(21)
    );
}

#[test]
fn bad_traffic_plugin_configurations_are_refused_with_their_paths() {
    let dir = tempfile::tempdir().unwrap();
    let res = routes(
        1,
        r#"
                a /a { ip-restriction: { whitelist: ["10.0.0.1"], blacklist: ["10.0.0.2"] } }
                b /b { real-ip: { source: http_x_forwarded_for, trusted_addresses: ["10.0.0.300"] } }
                c /c { cors: { allow_credential: true } }
                d /d { cors: { allow_origins_by_metadata: ["key_1"] } }
                e /e { redirect: { ret_code: 301 } }
                f /f { response-rewrite: { vars: [["arg_name", "==", "json"]] } }
                g /g { request-id: { algorithm: snowflake } }
            "#,
    );
    let out = check(dir.path(), &res);
    assert!(!out.ok);
    let text = out.stdout + &out.stderr;
    for want in [
        "routes[0].plugins.ip-restriction: set exactly one of whitelist and blacklist",
        "routes[1].plugins.real-ip.trusted_addresses[0]: invalid ip address: 10.0.0.300",
        "routes[2].plugins.cors.allow_credential: you can not set '*' for other option when 'allow_credential' is true",
        "routes[3].plugins.cors.allow_origins_by_metadata: not supported by Pylon",
        "routes[4].plugins.redirect: set exactly one of uri, regex_uri and http_to_https",
        "routes[5].plugins.response-rewrite.vars[0]: Pylon supports only conditions on the response status",
        "routes[6].plugins.request-id.algorithm: unknown variant `snowflake`",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}
