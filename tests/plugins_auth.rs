//! Authentication plugins through a running gateway: `basic-auth`, `jwt-auth` and
//! `consumer-restriction` with APISIX's documented examples (status, headers, body, what
//! the upstream saw), and the promise that credentials never reach the gateway's logs.
//!
//! JWTs are minted with `jsonwebtoken` (the crate the gateway verifies with) from keys
//! OpenSSL makes at test time; APISIX's documented sample tokens are used as they are.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::ops::{write_static, Pylon};
use common::origins::HttpOrigin;
use common::plugins::{get, send, Answer};
use common::{check, free_port};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::{json, Value};

/// APISIX's documented jwt-auth credential and sample token (`{"key":"jack-key",
/// "nbf":1729132271}`, HS256).
const DOC_SECRET: &str = "jack-hs256-secret-that-is-very-long";
const DOC_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJrZXkiOiJqYWNrLWtleSIsIm5iZiI6MTcyOTEzMjI3MX0.UEPXy5jpid624T1XpfjM0PLY73LZPjV3Qt8yZ92kVuU";
/// APISIX's documented token with a damaged signature.
const DOC_BAD_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3MjY2NDk2NDAsImtleSI6ImphY2sta2V5In0.kdhumNWrZFxjU_random_random";

/// Starts a gateway with Pylon's own logging at debug level, the access log on standard
/// output (kept in `pylon.out`) and the error log in `pylon.log`.
fn gateway(dir: &std::path::Path, resources: &str) -> Pylon {
    let port = free_port();
    let conf = write_static(dir, port, "", resources);
    Pylon::spawn(
        dir,
        &conf,
        port,
        "pylon",
        &[],
        &[("RUST_LOG", "info,pylon=debug")],
    )
}

/// Asserts that no `secret` appears in the gateway's error log or access log, and that
/// the error log holds `logged` (the plugins log their refusals at debug level).
fn assert_not_logged(gw: &Pylon, logged: &str, secrets: &[&str]) {
    assert!(
        gw.access_log_caught_up(),
        "the access log recorded the requests"
    );
    let (log, access) = (gw.log(), gw.stdout());
    assert!(
        log.contains(logged),
        "{logged:?} not in the error log:\n{log}"
    );
    for s in secrets {
        assert!(!log.contains(s), "{s:?} in the error log:\n{log}");
        assert!(!access.contains(s), "{s:?} in the access log:\n{access}");
    }
}

fn message(a: &Answer) -> Value {
    serde_json::from_str(&a.body).unwrap_or_else(|_| panic!("not JSON: {:?}", a.body))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn upstream(origin: &HttpOrigin) -> String {
    format!(
        "upstream: {{ nodes: {{\"127.0.0.1:{}\": 1}} }}",
        origin.port
    )
}

#[test]
fn basic_auth_documented_examples() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(&origin);
    let gw = gateway(
        dir.path(),
        &format!(
            r#"consumers:
  - username: johndoe
    plugins:
      basic-auth: {{ username: johndoe, password: john-key }}
routes:
  - id: basic-auth-route
    uri: /anything
    plugins:
      basic-auth: {{}}
    {up}
  - id: hidden
    uri: /hidden
    plugins:
      basic-auth: {{ hide_credentials: true, realm: staff }}
    {up}
#END
"#
        ),
    );
    // `curl -u johndoe:john-key`: the credentials and the consumer reach the upstream.
    let basic = "Basic am9obmRvZTpqb2huLWtleQ==";
    let a = get(
        &gw.url("/anything"),
        &[("authorization", basic), ("x-consumer-username", "forged")],
    );
    assert_eq!((a.status, a.body.as_str()), (200, "origin"));
    let seen = origin.seen().pop().unwrap();
    assert_eq!(seen.headers["authorization"], basic);
    assert_eq!(seen.headers["x-consumer-username"], "johndoe");

    // `curl -u johndoe:invalid-password`.
    let wrong = "Basic am9obmRvZTppbnZhbGlkLXBhc3N3b3Jk";
    let a = get(&gw.url("/anything"), &[("authorization", wrong)]);
    assert_eq!(a.status, 401);
    assert_eq!(
        message(&a),
        json!({"message": "Invalid user authorization"})
    );
    assert_eq!(a.header("www-authenticate"), Some("Basic realm=\"basic\""));
    // No credentials.
    let a = get(&gw.url("/anything"), &[]);
    assert_eq!(a.status, 401);
    assert_eq!(
        a.body,
        "{\"message\":\"Missing authorization in request\"}\n"
    );
    assert_eq!(a.header("www-authenticate"), Some("Basic realm=\"basic\""));
    let a = get(&gw.url("/anything"), &[("authorization", "Basic !!!")]);
    assert_eq!(
        (a.status, message(&a)),
        (401, json!({"message": "Invalid authorization in request"}))
    );
    assert_eq!(
        origin.seen().len(),
        1,
        "no failed request reached the upstream"
    );

    // `hide_credentials: true`: the upstream no longer sees Authorization.
    let a = get(&gw.url("/hidden"), &[("authorization", basic)]);
    assert_eq!(a.status, 200);
    let seen = origin.seen().pop().unwrap();
    assert!(!seen.headers.contains_key("authorization"), "{seen:?}");
    assert_eq!(seen.headers["x-consumer-username"], "johndoe");
    let a = get(&gw.url("/hidden"), &[]);
    assert_eq!(a.header("www-authenticate"), Some("Basic realm=\"staff\""));

    assert_not_logged(
        &gw,
        "basic-auth: 401 (Invalid user authorization)",
        &[
            "john-key",
            "am9obmRvZTpqb2huLWtleQ",
            "invalid-password",
            "am9obmRvZTppbnZhbGlkLXBhc3N3b3Jk",
        ],
    );
}

