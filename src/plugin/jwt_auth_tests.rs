//! Unit tests of `jwt-auth`: tokens minted with `jsonwebtoken`, keys made by OpenSSL at
//! run time, and the tokens of APISIX's documentation.

use super::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use serde_json::json;
use std::collections::BTreeMap;

/// APISIX's documented HS256 credential and token (`{"key":"jack-key","nbf":1729132271}`).
pub const DOC_SECRET: &str = "jack-hs256-secret-that-is-very-long";
pub const DOC_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJrZXkiOiJqYWNrLWtleSIsIm5iZiI6MTcyOTEzMjI3MX0.UEPXy5jpid624T1XpfjM0PLY73LZPjV3Qt8yZ92kVuU";

fn consumers(extra: Vec<(&str, Value)>) -> Vec<(Arc<Consumer>, BTreeMap<String, Value>)> {
    let mut list = vec![
        (
            "jack".to_string(),
            BTreeMap::from([(
                "jwt-auth".to_string(),
                json!({"key": "jack-key", "secret": DOC_SECRET}),
            )]),
        ),
        ("anonymous".to_string(), BTreeMap::new()),
    ];
    for (name, cred) in extra {
        list.push((
            name.to_string(),
            BTreeMap::from([("jwt-auth".to_string(), cred)]),
        ));
    }
    super::super::registry::consumers(list)
}

fn plugin_with(conf: Value, extra: Vec<(&str, Value)>) -> Arc<dyn Plugin> {
    compile(&conf, &Env::new(&consumers(extra))).unwrap()
}

fn plugin(conf: Value) -> Arc<dyn Plugin> {
    plugin_with(conf, Vec::new())
}

fn request(uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
    for (k, v) in headers {
        req.append_header(k.to_string(), *v).unwrap();
    }
    req
}

/// The consumer a request authenticates as, or the 401 message.
fn outcome(p: &Arc<dyn Plugin>, uri: &str, headers: &[(&str, &str)]) -> Result<String, String> {
    let mut cx = PluginCtx::default();
    match p.rewrite(&request(uri, headers), &mut cx) {
        Flow::Continue => Ok(cx.consumer.unwrap().username.clone()),
        Flow::Reply(r) => {
            assert_eq!(r.status, 401);
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            Err(body["message"].as_str().unwrap().to_string())
        }
    }
}

fn hs(alg: Algorithm, secret: &[u8], claims: Value) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn apisix_documented_token_authenticates_from_header_query_or_cookie() {
    let p = plugin(json!({}));
    let jack = Ok("jack".to_string());
    assert_eq!(outcome(&p, "/", &[("authorization", DOC_TOKEN)]), jack);
    assert_eq!(
        outcome(&p, "/", &[("Authorization", &bearer(DOC_TOKEN))]),
        jack
    );
    assert_eq!(outcome(&p, &format!("/?a=1&jwt={DOC_TOKEN}"), &[]), jack);
    assert_eq!(
        outcome(&p, "/", &[("cookie", &format!("x=1; jwt={DOC_TOKEN}"))]),
        jack
    );
    // The header wins over the query argument, which wins over the cookie.
    let q = format!("/?jwt={DOC_TOKEN}");
    assert_eq!(
        outcome(&p, &q, &[("authorization", "nope")]),
        Err(INVALID.into())
    );
    assert_eq!(
        outcome(&p, "/?jwt=nope", &[("cookie", &format!("jwt={DOC_TOKEN}"))]),
        Err(INVALID.into())
    );
    let p =
        plugin(json!({"header": "jwt-auth-header", "query": "jwt-query", "cookie": "jwt-cookie"}));
    assert_eq!(outcome(&p, "/", &[("jwt-auth-header", DOC_TOKEN)]), jack);
    assert_eq!(outcome(&p, &format!("/?jwt-query={DOC_TOKEN}"), &[]), jack);
    let c = format!("jwt-cookie={DOC_TOKEN}");
    assert_eq!(outcome(&p, "/", &[("cookie", &c)]), jack);
    assert_eq!(
        outcome(&p, "/", &[("authorization", DOC_TOKEN)]),
        Err(MISSING.into())
    );
}

