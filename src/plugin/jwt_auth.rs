//! `jwt-auth` (APISIX, priority 2510): the caller presents a JSON Web Token (RFC 7519) whose
//! `key` claim (`key_claim_name`) names a consumer's `plugins.jwt-auth.key`; the token must
//! be signed with that consumer's `secret` (HS256/384/512) or the private key of its
//! `public_key` (RS*, PS*, ES256/384, EdDSA), with the consumer's `algorithm`.
//!
//! The token is taken from the `header` (default `Authorization`, an optional `Bearer `
//! prefix removed), else the `query` argument (default `jwt`), else the `cookie` (default
//! `jwt`), as APISIX's `jwt-auth.lua` does. `exp` and `nbf` are checked when present (or
//! required when listed in `claims_to_verify`), allowing the consumer's
//! `lifetime_grace_period` seconds of clock skew.
//!
//! Answers as APISIX does, all 401 with `WWW-Authenticate: Bearer realm="jwt"`:
//!
//! | request | `message` |
//! |---|---|
//! | no token | `Missing JWT token in request` |
//! | not three base64url JSON parts | `JWT token invalid` |
//! | no key claim | `missing user key in JWT token` |
//! | a key no consumer has | `Invalid user key in JWT token` |
//! | another algorithm, a bad signature, expired, not yet valid | `failed to verify jwt` |
//!
//! Keys are parsed once, when the configuration loads, into `jsonwebtoken`'s
//! [`DecodingKey`] (RustCrypto backend), in one key → consumer table shared by every
//! jwt-auth route. Tokens, secrets and keys are never logged.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::basic_auth::{anonymous, challenge, ngx_decode_base64, parse_credential};
use super::key_auth::remove_query_arg;
use super::registry::{parse, Env, PluginError, Spec};
use super::vars::{cookie, query_arg};
use super::{Consumer, Flow, Phases, Plugin, PluginCtx};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "jwt-auth",
    priority: 2510,
    compile,
    credential: Some(credential),
};

/// Route-side configuration (APISIX schema).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    /// Header carrying the token. Default `authorization`.
    #[serde(default = "authorization")]
    header: String,
    /// Query argument carrying the token when the header is absent. Default `jwt`.
    #[serde(default = "jwt")]
    query: String,
    /// Cookie carrying the token when header and query argument are absent. Default `jwt`.
    #[serde(default = "jwt")]
    cookie: String,
    /// Remove the token (header, query argument or cookie) before the request goes
    /// upstream. Default false.
    #[serde(default)]
    hide_credentials: bool,
    /// The claim naming the consumer's `key`. Default `key`.
    #[serde(default = "key")]
    key_claim_name: String,
    /// APISIX keeps the payload for later plugins (`ctx.jwt_auth_payload`); no Pylon
    /// plugin reads it, so it is accepted and has no effect.
    #[serde(default)]
    #[allow(dead_code)]
    store_in_ctx: bool,
    /// Realm in `WWW-Authenticate`. Default `jwt`.
    #[serde(default = "jwt")]
    realm: String,
    /// The consumer a request that fails authentication runs as, instead of 401.
    anonymous_consumer: Option<String>,
    /// Claims that must be present and valid; default: `exp` and `nbf`, checked only when
    /// present.
    claims_to_verify: Option<Vec<Claim>>,
}

fn authorization() -> String {
    "authorization".into()
}
fn jwt() -> String {
    "jwt".into()
}
fn key() -> String {
    "key".into()
}

/// A registered time claim APISIX can check (`claims_to_verify` items).
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Claim {
    /// Expiration time (RFC 7519 §4.1.4).
    Exp,
    /// Not before (RFC 7519 §4.1.5).
    Nbf,
}

