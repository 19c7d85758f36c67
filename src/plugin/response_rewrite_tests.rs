//! Unit tests of `response-rewrite` (a file apart to keep the plugin's short).

use super::*;
use serde_json::json;

fn build(conf: Value) -> Result<Arc<dyn Plugin>, PluginError> {
    let consumers = Vec::new();
    compile(&conf, &Env::new(&consumers))
}

/// Runs the plugin over a response `status` with `body` (Content-Length set): the header
/// and the body the client would get.
fn run(p: &Arc<dyn Plugin>, status: u16, body: &str) -> (ResponseHeader, String) {
    let req = RequestHeader::build("GET", b"/get?x=1", None).unwrap();
    let mut cx = PluginCtx {
        client_ip: Some("10.1.2.3".parse().unwrap()),
        ..Default::default()
    };
    if p.phases().rewrite {
        p.rewrite(&req, &mut cx);
    }
    let mut resp = ResponseHeader::build(status, None).unwrap();
    resp.insert_header("content-length", body.len()).unwrap();
    resp.insert_header("etag", "\"abc\"").unwrap();
    resp.insert_header("x-old", "1").unwrap();
    p.response_header(&mut resp, &mut cx).unwrap();
    let mut out = String::new();
    let mid = body.len() / 2;
    for (piece, end) in [(&body[..mid], false), (&body[mid..], true)] {
        let mut b = Some(Bytes::copy_from_slice(piece.as_bytes()));
        if p.phases().response_body {
            p.response_body(&mut b, end, &mut cx);
        }
        if let Some(b) = b {
            out.push_str(std::str::from_utf8(&b).unwrap());
        }
    }
    (resp, out)
}

fn h<'a>(r: &'a ResponseHeader, name: &str) -> Vec<&'a str> {
    r.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[test]
fn body_headers_and_status_when_vars_hold() {
    let p = build(json!({
        "body": "{\"code\":\"ok\",\"message\":\"new json body\"}",
        "headers": {"set": {"X-Server-id": 3, "X-Server-status": "on", "X-Client": "$remote_addr"}},
        "vars": [["status", "==", 200]]
    }))
    .unwrap();
    let (r, body) = run(&p, 200, "upstream body");
    assert_eq!(body, "{\"code\":\"ok\",\"message\":\"new json body\"}");
    assert_eq!(h(&r, "content-length"), [body.len().to_string()]);
    assert!(h(&r, "etag").is_empty());
    assert_eq!(h(&r, "x-server-id"), ["3"]);
    assert_eq!(h(&r, "x-server-status"), ["on"]);
    assert_eq!(h(&r, "x-client"), ["10.1.2.3"]);
    // A 404 does not meet the condition: untouched.
    let (r, body) = run(&p, 404, "not found");
    assert_eq!(body, "not found");
    assert!(h(&r, "x-server-id").is_empty());
    assert_eq!(h(&r, "etag"), ["\"abc\""]);
}

#[test]
fn base64_body_and_status() {
    let p = build(json!({"body": "SGVsbG8gV29ybGQ=", "body_base64": true, "status_code": 201}))
        .unwrap();
    let (r, body) = run(&p, 200, "x");
    assert_eq!(body, "Hello World");
    assert_eq!(r.status.as_u16(), 201);
}

#[test]
fn add_set_remove_and_the_plain_map() {
    let p = build(
        json!({"headers": {"add": ["Set-Cookie: a=1", "X-Old: 2"], "remove": ["X-Old"],
                                     "set": {"X-New": "$http_x_none|$uri"}}}),
    )
    .unwrap();
    let (r, body) = run(&p, 200, "kept");
    assert_eq!(body, "kept");
    assert_eq!(h(&r, "set-cookie"), ["a=1"]);
    assert!(h(&r, "x-old").is_empty(), "remove runs after add");
    assert_eq!(h(&r, "x-new"), ["|/get"]);
    let p = build(json!({"headers": {"X-Old": "replaced", "X-Num": 1.5}})).unwrap();
    let (r, _) = run(&p, 200, "kept");
    assert_eq!(h(&r, "x-old"), ["replaced"]);
    assert_eq!(h(&r, "x-num"), ["1.5"]);
}

#[test]
fn filters_rewrite_the_body_chunked() {
    let p = build(
        json!({"filters": [{"regex": "X-Amzn-Trace-Id", "scope": "global",
                                      "replace": "X-Amzn-Trace-Id-Replace"}]}),
    )
    .unwrap();
    let (r, body) = run(&p, 200, "{\"X-Amzn-Trace-Id\": \"Root=1\"}");
    assert_eq!(body, "{\"X-Amzn-Trace-Id-Replace\": \"Root=1\"}");
    assert!(h(&r, "content-length").is_empty());
    assert_eq!(h(&r, "transfer-encoding"), ["chunked"]);
}

#[test]
fn bodiless_responses_keep_no_body() {
    let p = build(json!({"body": "new"})).unwrap();
    let (r, _) = run(&p, 204, "");
    assert!(h(&r, "content-length") == ["0"]);
    let (r, _) = run(&p, 200, "");
    assert_eq!(h(&r, "content-length"), ["0"]);
}

#[test]
fn status_conditions() {
    let p = build(json!({"status_code": 200, "vars": [["status", "in", [401, "403"]], ["status", "!", ">=", 500]]})).unwrap();
    assert_eq!(run(&p, 401, "x").0.status.as_u16(), 200);
    assert_eq!(run(&p, 403, "x").0.status.as_u16(), 200);
    assert_eq!(run(&p, 404, "x").0.status.as_u16(), 404);
    let p = build(json!({"status_code": 200, "vars": [["status", "~=", 200]]})).unwrap();
    assert_eq!(run(&p, 500, "x").0.status.as_u16(), 200);
}

#[test]
fn bad_configurations_are_named() {
    for (conf, path) in [
        (
            json!({"body": "a", "filters": [{"regex": "a", "replace": "b"}]}),
            "filters",
        ),
        (json!({"body_base64": true, "body": "!!"}), "body"),
        (json!({"body_base64": true}), "body"),
        (json!({"status_code": 600}), "status_code"),
        (json!({"headers": {"add": ["no colon"]}}), "headers.add[0]"),
        (json!({"headers": {"add": ["X: a:b"]}}), "headers.add[0]"),
        (json!({"headers": {"set": {}}}), "headers.set"),
        (json!({"headers": {"set": {"X": "$nope"}}}), "headers.set.X"),
        (json!({"headers": {"X": true}}), "headers.X"),
        (json!({"vars": [["http_x", "==", "a"]]}), "vars[0]"),
        (json!({"vars": [["status", "~~", "2.."]]}), "vars[0]"),
        (
            json!({"filters": [{"regex": "(", "replace": "b"}]}),
            "filters[0].regex",
        ),
        (
            json!({"filters": [{"regex": "a", "replace": "b", "options": "jD"}]}),
            "filters[0].options",
        ),
        (
            json!({"filters": [{"regex": "a", "replace": "b", "scope": "all"}]}),
            "filters[0].scope",
        ),
        (json!({"max_resp_body_size": 0}), "max_resp_body_size"),
    ] {
        assert_eq!(build(conf.clone()).unwrap_err().path, path, "{conf}");
    }
}
