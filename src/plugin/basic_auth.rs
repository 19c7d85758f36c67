//! `basic-auth` (APISIX, priority 2520): HTTP Basic authentication (RFC 7617) against the
//! consumers' `plugins.basic-auth.username` / `password`.
//!
//! Answers as APISIX's `basic-auth.lua` does, each with `WWW-Authenticate: Basic
//! realm="basic"` (the route's `realm`):
//!
//! | request | answer |
//! |---|---|
//! | no `Authorization` header | 401 `{"message":"Missing authorization in request"}` |
//! | not `Basic <base64 of user:password>` | 401 `{"message":"Invalid authorization in request"}` |
//! | unknown user or wrong password | 401 `{"message":"Invalid user authorization"}` |
//!
//! On success the upstream request carries `X-Consumer-Username`; with `hide_credentials`
//! the `Authorization` header is removed from it. With `anonymous_consumer`, a request that
//! fails authentication goes on as that consumer instead of getting 401.
//!
//! Passwords are compared in constant time (`subtle`). Neither the header nor what it
//! decodes to is ever logged (APISIX logs the decoded text of a malformed header; Pylon
//! does not).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use http::header::AUTHORIZATION;
use http::HeaderValue;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::registry::{parse, Env, PluginError, Spec};
use super::{Consumer, Flow, Phases, Plugin, PluginCtx};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "basic-auth",
    priority: 2520,
    compile,
    credential: Some(credential),
};

/// Route-side configuration (APISIX schema).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    /// Remove `Authorization` before the request goes upstream. Default false.
    #[serde(default)]
    hide_credentials: bool,
    /// Realm in `WWW-Authenticate`. Default `basic`.
    #[serde(default = "realm")]
    realm: String,
    /// The consumer a request that fails authentication runs as, instead of 401.
    anonymous_consumer: Option<String>,
}

fn realm() -> String {
    "basic".into()
}

/// Consumer-side configuration: `{ username, password }`, both required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    username: String,
    password: String,
}

fn credential(v: &Value) -> Result<(), PluginError> {
    parse_credential::<Credential>(v, &["password"]).map(|_| ())
}

/// [`parse`] for a consumer's credential: a problem at one of the `secret` fields names the
/// field but never its value (serde quotes numbers: `password: 123456` in YAML).
///
/// Errors: the first field that does not fit, with its path.
pub fn parse_credential<T: serde::de::DeserializeOwned>(
    v: &Value,
    secret: &[&str],
) -> Result<T, PluginError> {
    parse(v).map_err(|e| match secret.contains(&e.path.as_str()) {
        true => PluginError::new(e.path, "must be a string (the value is not shown)"),
        false => e,
    })
}

/// A user's password, never printed.
struct Password(Box<[u8]>);

/// Usernames → (consumer, password), built once per configuration and shared by every
/// basic-auth route.
type Users = HashMap<Box<[u8]>, (Arc<Consumer>, Password)>;

/// `WWW-Authenticate: <scheme> realm="<realm>"` for `realm`, checked as APISIX's realm
/// schema does (1–128 printable ASCII characters without `"` and `\`).
///
/// Errors: a realm outside that, at `realm`.
pub fn challenge(scheme: &str, realm: &str) -> Result<HeaderValue, PluginError> {
    let printable = realm
        .bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    if realm.is_empty() || realm.len() > 128 || !printable {
        return Err(PluginError::new(
            "realm",
            "must be 1-128 printable ASCII characters without \" or \\",
        ));
    }
    HeaderValue::from_str(&format!("{scheme} realm=\"{realm}\""))
        .map_err(|_| PluginError::new("realm", "not a valid header value"))
}

/// The consumer named `name` (for `anonymous_consumer`, which APISIX resolves per request;
/// Pylon checks it when the configuration loads).
///
/// Errors: no consumer of that name, at `anonymous_consumer`.
pub fn anonymous(env: &Env, name: Option<&str>) -> Result<Option<Arc<Consumer>>, PluginError> {
    let Some(name) = name else { return Ok(None) };
    env.consumers
        .iter()
        .find(|(c, _)| c.username == name)
        .map(|(c, _)| Some(c.clone()))
        .ok_or_else(|| {
            PluginError::new("anonymous_consumer", format!("no consumer named {name:?}"))
        })
}

fn compile(v: &Value, env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    let c: Conf = parse(v)?;
    let challenge = challenge("Basic", &c.realm)?;
    let anonymous = anonymous(env, c.anonymous_consumer.as_deref())?;
    let users = env.shared("basic-auth", || {
        let mut users = Users::new();
        for (consumer, plugins) in env.consumers {
            if let Some(Ok(cred)) = plugins.get("basic-auth").map(parse::<Credential>) {
                let name = cred.username.into_bytes().into_boxed_slice();
                let password = Password(cred.password.into_bytes().into_boxed_slice());
                users.entry(name).or_insert((consumer.clone(), password));
            }
        }
        users
    });
    Ok(Arc::new(BasicAuth {
        hide: c.hide_credentials,
        challenge,
        anonymous,
        users,
    }))
}

