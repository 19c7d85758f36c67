//! The access log through the real `pylon` binary: fields of a line, stdout, `enabled: false`,
//! and reopening on SIGUSR1 (logrotate).

mod common;

use std::path::Path;
use std::time::Duration;

use common::ops::*;
use common::*;

const LIMIT: Duration = Duration::from_secs(5);

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Splits a line into its fields: bare words, `[...]` and `"..."` each count as one.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (field, next) = match rest.as_bytes()[0] {
            b'"' => {
                let end = rest[1..].find('"').unwrap() + 1;
                (&rest[1..end], &rest[end + 1..])
            }
            b'[' => {
                let end = rest.find(']').unwrap();
                (&rest[1..end], &rest[end + 1..])
            }
            _ => match rest.find(' ') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            },
        };
        out.push(field.to_string());
        rest = next.trim_start();
    }
    out
}

#[test]
fn line_has_combined_fields_route_node_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test.com");
    let origin = Origin::start(&pki, true);
    let log = dir.path().join("access.log");
    let gw = Pylon::start(
        dir.path(),
        &format!("  access_log: {{ path: {} }}\n", log.display()),
        &founding_resources(origin.port, FOUNDING_TLS, &pki).replace("uri: /*", "uri: /api/*"),
    );
    let client = reqwest::blocking::Client::new();
    let resp = client
        .get(gw.url("/hello?x=1"))
        .header("user-agent", "tester/1.0 (\"quoted\")")
        .header("referer", "http://example.com/page")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(gw.get("/nothing-here").0, 404);
    assert!(
        wait_until(LIMIT, || lines(&log).len() >= 2),
        "{:?}",
        lines(&log)
    );

    let all = lines(&log);
    let f = fields(&all[0]);
    // $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    // "$http_referer" "$http_user_agent" "$route_id" $upstream_addr $upstream_status
    // $request_time $upstream_response_time
    assert_eq!(f.len(), 14, "{f:?}");
    assert_eq!(f[0], "127.0.0.1");
    assert_eq!((f[1].as_str(), f[2].as_str()), ("-", "-"));
    let time = chrono::DateTime::parse_from_str(&f[3], "%d/%b/%Y:%H:%M:%S %z").unwrap();
    assert!((chrono::Utc::now().timestamp() - time.timestamp()).abs() < 60);
    assert_eq!(f[4], "GET /hello?x=1 HTTP/1.1");
    assert_eq!(f[5], "200");
    assert_eq!(f[6], "11"); // "Hello API7!"
    assert_eq!(f[7], "http://example.com/page");
    assert_eq!(f[8], r"tester/1.0 (\x22quoted\x22)");
    assert_eq!(f[9], "hello");
    assert_eq!(f[10], format!("127.0.0.1:{}", origin.port));
    assert_eq!(f[11], "200");
    let request_time: f64 = f[12].parse().unwrap_or(-1.0);
    assert!(request_time >= 0.0, "{f:?}");
    let upstream_time: f64 = f[13].parse().unwrap_or(-1.0);
    assert!(
        upstream_time >= 0.0 && upstream_time <= request_time,
        "{f:?}"
    );

    // No route: no route id, node, upstream status or upstream time.
    let f = fields(&all[1]);
    assert_eq!(f[4], "GET /nothing-here HTTP/1.1");
    assert_eq!(f[5], "404");
    assert_eq!(&f[9..12], &["-", "-", "-"]);
    assert_eq!(f[13], "-");
}

/// The splitter used above.
#[test]
fn field_splitter() {
    let f = fields(r#"1.2.3.4 - - [t z] "GET / HTTP/1.1" 200 5 "-" "ua" "r" n 200 0.001 0.002"#);
    assert_eq!(f.len(), 14);
    assert_eq!(f[3], "t z");
}

#[test]
fn stdout_by_default_and_nothing_when_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let routes = plain_routes(origin.port, &[("a", "/a")], true);
    let gw = Pylon::start(dir.path(), "", &routes);
    assert_eq!(gw.get("/a").0, 200);
    assert!(
        wait_until(LIMIT, || gw.stdout().contains("\"GET /a HTTP/1.1\" 200")),
        "stdout: {:?}",
        gw.stdout()
    );

    let off = tempfile::tempdir().unwrap();
    let log = off.path().join("access.log");
    let mut gw = Pylon::start(
        off.path(),
        &format!(
            "  access_log: {{ path: {}, enabled: false }}\n",
            log.display()
        ),
        &routes,
    );
    assert_eq!(gw.get("/a").0, 200);
    // A graceful exit flushes whatever was queued: there must be nothing.
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit(LIMIT).is_some(), "{}", gw.log());
    assert!(!log.exists(), "access log written while disabled");
    assert_eq!(gw.stdout(), "");
}

#[test]
fn sigusr1_reopens_the_file_for_logrotate() {
    let dir = tempfile::tempdir().unwrap();
    let origin = PlainOrigin::start();
    let log = dir.path().join("access.log");
    let gw = Pylon::start(
        dir.path(),
        // Relative: resolved against the static file's folder.
        "  access_log: { path: access.log }\n",
        &plain_routes(origin.port, &[("a", "/*")], true),
    );
    assert_eq!(gw.get("/before").0, 200);
    assert!(wait_until(LIMIT, || lines(&log).len() == 1));

    // What logrotate does: move the file away, then signal.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal(libc::SIGUSR1);
    assert!(gw.wait_log("access log reopened", LIMIT), "{}", gw.log());
    assert_eq!(gw.get("/after").0, 200);
    assert!(wait_until(LIMIT, || lines(&log).len() == 1), "{}", gw.log());

    let old = lines(&rotated);
    assert_eq!(old.len(), 1);
    assert!(old[0].contains("GET /before"));
    assert!(lines(&log)[0].contains("GET /after"));
}