#[test]
fn failures_get_apisix_messages() {
    let p = plugin(json!({}));
    assert_eq!(outcome(&p, "/", &[]), Err(MISSING.into()));
    for garbage in ["", "abc", "a.b.c", "a.b", "e30.e30.x.y", "W10.e30.x"] {
        assert_eq!(
            outcome(&p, "/", &[("authorization", garbage)]),
            Err(INVALID.into()),
            "{garbage}"
        );
    }
    let secret = DOC_SECRET.as_bytes();
    let t = hs(Algorithm::HS256, secret, json!({"sub": "jack"}));
    assert_eq!(
        outcome(&p, "/", &[("authorization", &t)]),
        Err(NO_KEY.into())
    );
    let t = hs(Algorithm::HS256, secret, json!({"key": "ghost"}));
    assert_eq!(
        outcome(&p, "/", &[("authorization", &t)]),
        Err(UNKNOWN_KEY.into())
    );
    let t = hs(Algorithm::HS256, secret, json!({"key": 5}));
    assert_eq!(
        outcome(&p, "/", &[("authorization", &t)]),
        Err(UNKNOWN_KEY.into())
    );
    for t in [
        // Another secret.
        hs(
            Algorithm::HS256,
            b"another-secret",
            json!({"key": "jack-key"}),
        ),
        // Another algorithm than the consumer's, even with the right secret.
        hs(Algorithm::HS512, secret, json!({"key": "jack-key"})),
        // Expired; not yet valid.
        hs(
            Algorithm::HS256,
            secret,
            json!({"key": "jack-key", "exp": now() - 1}),
        ),
        hs(
            Algorithm::HS256,
            secret,
            json!({"key": "jack-key", "nbf": now() + 60}),
        ),
        // A signature cut short.
        DOC_TOKEN[..DOC_TOKEN.len() - 3].to_string(),
        // An empty signature.
        format!("{}.", &DOC_TOKEN[..DOC_TOKEN.rfind('.').unwrap()]),
    ] {
        assert_eq!(
            outcome(&p, "/", &[("authorization", &t)]),
            Err(FAILED.into()),
            "{t}"
        );
    }
    let mut cx = PluginCtx::default();
    let Flow::Reply(r) = p.rewrite(&request("/", &[]), &mut cx) else {
        panic!("let through")
    };
    assert_eq!(
        r.headers,
        vec![
            (
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json")
            ),
            (
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"jwt\"")
            )
        ]
    );
}

#[test]
fn claims_are_checked_as_apisix_does() {
    let t = 1_000_000;
    let claims = |v: Value| v.as_object().unwrap().clone();
    let holds = |v: Value, listed: &[Claim], grace| claims_hold(&claims(v), listed, t, grace);
    assert!(holds(json!({}), &[], 0));
    assert!(holds(json!({"exp": t + 1, "nbf": t - 1}), &[], 0));
    assert!(!holds(json!({"exp": t}), &[], 0), "exp must be after now");
    assert!(!holds(json!({"nbf": t}), &[], 0), "nbf must be before now");
    assert!(holds(json!({"exp": t - 5}), &[], 5 + 1));
    assert!(!holds(json!({"exp": t - 5}), &[], 5));
    assert!(holds(json!({"nbf": t + 5}), &[], 6));
    assert!(holds(json!({"exp": t as f64 + 0.5}), &[], 0));
    assert!(!holds(json!({"exp": "never"}), &[], 0));
    assert!(!holds(json!({"exp": null}), &[], 0));
    // Listed claims are required; unlisted ones are then not checked.
    assert!(!holds(json!({}), &[Claim::Exp], 0));
    assert!(holds(
        json!({"exp": t + 1, "nbf": t + 100}),
        &[Claim::Exp],
        0
    ));
}

#[test]
fn the_grace_period_and_key_claim_name_come_from_configuration() {
    let secret = DOC_SECRET.as_bytes();
    let cred = json!({"key": "late-key", "secret": "s3cret", "lifetime_grace_period": 60});
    let p = plugin_with(json!({"key_claim_name": "iss"}), vec![("late", cred)]);
    let t = hs(
        Algorithm::HS256,
        b"s3cret",
        json!({"iss": "late-key", "exp": now() - 10}),
    );
    assert_eq!(
        outcome(&p, "/", &[("authorization", &t)]),
        Ok("late".into())
    );
    let t = hs(Algorithm::HS256, secret, json!({"key": "jack-key"}));
    assert_eq!(
        outcome(&p, "/", &[("authorization", &t)]),
        Err(NO_KEY.into())
    );
}

#[test]
fn base64_secrets_are_decoded() {
    let cred = json!({"key": "b64", "secret": "c2VjcmV0LWJ5dGVz", "base64_secret": true});
    let p = plugin_with(json!({}), vec![("b", cred)]);
    let t = hs(Algorithm::HS256, b"secret-bytes", json!({"key": "b64"}));
    assert_eq!(outcome(&p, "/", &[("authorization", &t)]), Ok("b".into()));
}