/// Consumer-side configuration (APISIX's consumer schema).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    /// Names the consumer in the token's key claim. Required, non-empty.
    key: String,
    /// Shared secret for HS256/384/512.
    secret: Option<String>,
    /// PEM public key for the other algorithms.
    public_key: Option<String>,
    /// Default HS256.
    #[serde(default = "hs256")]
    algorithm: String,
    /// Lifetime of tokens APISIX signed (its removed signing endpoint); checked, unused.
    #[serde(default = "one_day")]
    exp: i64,
    /// `secret` is base64. Default false.
    #[serde(default)]
    base64_secret: bool,
    /// Seconds of clock skew allowed for `exp` and `nbf`. Default 0.
    #[serde(default)]
    lifetime_grace_period: u64,
}

fn hs256() -> String {
    "HS256".into()
}
fn one_day() -> i64 {
    86400
}

/// A consumer's verification key, compiled.
struct Verifier {
    consumer: Arc<Consumer>,
    /// The consumer's `algorithm` as written: the token header's `alg` must equal it.
    alg_name: String,
    alg: Algorithm,
    key: DecodingKey,
    grace: u64,
}

/// Checks a credential and compiles its key.
fn verifier(c: &Credential, consumer: Arc<Consumer>) -> Result<Verifier, PluginError> {
    if c.key.is_empty() {
        return Err(PluginError::new("key", "must not be empty"));
    }
    if c.exp < 1 {
        return Err(PluginError::new("exp", "must be >= 1"));
    }
    let alg: Algorithm = match c.algorithm.as_str() {
        "ES512" => Err(PluginError::new(
            "algorithm",
            "ES512 is not supported by Pylon (ES256 and ES384 are)",
        )),
        name => name.parse().map_err(|_| {
            PluginError::new(
                "algorithm",
                "must be one of HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, \
                 PS256, PS384, PS512, EdDSA",
            )
        }),
    }?;
    let key = if alg.family() == AlgorithmFamily::Hmac {
        let secret = match c.secret.as_deref() {
            None => {
                return Err(PluginError::new(
                    "secret",
                    "required when using HS based algorithms",
                ))
            }
            Some("") => return Err(PluginError::new("secret", "must not be empty")),
            Some(s) => s,
        };
        let bytes = match c.base64_secret {
            true => ngx_decode_base64(secret.as_bytes()).ok_or_else(|| {
                PluginError::new(
                    "secret",
                    "base64_secret required but the secret is not in base64 format",
                )
            })?,
            false => secret.as_bytes().to_vec(),
        };
        DecodingKey::from_secret(&bytes)
            .map_err(|_| PluginError::new("secret", "not a usable HMAC key"))?
    } else {
        let bad = |why: &str| PluginError::new("public_key", why.to_string());
        let pem = match c.public_key.as_deref() {
            None | Some("") => return Err(bad("missing valid public key")),
            Some(p) => p.as_bytes(),
        };
        if crate::tls::holds_private_key(pem) {
            return Err(bad("holds a private key: give the public key (PEM)"));
        }
        let parsed = match alg.family() {
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
            _ => DecodingKey::from_rsa_pem(pem),
        };
        let wrong = || bad(&format!("not a PEM public key for {}", c.algorithm));
        let key = parsed.map_err(|_| wrong())?;
        // Builds the verifier once to refuse a key of another curve or size now.
        (DEFAULT_PROVIDER.verifier_factory)(&alg, &key).map_err(|_| wrong())?;
        key
    };
    Ok(Verifier {
        consumer,
        alg_name: c.algorithm.clone(),
        alg,
        key,
        grace: c.lifetime_grace_period,
    })
}

fn credential(v: &Value) -> Result<(), PluginError> {
    let c: Credential = parse_credential(v, &["secret", "public_key"])?;
    verifier(&c, Arc::new(Consumer::new(""))).map(|_| ())
}

/// Keys → verifiers, built once per configuration and shared by every jwt-auth route.
type Keys = HashMap<String, Verifier>;