/// A fresh key pair: (private PEM for `jsonwebtoken`, public PEM for the consumer).
fn key_pair(alg: Algorithm) -> (EncodingKey, String) {
    let key = match alg {
        Algorithm::RS256 => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        _ => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
            PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
        }
    };
    let private = key.private_key_to_pem_pkcs8().unwrap();
    let encoding = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&private).unwrap(),
        _ => EncodingKey::from_ec_pem(&private).unwrap(),
    };
    let public = String::from_utf8(key.public_key_to_pem().unwrap()).unwrap();
    (encoding, public)
}

fn mint(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    encode(&Header::new(alg), &claims, key).unwrap()
}

/// YAML block scalar lines for a PEM, indented by `n` spaces.
fn indent(pem: &str, n: usize) -> String {
    pem.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(n)))
        .collect()
}

#[test]
fn jwt_auth_documented_examples_and_minted_tokens() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(&origin);
    let (rsa_key, rsa_public) = key_pair(Algorithm::RS256);
    let (ec_key, ec_public) = key_pair(Algorithm::ES256);
    let gw = gateway(
        dir.path(),
        &format!(
            r#"consumers:
  - username: jack
    plugins:
      jwt-auth: {{ key: jack-key, secret: {DOC_SECRET} }}
  - username: rosa
    plugins:
      jwt-auth:
        key: rosa-key
        algorithm: RS256
        public_key: |
{rsa}  - username: eve
    plugins:
      jwt-auth:
        key: eve-key
        algorithm: ES256
        lifetime_grace_period: 30
        public_key: |
{ec}routes:
  - id: jwt-route
    uri: /headers
    plugins:
      jwt-auth: {{}}
    {up}
  - id: custom
    uri: /get
    plugins:
      jwt-auth: {{ header: jwt-auth-header, query: jwt-query, cookie: jwt-cookie }}
    {up}
  - id: hidden
    uri: /hidden
    plugins:
      jwt-auth: {{ hide_credentials: true }}
    {up}
#END
"#,
            rsa = indent(&rsa_public, 10),
            ec = indent(&ec_public, 10)
        ),
    );
    let as_consumer = |path: &str, headers: &[(&str, &str)], who: &str| {
        let a = get(&gw.url(path), headers);
        assert_eq!(
            (a.status, a.body.as_str()),
            (200, "origin"),
            "{path} {headers:?}"
        );
        let seen = origin.seen().pop().unwrap();
        assert_eq!(seen.headers["x-consumer-username"], who);
        seen
    };
    let denied = |path: &str, headers: &[(&str, &str)], msg: &str| {
        let a = get(&gw.url(path), headers);
        assert_eq!(a.status, 401, "{path} {headers:?}");
        assert_eq!(message(&a), json!({ "message": msg }));
        assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"jwt\""));
    };

    // APISIX's "Use JWT for Consumer Authentication": the token in Authorization.
    let seen = as_consumer("/headers", &[("authorization", DOC_TOKEN)], "jack");
    assert_eq!(seen.headers["authorization"], DOC_TOKEN);
    denied(
        "/headers",
        &[("authorization", DOC_BAD_TOKEN)],
        "failed to verify jwt",
    );
    denied("/headers", &[], "Missing JWT token in request");
    denied(
        "/headers",
        &[("authorization", "Bearer x.y")],
        "JWT token invalid",
    );
    let bearer = format!("Bearer {DOC_TOKEN}");
    as_consumer("/headers", &[("authorization", &bearer)], "jack");

    // "Carry JWT in Request Header, Query String, or Cookie".
    as_consumer("/get", &[("jwt-auth-header", DOC_TOKEN)], "jack");
    let seen = as_consumer(&format!("/get?jwt-query={DOC_TOKEN}"), &[], "jack");
    assert_eq!(seen.path, format!("/get?jwt-query={DOC_TOKEN}"));
    let cookie = format!("jwt-cookie={DOC_TOKEN}");
    as_consumer("/get", &[("cookie", &cookie)], "jack");
    denied(
        "/get",
        &[("authorization", DOC_TOKEN)],
        "Missing JWT token in request",
    );

    // Tokens minted now: HS256, RS256 and ES256, with exp/nbf checked.
    let hs = EncodingKey::from_secret(DOC_SECRET.as_bytes()).unwrap();
    let fresh = json!({"key": "jack-key", "exp": now() + 60});
    let t = mint(Algorithm::HS256, &hs, fresh);
    as_consumer("/headers", &[("authorization", &t)], "jack");
    let t = mint(
        Algorithm::HS256,
        &hs,
        json!({"key": "jack-key", "exp": now() - 5}),
    );
    denied("/headers", &[("authorization", &t)], "failed to verify jwt");
    let t = mint(
        Algorithm::HS256,
        &hs,
        json!({"key": "jack-key", "nbf": now() + 60}),
    );
    denied("/headers", &[("authorization", &t)], "failed to verify jwt");
    let t = mint(Algorithm::HS256, &hs, json!({"key": "nobody"}));
    denied(
        "/headers",
        &[("authorization", &t)],
        "Invalid user key in JWT token",
    );
    let t = mint(Algorithm::HS256, &hs, json!({"sub": "jack"}));
    denied(
        "/headers",
        &[("authorization", &t)],
        "missing user key in JWT token",
    );

    let rs = mint(
        Algorithm::RS256,
        &rsa_key,
        json!({"key": "rosa-key", "exp": now() + 60}),
    );
    as_consumer("/headers", &[("authorization", &rs)], "rosa");
    // Rosa's key signing for Eve's credential: not Eve's key, not Eve's algorithm.
    let t = mint(Algorithm::RS256, &rsa_key, json!({"key": "eve-key"}));
    denied("/headers", &[("authorization", &t)], "failed to verify jwt");
    // HS256 "signed" with Rosa's public key (algorithm confusion) is refused.
    let confused = EncodingKey::from_secret(rsa_public.as_bytes()).unwrap();
    let t = mint(Algorithm::HS256, &confused, json!({"key": "rosa-key"}));
    denied("/headers", &[("authorization", &t)], "failed to verify jwt");

    // Eve's 30 s grace period admits a token that expired 10 s ago, not one 60 s ago.
    let es = mint(
        Algorithm::ES256,
        &ec_key,
        json!({"key": "eve-key", "exp": now() - 10}),
    );
    as_consumer("/headers", &[("authorization", &es)], "eve");
    let t = mint(
        Algorithm::ES256,
        &ec_key,
        json!({"key": "eve-key", "exp": now() - 60}),
    );
    denied("/headers", &[("authorization", &t)], "failed to verify jwt");

    // hide_credentials: the token leaves the header, the query and the cookie.
    let seen = as_consumer("/hidden", &[("authorization", &rs)], "rosa");
    assert!(!seen.headers.contains_key("authorization"));
    let seen = as_consumer(&format!("/hidden?a=1&jwt={es}&b=2"), &[], "eve");
    assert_eq!(seen.path, "/hidden?a=1&b=2");
    let cookie = format!("theme=dark; jwt={DOC_TOKEN}; lang=en");
    let seen = as_consumer("/hidden", &[("cookie", &cookie)], "jack");
    assert_eq!(seen.headers["cookie"], "theme=dark; lang=en");

    // Tokens sent in headers and cookies are in neither log. (A token in a query string is
    // part of the request line that access logs record, as nginx's does.)
    assert_not_logged(
        &gw,
        "jwt-auth: 401 (failed to verify jwt)",
        &[DOC_SECRET, &rs[rs.len() - 40..]],
    );
    assert!(!gw.log().contains(&es[es.len() - 40..]) && !gw.log().contains(&DOC_TOKEN[40..]));
}

