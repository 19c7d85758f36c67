//! `key-auth` (APISIX, priority 2500): the caller names itself with a key, in a header
//! (`apikey` by default) or, without that header, a query argument (`apikey`). The key picks
//! the consumer whose `plugins.key-auth.key` it is.
//!
//! Answers as APISIX does: no key → 401 `{"message":"Missing API key in request"}`, an
//! unknown key → 401 `{"message":"Invalid API key in request"}`, both with
//! `WWW-Authenticate: apikey realm="key"`. On success the upstream request carries
//! `X-Consumer-Username`; with `hide_credentials` the key is removed from it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::Value;

use super::registry::{parse, Env, PluginError, Spec};
use super::vars::query_arg;
use super::{Consumer, Flow, Phases, Plugin, PluginCtx};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "key-auth",
    priority: 2500,
    compile,
    credential: Some(credential),
};

/// Route-side configuration (APISIX schema).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    /// Header carrying the key. Default `apikey`.
    #[serde(default = "apikey")]
    header: String,
    /// Query argument carrying the key when the header is absent. Default `apikey`.
    #[serde(default = "apikey")]
    query: String,
    /// Realm in `WWW-Authenticate`. Default `key`.
    #[serde(default = "realm")]
    realm: String,
    /// Remove the key from the request before it goes upstream. Default false.
    #[serde(default)]
    hide_credentials: bool,
}

fn apikey() -> String {
    "apikey".into()
}
fn realm() -> String {
    "key".into()
}

/// Consumer-side configuration: `{ key }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    key: String,
}

fn credential(v: &Value) -> Result<(), PluginError> {
    let c: Credential = parse(v)?;
    if c.key.is_empty() {
        return Err(PluginError::new("key", "must not be empty"));
    }
    Ok(())
}

/// Keys → consumers, built once per configuration and shared by every key-auth route.
type Keys = HashMap<String, Arc<Consumer>>;

fn compile(v: &Value, env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    let c: Conf = parse(v)?;
    let header = HeaderName::from_bytes(c.header.to_ascii_lowercase().as_bytes())
        .map_err(|_| PluginError::new("header", "not a valid header name"))?;
    let challenge = HeaderValue::from_str(&format!("apikey realm=\"{}\"", c.realm))
        .map_err(|_| PluginError::new("realm", "not printable ASCII"))?;
    if c.realm.contains(['"', '\\']) {
        return Err(PluginError::new("realm", "must not hold \" or \\"));
    }
    let keys = env.shared("key-auth", || {
        let mut keys = Keys::new();
        for (consumer, plugins) in env.consumers {
            if let Some(Ok(cred)) = plugins.get("key-auth").map(parse::<Credential>) {
                keys.entry(cred.key).or_insert_with(|| consumer.clone());
            }
        }
        keys
    });
    Ok(Arc::new(KeyAuth {
        header,
        query: c.query.as_str().into(),
        hide: c.hide_credentials,
        challenge,
        keys,
    }))
}

/// The compiled plugin.
struct KeyAuth {
    header: HeaderName,
    query: Arc<str>,
    hide: bool,
    challenge: HeaderValue,
    keys: Arc<Keys>,
}

impl std::fmt::Debug for KeyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("KeyAuth")
            .field("header", &self.header)
            .field("query", &self.query)
            .field("consumers", &self.keys.len())
            .finish()
    }
}

impl KeyAuth {
    fn deny(&self, message: &str, cx: &mut PluginCtx) -> Flow {
        super::consumer::refuse("key-auth", message, None, &self.challenge, cx)
    }
}

#[async_trait]
impl Plugin for KeyAuth {
    fn name(&self) -> &'static str {
        "key-auth"
    }

    fn phases(&self) -> Phases {
        Phases {
            rewrite: true,
            upstream_request: true,
            ..Phases::default()
        }
    }

    fn rewrite(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        let from_header = req.headers.get(&self.header).map(|v| v.as_bytes());
        let found = match from_header {
            Some(v) => std::str::from_utf8(v).ok().and_then(|k| self.keys.get(k)),
            None => match query_arg(req.uri.query().unwrap_or(""), &self.query) {
                Some(k) => {
                    cx.secret_args.push(self.query.clone());
                    self.keys.get(k.as_ref())
                }
                None => return self.deny("Missing API key in request", cx),
            },
        };
        match found {
            Some(consumer) => {
                cx.consumer = Some(consumer.clone());
                Flow::Continue
            }
            None => self.deny("Invalid API key in request", cx),
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
            if req.headers.contains_key(&self.header) {
                req.remove_header(&self.header);
            } else if let Some(q) = req.uri.query() {
                let kept = remove_query_arg(q, &self.query);
                let uri = match kept.is_empty() {
                    true => req.uri.path().to_string(),
                    false => format!("{}?{kept}", req.uri.path()),
                };
                if let Ok(uri) = uri.parse() {
                    req.set_uri(uri);
                }
            }
        }
        Ok(())
    }
}

/// `query` without the arguments named `name`.
pub fn remove_query_arg(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn plugin(conf: Value) -> Arc<dyn Plugin> {
        let consumers = super::super::registry::consumers([(
            "jack".to_string(),
            BTreeMap::from([("key-auth".to_string(), json!({"key": "auth-one"}))]),
        )]);
        compile(&conf, &Env::new(&consumers)).unwrap()
    }

    fn run(p: &Arc<dyn Plugin>, uri: &str, header: Option<&str>) -> (Flow, PluginCtx) {
        let mut req = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
        if let Some(h) = header {
            req.insert_header("apikey", h).unwrap();
        }
        let mut cx = PluginCtx::default();
        (p.rewrite(&req, &mut cx), cx)
    }

    #[test]
    fn a_key_in_the_header_or_query_names_the_consumer() {
        let p = plugin(json!({}));
        let (flow, cx) = run(&p, "/a", Some("auth-one"));
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(cx.consumer.unwrap().username, "jack");
        let (flow, cx) = run(&p, "/a?x=1&apikey=auth-one", None);
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(cx.consumer.unwrap().username, "jack");
    }

    #[test]
    fn missing_and_wrong_keys_get_401_with_apisix_messages() {
        let p = plugin(json!({}));
        let Flow::Reply(r) = run(&p, "/a", None).0 else {
            panic!("no reply")
        };
        assert_eq!(r.status, 401);
        assert_eq!(
            &r.body[..],
            b"{\"message\":\"Missing API key in request\"}\n"
        );
        let Flow::Reply(r) = run(&p, "/a", Some("nope")).0 else {
            panic!("no reply")
        };
        assert_eq!(
            &r.body[..],
            b"{\"message\":\"Invalid API key in request\"}\n"
        );
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let consumers = Vec::new();
        let e = compile(&json!({"header": 5}), &Env::new(&consumers)).unwrap_err();
        assert_eq!(e.path, "header");
        assert_eq!(credential(&json!({})).unwrap_err().path, "");
        assert_eq!(credential(&json!({"key": ""})).unwrap_err().path, "key");
    }

    #[test]
    fn hidden_query_keys_are_removed() {
        assert_eq!(remove_query_arg("a=1&apikey=k&b=2", "apikey"), "a=1&b=2");
        assert_eq!(remove_query_arg("apikey=k", "apikey"), "");
    }
}