#[test]
fn apisix_documented_rs256_token_verifies_with_its_public_key() {
    // APISIX's "Sign JWT with RS256 Algorithm" example: a public key and a token.
    let public_key = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAoTxe7ZPycrEP0SK4OBA2\n0OUQsDN9gSFSHVvx/t++nZNrFxzZnV6q6/TRsihNXUIgwaOu5icFlIcxPL9Mf9UJ\na5/XCQExp1TxpuSmjkhIFAJ/x5zXrC8SGTztP3SjkhYnQO9PKVXI6ljwgakVCfpl\numuTYqI+ev7e45NdK8gJoJxPp8bPMdf8/nHfLXZuqhO/btrDg1x+j7frDNrEw+6B\nCK2SsuypmYN+LwHfaH4Of7MQFk3LNIxyBz0mdbsKJBzp360rbWnQeauWtDymZxLT\nATRNBVyl3nCNsURRTkc7eyknLaDt2N5xTIoUGHTUFYSdE68QWmukYMVGcEHEEPkp\naQIDAQAB\n-----END PUBLIC KEY-----";
    let token = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJrZXkiOiJqYWNrLWtleSIsIm5iZiI6MTcyOTEzMjI3MX0.K-I13em84kAcyH1jfIJl7ls_4jlwg1GzEzo5_xrDu-3wt3Xa3irS6naUsWpxX-a-hmcZZxRa9zqunqQjUP4kvn5e3xg2f_KyCR-_ZbwqYEPk3bXeFV1l4iypv6z5L7W1Niharun-dpMU03b1Tz64vhFx6UwxNL5UIZ7bunDAo_BXZ7Xe8rFhNHvIHyBFsDEXIBgx8lNYMq8QJk3iKxZhZZ5Om7lgYjOOKRgew4WkhBAY0v1AkO77nTlvSK0OEeeiwhkROyntggyx-S-U222ykMQ6mBLxkP4Cq5qHwXD8AUcLk5mhEij-3QhboYnt7yhKeZ3wDSpcjDvvL2aasC25ng";
    let consumers = super::super::registry::consumers([(
        "jack".to_string(),
        BTreeMap::from([(
            "jwt-auth".to_string(),
            json!({"key": "jack-key", "algorithm": "RS256", "public_key": public_key}),
        )]),
    )]);
    let p = compile(&json!({}), &Env::new(&consumers)).unwrap();
    assert_eq!(
        outcome(&p, "/", &[("authorization", token)]),
        Ok("jack".into())
    );
    // An HS256 token for the same key is refused: the algorithm is the consumer's.
    let t = hs(
        Algorithm::HS256,
        public_key.as_bytes(),
        json!({"key": "jack-key"}),
    );
    assert_eq!(
        outcome(&p, "/", &[("authorization", &t)]),
        Err(FAILED.into())
    );
}

/// A P-256 key pair made now: (PKCS#8 private PEM, public PEM).
fn ec_pair(curve: Nid) -> (Vec<u8>, String) {
    let key =
        PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(curve).unwrap()).unwrap())
            .unwrap();
    let public = String::from_utf8(key.public_key_to_pem().unwrap()).unwrap();
    (key.private_key_to_pem_pkcs8().unwrap(), public)
}

#[test]
fn es256_tokens_verify_with_the_consumers_public_key_only() {
    let (private, public) = ec_pair(Nid::X9_62_PRIME256V1);
    let (other, _) = ec_pair(Nid::X9_62_PRIME256V1);
    let cred = json!({"key": "ec-key", "algorithm": "ES256", "public_key": public});
    let p = plugin_with(json!({}), vec![("ec", cred)]);
    let sign = |pem: &[u8]| {
        encode(
            &Header::new(Algorithm::ES256),
            &json!({"key": "ec-key", "exp": now() + 60}),
            &EncodingKey::from_ec_pem(pem).unwrap(),
        )
        .unwrap()
    };
    let good = sign(&private);
    assert_eq!(
        outcome(&p, "/", &[("authorization", &good)]),
        Ok("ec".into())
    );
    let forged = sign(&other);
    assert_eq!(
        outcome(&p, "/", &[("authorization", &forged)]),
        Err(FAILED.into())
    );
}