/// The compiled plugin.
struct BasicAuth {
    hide: bool,
    challenge: HeaderValue,
    anonymous: Option<Arc<Consumer>>,
    users: Arc<Users>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the users or passwords.
        f.debug_struct("BasicAuth")
            .field("hide_credentials", &self.hide)
            .field("realm", &self.challenge)
            .field("users", &self.users.len())
            .finish()
    }
}

/// What went wrong, as the message APISIX answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Missing,
    Malformed,
    Rejected,
}

impl Failure {
    fn message(self) -> &'static str {
        match self {
            Failure::Missing => "Missing authorization in request",
            Failure::Malformed => "Invalid authorization in request",
            Failure::Rejected => "Invalid user authorization",
        }
    }
}

/// nginx's `ngx.decode_base64`: the standard alphabet, padding optional, anything from the
/// first `=` on ignored.
const NGX_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes base64 as nginx does (see [`NGX_BASE64`]); `None` if it is not base64.
pub fn ngx_decode_base64(s: &[u8]) -> Option<Vec<u8>> {
    let end = s.iter().position(|&b| b == b'=').unwrap_or(s.len());
    NGX_BASE64.decode(&s[..end]).ok()
}

/// The user and password in an `Authorization` value, as APISIX reads them: the text after
/// the first `basic` (any case) and one whitespace, base64-decoded, split at the first `:`
/// (RFC 7617; APISIX cuts the password at a second `:`), whitespace removed from both.
fn credentials(header: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let start = (0..header.len().saturating_sub(6)).find(|&i| {
        header[i..i + 5].eq_ignore_ascii_case(b"basic") && header[i + 5].is_ascii_whitespace()
    })?;
    let decoded = ngx_decode_base64(&header[start + 6..])?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let strip = |s: &[u8]| -> Vec<u8> {
        s.iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect()
    };
    Some((strip(&decoded[..colon]), strip(&decoded[colon + 1..])))
}

impl BasicAuth {
    fn find(&self, req: &RequestHeader) -> Result<Arc<Consumer>, Failure> {
        let header = req.headers.get(AUTHORIZATION).ok_or(Failure::Missing)?;
        let (user, password) = credentials(header.as_bytes()).ok_or(Failure::Malformed)?;
        let (consumer, expected) = self.users.get(&user[..]).ok_or(Failure::Rejected)?;
        if bool::from(expected.0[..].ct_eq(&password[..])) {
            Ok(consumer.clone())
        } else {
            Err(Failure::Rejected)
        }
    }
}