#[test]
fn consumer_restriction_documented_examples() {
    let origin = HttpOrigin::start("origin");
    let dir = tempfile::tempdir().unwrap();
    let up = upstream(&origin);
    let gw = gateway(
        dir.path(),
        &format!(
            r#"consumers:
  - username: JohnDoe
    plugins:
      key-auth: {{ key: john-key }}
  - username: JaneDoe
    plugins:
      key-auth: {{ key: jane-key }}
      basic-auth: {{ username: jane, password: jane-password }}
  - username: anonymous
routes:
  - id: consumer-restricted-route
    uri: /get
    plugins:
      key-auth: {{}}
      consumer-restriction: {{ whitelist: [JaneDoe] }}
    {up}
  - id: methods
    uri: /anything
    plugins:
      key-auth: {{}}
      consumer-restriction:
        allowed_by_methods:
          - {{ user: JohnDoe, methods: [GET] }}
          - {{ user: JaneDoe, methods: [POST] }}
    {up}
  - id: blacklisted
    uri: /basic
    plugins:
      basic-auth: {{ anonymous_consumer: anonymous }}
      consumer-restriction:
        blacklist: [anonymous]
        rejected_code: 401
        rejected_msg: Sign in first.
    {up}
  - id: unauthenticated
    uri: /open
    plugins:
      consumer-restriction: {{ whitelist: [JaneDoe] }}
    {up}
  - id: by-route
    uri: /by-route
    plugins:
      consumer-restriction: {{ type: route_id, blacklist: [by-route] }}
    {up}
#END
"#
        ),
    );
    // "Restrict Access by Consumers".
    let a = get(&gw.url("/get"), &[("apikey", "john-key")]);
    assert_eq!(a.status, 403);
    assert_eq!(
        a.body,
        "{\"message\":\"The consumer_name is forbidden.\"}\n"
    );
    let a = get(&gw.url("/get"), &[("apikey", "jane-key")]);
    assert_eq!(a.status, 200);
    assert_eq!(
        origin.seen().pop().unwrap().headers["x-consumer-username"],
        "JaneDoe"
    );

    // "Restrict Access by Consumers and HTTP Methods".
    let a = send("POST", &gw.url("/anything"), &[("apikey", "john-key")]);
    assert_eq!(
        (a.status, message(&a)),
        (403, json!({"message": "The consumer_name is forbidden."}))
    );
    assert_eq!(
        send("GET", &gw.url("/anything"), &[("apikey", "john-key")]).status,
        200
    );
    assert_eq!(
        send("POST", &gw.url("/anything"), &[("apikey", "jane-key")]).status,
        200
    );
    assert_eq!(
        send("GET", &gw.url("/anything"), &[("apikey", "jane-key")]).status,
        403
    );

    // basic-auth's anonymous consumer, kept out by the blacklist with a custom answer.
    let a = get(&gw.url("/basic"), &[]);
    assert_eq!(
        (a.status, message(&a)),
        (401, json!({"message": "Sign in first."}))
    );
    let jane = "Basic amFuZTpqYW5lLXBhc3N3b3Jk";
    assert_eq!(
        get(&gw.url("/basic"), &[("authorization", jane)]).status,
        200
    );

    // No authentication plugin: no consumer to check.
    let a = get(&gw.url("/open"), &[("apikey", "jane-key")]);
    assert_eq!(a.status, 401);
    assert_eq!(
        message(&a),
        json!({"message": "The request is rejected, please check the consumer_name for this request"})
    );
    let a = get(&gw.url("/by-route"), &[]);
    assert_eq!(
        (a.status, message(&a)),
        (403, json!({"message": "The route_id is forbidden."}))
    );
    assert_not_logged(
        &gw,
        "",
        &[
            "john-key",
            "jane-key",
            "jane-password",
            "amFuZTpqYW5lLXBhc3N3b3Jk",
        ],
    );
}