#[test]
fn bad_credentials_name_the_field() {
    let path = |v: Value| credential(&v).unwrap_err().path;
    assert_eq!(path(json!({"secret": "s"})), "");
    assert_eq!(path(json!({"key": "", "secret": "s"})), "key");
    assert_eq!(path(json!({"key": "k"})), "secret");
    let e = credential(&json!({"key": "k", "secret": 987654321})).unwrap_err();
    assert_eq!(e.path, "secret");
    assert!(!e.message.contains("987654321"), "{e}");
    assert_eq!(path(json!({"key": "k", "secret": "s", "exp": 0})), "exp");
    assert_eq!(
        path(json!({"key": "k", "secret": "s", "algorithm": "HS1"})),
        "algorithm"
    );
    assert_eq!(
        path(json!({"key": "k", "public_key": "x", "algorithm": "ES512"})),
        "algorithm"
    );
    assert_eq!(
        path(json!({"key": "k", "algorithm": "RS256"})),
        "public_key"
    );
    assert_eq!(
        path(json!({"key": "k", "algorithm": "RS256", "public_key": "not pem"})),
        "public_key"
    );
    assert_eq!(
        path(json!({"key": "k", "secret": "%%%", "base64_secret": true})),
        "secret"
    );
    assert_eq!(
        path(json!({"key": "k", "secret": "s", "lifetime_grace_period": -1})),
        "lifetime_grace_period"
    );
    let (private, public) = ec_pair(Nid::SECP384R1);
    let private = String::from_utf8(private).unwrap();
    let e =
        credential(&json!({"key": "k", "algorithm": "ES256", "public_key": private})).unwrap_err();
    assert_eq!(e.path, "public_key");
    assert!(!e.message.contains(&private[30..60]), "{}", e.message);
    // A P-384 key cannot verify ES256.
    let e = credential(&json!({"key": "k", "algorithm": "ES256", "public_key": public}));
    assert_eq!(e.unwrap_err().path, "public_key");
    assert!(credential(&json!({"key": "k", "algorithm": "ES384", "public_key": public})).is_ok());
}

#[test]
fn bad_route_configurations_name_the_field() {
    let cs = consumers(Vec::new());
    let env = Env::new(&cs);
    let path = |v: Value| compile(&v, &env).unwrap_err().path;
    assert_eq!(path(json!({"header": "a b"})), "header");
    assert_eq!(
        path(json!({"claims_to_verify": ["iat"]})),
        "claims_to_verify[0]"
    );
    assert_eq!(
        path(json!({"claims_to_verify": ["exp", "exp"]})),
        "claims_to_verify"
    );
    assert_eq!(path(json!({"key_claim_name": ""})), "key_claim_name");
    assert_eq!(path(json!({"realm": ""})), "realm");
    assert_eq!(
        path(json!({"anonymous_consumer": "ghost"})),
        "anonymous_consumer"
    );
}

#[test]
fn an_anonymous_consumer_replaces_the_401() {
    let p = plugin(json!({"anonymous_consumer": "anonymous"}));
    assert_eq!(outcome(&p, "/", &[]), Ok("anonymous".into()));
    assert_eq!(
        outcome(&p, "/", &[("authorization", DOC_TOKEN)]),
        Ok("jack".into())
    );
}

#[test]
fn hidden_tokens_leave_the_upstream_request() {
    let p = plugin(json!({"hide_credentials": true}));
    let mut cx = PluginCtx::default();
    let mut req = request("/a?jwt=t&b=2", &[("cookie", "jwt=t; x=1")]);
    p.upstream_request(&mut req, &mut cx).unwrap();
    assert_eq!(req.uri.to_string(), "/a?b=2");
    assert_eq!(req.headers["cookie"], "jwt=t; x=1");
    let mut req = request("/a", &[("cookie", "a=1; jwt=t;x=2")]);
    p.upstream_request(&mut req, &mut cx).unwrap();
    assert_eq!(req.headers["cookie"], "a=1; x=2");
    let mut req = request("/a?jwt=q", &[("authorization", "t"), ("cookie", "jwt=t")]);
    p.upstream_request(&mut req, &mut cx).unwrap();
    assert!(!req.headers.contains_key("authorization"));
    assert_eq!(req.uri.to_string(), "/a?jwt=q");
    let mut req = request("/a", &[("cookie", "jwt=t")]);
    p.upstream_request(&mut req, &mut cx).unwrap();
    assert!(!req.headers.contains_key("cookie"));
}

#[test]
fn debug_output_holds_no_secret() {
    let p = plugin(json!({}));
    let shown = format!("{p:?}");
    assert!(!shown.contains(DOC_SECRET), "{shown}");
    assert!(!shown.contains("jack-key"), "{shown}");
}