fn compile(v: &Value, env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    let c: Conf = parse(v)?;
    let header = HeaderName::from_bytes(c.header.to_ascii_lowercase().as_bytes())
        .map_err(|_| PluginError::new("header", "not a valid header name"))?;
    if c.key_claim_name.is_empty() {
        return Err(PluginError::new("key_claim_name", "must not be empty"));
    }
    let claims = c.claims_to_verify.unwrap_or_default();
    if claims
        .iter()
        .enumerate()
        .any(|(i, c)| claims[..i].contains(c))
    {
        return Err(PluginError::new("claims_to_verify", "items must be unique"));
    }
    let keys = env.shared("jwt-auth", || {
        let mut keys = Keys::new();
        for (consumer, plugins) in env.consumers {
            let Some(Ok(cred)) = plugins.get("jwt-auth").map(parse::<Credential>) else {
                continue;
            };
            if let Ok(v) = verifier(&cred, consumer.clone()) {
                keys.entry(cred.key).or_insert(v);
            }
        }
        keys
    });
    Ok(Arc::new(JwtAuth {
        header,
        query: c.query.as_str().into(),
        cookie: c.cookie,
        hide: c.hide_credentials,
        key_claim: c.key_claim_name,
        claims,
        challenge: challenge("Bearer", &c.realm)?,
        anonymous: anonymous(env, c.anonymous_consumer.as_deref())?,
        keys,
    }))
}

/// The compiled plugin.
struct JwtAuth {
    header: HeaderName,
    query: Arc<str>,
    cookie: String,
    hide: bool,
    key_claim: String,
    /// `claims_to_verify`; empty: `nbf` and `exp` when present.
    claims: Vec<Claim>,
    challenge: HeaderValue,
    anonymous: Option<Arc<Consumer>>,
    keys: Arc<Keys>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys or secrets.
        f.debug_struct("JwtAuth")
            .field("header", &self.header)
            .field("query", &self.query)
            .field("cookie", &self.cookie)
            .field("key_claim_name", &self.key_claim)
            .field("consumers", &self.keys.len())
            .finish()
    }
}

const MISSING: &str = "Missing JWT token in request";
const INVALID: &str = "JWT token invalid";
const NO_KEY: &str = "missing user key in JWT token";
const UNKNOWN_KEY: &str = "Invalid user key in JWT token";
const FAILED: &str = "failed to verify jwt";

/// base64url as `lua-resty-jwt` decodes it: padding optional.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A token split into its parts (JWS compact serialization, RFC 7515 §7.1), header and
/// payload decoded as JSON objects, as `lua-resty-jwt`'s `load_jwt` reads it.
struct Token<'t> {
    header: Map<String, Value>,
    payload: Map<String, Value>,
    /// `base64url(header) "." base64url(payload)`: what the signature covers.
    signed: &'t str,
    signature: &'t str,
}

impl<'t> Token<'t> {
    fn parse(token: &'t str) -> Option<Token<'t>> {
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, payload) = signed.split_once('.')?;
        if payload.contains('.') {
            return None;
        }
        let object = |part: &str| match serde_json::from_slice(&B64URL.decode(part).ok()?) {
            Ok(Value::Object(m)) => Some(m),
            _ => None,
        };
        Some(Token {
            header: object(header)?,
            payload: object(payload)?,
            signed,
            signature,
        })
    }
}

/// Whether `claims` hold at `now` (Unix seconds), as APISIX's `jwt-auth/parser.lua`:
/// `nbf < now + grace` and `exp > now - grace`; a listed claim must be present, an
/// unlisted one is checked when present; a present one must be a number.
fn claims_hold(payload: &Map<String, Value>, listed: &[Claim], now: i64, grace: u64) -> bool {
    let (now, grace) = (now as f64, grace as f64);
    let check = |claim: Claim, required: bool| match (payload.get(claim.name()), claim) {
        (None, _) => !required,
        (Some(v), Claim::Nbf) => v.as_f64().is_some_and(|nbf| nbf < now + grace),
        (Some(v), Claim::Exp) => v.as_f64().is_some_and(|exp| exp > now - grace),
    };
    if listed.is_empty() {
        check(Claim::Nbf, false) && check(Claim::Exp, false)
    } else {
        listed.iter().all(|&c| check(c, true))
    }
}