#[async_trait]
impl Plugin for BasicAuth {
    fn name(&self) -> &'static str {
        "basic-auth"
    }

    fn phases(&self) -> Phases {
        Phases {
            rewrite: true,
            upstream_request: true,
            ..Phases::default()
        }
    }

    fn rewrite(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        match self.find(req) {
            Ok(consumer) => {
                cx.consumer = Some(consumer);
                Flow::Continue
            }
            Err(why) => {
                let anonymous = self.anonymous.as_ref();
                super::consumer::refuse("basic-auth", why.message(), anonymous, &self.challenge, cx)
            }
        }
    }

    fn upstream_request(
        &self,
        req: &mut RequestHeader,
        cx: &mut PluginCtx,
    ) -> pingora_core::Result<()> {
        if let Some(c) = &cx.consumer {
            c.tag(req)?;
        }
        if self.hide {
            req.remove_header(&AUTHORIZATION);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn consumers() -> Vec<(Arc<Consumer>, BTreeMap<String, Value>)> {
        super::super::registry::consumers([
            (
                "johndoe".to_string(),
                BTreeMap::from([(
                    "basic-auth".to_string(),
                    json!({"username": "johndoe", "password": "john-key"}),
                )]),
            ),
            ("anonymous".to_string(), BTreeMap::new()),
        ])
    }

    fn plugin(conf: Value) -> Arc<dyn Plugin> {
        compile(&conf, &Env::new(&consumers())).unwrap()
    }

    fn run(p: &Arc<dyn Plugin>, authorization: Option<&str>) -> (Flow, PluginCtx) {
        let mut req = RequestHeader::build("GET", b"/anything", None).unwrap();
        if let Some(h) = authorization {
            req.insert_header("authorization", h).unwrap();
        }
        let mut cx = PluginCtx::default();
        (p.rewrite(&req, &mut cx), cx)
    }

    fn denied(p: &Arc<dyn Plugin>, authorization: Option<&str>) -> (String, String) {
        let Flow::Reply(r) = run(p, authorization).0 else {
            panic!("{authorization:?} was let through")
        };
        assert_eq!(r.status, 401);
        let challenge = r
            .headers
            .iter()
            .find(|(k, _)| k == http::header::WWW_AUTHENTICATE)
            .map(|(_, v)| v.to_str().unwrap().to_string())
            .unwrap();
        (String::from_utf8(r.body.to_vec()).unwrap(), challenge)
    }

    #[test]
    fn the_apisix_example_credentials_name_the_consumer() {
        let p = plugin(json!({}));
        // `curl -u johndoe:john-key`, as in APISIX's documentation.
        let (flow, cx) = run(&p, Some("Basic am9obmRvZTpqb2huLWtleQ=="));
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(cx.consumer.unwrap().username, "johndoe");
        // Lower-case scheme, no padding, whitespace around the user: as APISIX reads it.
        let (flow, _) = run(&p, Some("basic am9obmRvZTpqb2huLWtleQ"));
        assert!(matches!(flow, Flow::Continue));
        let spaced = NGX_BASE64.encode(" johndoe : john-key ");
        assert!(matches!(
            run(&p, Some(&format!("Basic {spaced}"))).0,
            Flow::Continue
        ));
    }

    #[test]
    fn failures_get_apisix_messages_and_the_challenge() {
        let p = plugin(json!({}));
        let basic = "Basic realm=\"basic\"".to_string();
        assert_eq!(
            denied(&p, None),
            (
                "{\"message\":\"Missing authorization in request\"}\n".into(),
                basic.clone()
            )
        );
        let malformed = "{\"message\":\"Invalid authorization in request\"}\n".to_string();
        for bad in ["Bearer abc", "Basic !!!", "Basic", "Basic am9obmRvZQ=="] {
            assert_eq!(denied(&p, Some(bad)).0, malformed, "{bad}");
        }
        let rejected = "{\"message\":\"Invalid user authorization\"}\n".to_string();
        for (user, password) in [
            ("johndoe", "invalid-password"),
            ("johndoe", "john-ke"),
            ("johndoe", "john-key:x"),
            ("janedoe", "john-key"),
        ] {
            let h = format!("Basic {}", NGX_BASE64.encode(format!("{user}:{password}")));
            assert_eq!(denied(&p, Some(&h)).0, rejected, "{user}:{password}");
        }
        let p = plugin(json!({"realm": "staff"}));
        assert_eq!(denied(&p, None).1, "Basic realm=\"staff\"");
    }

    #[test]
    fn an_anonymous_consumer_replaces_the_401() {
        let p = plugin(json!({"anonymous_consumer": "anonymous"}));
        let (flow, cx) = run(&p, Some("Basic bm9ib2R5Om5vcGU="));
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(cx.consumer.unwrap().username, "anonymous");
        let (_, cx) = run(&p, Some("Basic am9obmRvZTpqb2huLWtleQ=="));
        assert_eq!(cx.consumer.unwrap().username, "johndoe");
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let cs = consumers();
        let env = Env::new(&cs);
        let path = |v: Value| compile(&v, &env).unwrap_err().path;
        assert_eq!(path(json!({"hide_credentials": "yes"})), "hide_credentials");
        assert_eq!(path(json!({"realm": ""})), "realm");
        assert_eq!(path(json!({"realm": "a\"b"})), "realm");
        assert_eq!(
            path(json!({"anonymous_consumer": "ghost"})),
            "anonymous_consumer"
        );
        assert_eq!(path(json!({"user": "x"})), "user");
        assert!(credential(&json!({"username": "a", "password": "b"})).is_ok());
        assert!(credential(&json!({"username": "a"})).is_err());
        let e = credential(&json!({"username": "a", "password": 123456})).unwrap_err();
        assert_eq!(e.path, "password");
        assert!(!e.message.contains("123456"), "{e}");
    }

    #[test]
    fn debug_output_holds_no_password() {
        let p = plugin(json!({}));
        let shown = format!("{p:?}");
        assert!(!shown.contains("john-key"), "{shown}");
        assert!(!shown.contains("johndoe"), "{shown}");
    }

    #[test]
    fn nginx_base64_ignores_what_follows_padding() {
        assert_eq!(ngx_decode_base64(b"YWI=").unwrap(), b"ab");
        assert_eq!(ngx_decode_base64(b"YWI").unwrap(), b"ab");
        assert_eq!(ngx_decode_base64(b"YWI=garbage").unwrap(), b"ab");
        assert!(ngx_decode_base64(b"Y").is_none());
        assert!(ngx_decode_base64(b"a b").is_none());
    }
}