#[test]
fn bad_credentials_are_refused_with_their_path_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let secret_key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let private = String::from_utf8(secret_key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let out = check(
        dir.path(),
        &format!(
            r#"consumers:
  - username: jack
    plugins:
      jwt-auth:
        key: jack-key
        algorithm: ES256
        public_key: |
{}  - username: jill
    plugins:
      jwt-auth: {{ key: jill-key, algorithm: HS256 }}
      basic-auth: {{ username: jill }}
  - username: joe
    plugins:
      basic-auth: {{ username: joe, password: 31415926 }}
routes:
  - id: "1"
    uri: /a
    plugins:
      consumer-restriction: {{ type: consumer_group_id, whitelist: [g] }}
      jwt-auth: {{ claims_to_verify: [iat] }}
    upstream: {{ nodes: {{"127.0.0.1:1": 1}} }}
#END
"#,
            indent(&private, 10)
        ),
    );
    assert!(!out.ok);
    let text = format!("{}{}", out.stdout, out.stderr);
    for path in [
        "consumers[0].plugins.jwt-auth.public_key",
        "consumers[1].plugins.jwt-auth.secret",
        "consumers[1].plugins.basic-auth",
        "consumers[2].plugins.basic-auth.password",
        "routes[0].plugins.consumer-restriction.type",
        "routes[0].plugins.jwt-auth.claims_to_verify[0]",
    ] {
        assert!(text.contains(path), "{path} missing from:\n{text}");
    }
    assert!(!text.contains("31415926"), "a password was echoed:\n{text}");
    let body_line = private.lines().nth(1).unwrap();
    assert!(
        !text.contains(body_line),
        "the private key was echoed:\n{text}"
    );
}