impl Claim {
    fn name(self) -> &'static str {
        match self {
            Claim::Exp => "exp",
            Claim::Nbf => "nbf",
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl JwtAuth {
    /// The token: header (without `Bearer `), else query argument, else cookie.
    fn token<'r>(&self, req: &'r RequestHeader) -> Option<std::borrow::Cow<'r, str>> {
        if let Some(v) = req.headers.get(&self.header) {
            let v = String::from_utf8_lossy(v.as_bytes());
            return Some(match v {
                std::borrow::Cow::Borrowed(s) => std::borrow::Cow::Borrowed(
                    s.strip_prefix("Bearer ")
                        .or_else(|| s.strip_prefix("bearer "))
                        .unwrap_or(s),
                ),
                owned => owned,
            });
        }
        if let Some(v) = query_arg(req.uri.query().unwrap_or(""), &self.query) {
            return Some(v);
        }
        cookie(req, &self.cookie).map(std::borrow::Cow::Borrowed)
    }

    fn find(&self, req: &RequestHeader) -> Result<Arc<Consumer>, &'static str> {
        let raw = self.token(req).ok_or(MISSING)?;
        let token = Token::parse(&raw).ok_or(INVALID)?;
        let user_key = match token.payload.get(&self.key_claim) {
            None | Some(Value::Bool(false)) => return Err(NO_KEY),
            Some(Value::String(k)) => k,
            Some(_) => return Err(UNKNOWN_KEY),
        };
        let v = self.keys.get(user_key).ok_or(UNKNOWN_KEY)?;
        if token.header.get("alg").and_then(Value::as_str) != Some(v.alg_name.as_str()) {
            return Err(FAILED);
        }
        let signature = B64URL.decode(token.signature).map_err(|_| FAILED)?;
        let verifier = (DEFAULT_PROVIDER.verifier_factory)(&v.alg, &v.key).map_err(|_| FAILED)?;
        if verifier
            .verify(token.signed.as_bytes(), &signature)
            .is_err()
        {
            return Err(FAILED);
        }
        if !claims_hold(&token.payload, &self.claims, now(), v.grace) {
            return Err(FAILED);
        }
        Ok(v.consumer.clone())
    }
}

#[async_trait]
impl Plugin for JwtAuth {
    fn name(&self) -> &'static str {
        "jwt-auth"
    }

    fn phases(&self) -> Phases {
        Phases {
            rewrite: true,
            upstream_request: true,
            ..Phases::default()
        }
    }

    fn rewrite(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        let in_query = !req.headers.contains_key(&self.header)
            && query_arg(req.uri.query().unwrap_or(""), &self.query).is_some();
        if in_query {
            cx.secret_args.push(self.query.clone());
        }
        match self.find(req) {
            Ok(consumer) => {
                cx.consumer = Some(consumer);
                Flow::Continue
            }
            Err(why) => {
                let anonymous = self.anonymous.as_ref();
                super::consumer::refuse("jwt-auth", why, anonymous, &self.challenge, cx)
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
        if !self.hide {
            return Ok(());
        }
        // Where the token came from, in the order it was looked for.
        if req.headers.contains_key(&self.header) {
            req.remove_header(&self.header);
        } else if let Some(q) = req
            .uri
            .query()
            .filter(|q| query_arg(q, &self.query).is_some())
        {
            let kept = remove_query_arg(q, &self.query);
            let uri = match kept.is_empty() {
                true => req.uri.path().to_string(),
                false => format!("{}?{kept}", req.uri.path()),
            };
            if let Ok(uri) = uri.parse() {
                req.set_uri(uri);
            }
        } else if cookie(req, &self.cookie).is_some() {
            match without_cookie(req, &self.cookie) {
                Some(rest) => {
                    req.insert_header(http::header::COOKIE, rest)?;
                }
                None => {
                    req.remove_header(&http::header::COOKIE);
                }
            }
        }
        Ok(())
    }
}

/// The request's cookies without those named `name`, joined by `; `; `None` if none is
/// left.
fn without_cookie(req: &RequestHeader, name: &str) -> Option<String> {
    let kept: Vec<&str> = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
#[path = "jwt_auth_tests.rs"]
mod tests;
