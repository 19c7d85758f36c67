//! The resources file as the admin API sees it: per kind, a list of JSON objects in file
//! order, exactly as written (raw `serde_json` values, not the typed model, so fields come
//! back as they were given and the typed model needs no `Serialize`). Typed checks happen
//! when the rendered file is parsed and compiled (see `super::api`).

use serde_json::{Map, Value};

pub use crate::config::kind::Kind;
use crate::config::secrets;

/// The name of an object of `kind` as text: its `id`, or for consumers its `username`
/// ([`Kind::id_field`]). APISIX ids are strings or integers.
pub fn id_text(kind: Kind, v: &Value) -> Option<String> {
    match v.get(kind.id_field())? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `value` with its name field ([`Kind::id_field`]) set to `id` (from an etcd key) when it
/// has none.
pub fn with_id(kind: Kind, mut value: Value, id: &str) -> Value {
    if let Value::Object(m) = &mut value {
        m.entry(kind.id_field())
            .or_insert_with(|| Value::String(id.to_string()));
    }
    value
}

/// Whether `id` is acceptable as the name of an object of `kind`, in a URL, a file and an
/// etcd key. Ids: 1–64 characters of `[a-zA-Z0-9-_.]` (APISIX's `id_schema`), but not `.` or
/// `..`. Consumer usernames: 1–100 characters of `[a-zA-Z0-9_-]` (APISIX's consumer schema).
pub fn valid_id(kind: Kind, id: &str) -> bool {
    if kind == Kind::Consumers {
        return (1..=100).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    }
    // `.` and `..` would make odd URLs and etcd keys (`/apisix/routes/..`).
    (1..=64).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The resources file's objects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Doc {
    lists: [Vec<Value>; Kind::COUNT],
}

impl Doc {
    /// Reads resources-file text (YAML). An empty file, or one holding only comments, is an
    /// empty document.
    ///
    /// Errors: text that is not YAML of the resources file's shape (message).
    pub fn parse(text: &[u8]) -> Result<Doc, String> {
        let text = std::str::from_utf8(text).map_err(|e| format!("not UTF-8: {e}"))?;
        let mut doc = Doc::default();
        let blank = text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        if blank {
            return Ok(doc);
        }
        let top: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let top = match top {
            Value::Object(m) => m,
            Value::Null => return Ok(doc),
            _ => return Err("the resources file is not a mapping".into()),
        };
        for (key, list) in top {
            let kind = Kind::from_segment(&key).ok_or_else(|| format!("unknown field {key}"))?;
            doc.lists[kind.index()] = match list {
                Value::Array(items) => items,
                Value::Null => Vec::new(),
                _ => return Err(format!("{key}: not a list")),
            };
        }
        Ok(doc)
    }

    /// The resources file text: YAML in the resources format, kinds in file order (empty
    /// ones left out), ending with APISIX's `#END` line.
    ///
    /// Errors: a value YAML cannot hold (not expected from JSON input).
    pub fn render(&self) -> Result<String, String> {
        let mut top = Map::new();
        for kind in Kind::ALL {
            let list = &self.lists[kind.index()];
            if !list.is_empty() {
                top.insert(kind.segment().into(), Value::Array(list.clone()));
            }
        }
        let body = if top.is_empty() {
            String::new()
        } else {
            serde_yaml::to_string(&top).map_err(|e| e.to_string())?
        };
        Ok(format!(
            "# Written by the Pylon admin API. Hand edits are picked up, but comments are not \
             kept.\n{body}#END\n"
        ))
    }

    /// The objects of `kind`, in file order.
    pub fn list(&self, kind: Kind) -> &[Value] {
        &self.lists[kind.index()]
    }

    /// The position of the object of `kind` whose id (username for consumers) is `id`.
    pub fn position(&self, kind: Kind, id: &str) -> Option<usize> {
        self.lists[kind.index()]
            .iter()
            .position(|v| id_text(kind, v).as_deref() == Some(id))
    }

    /// The object of `kind` with `id`.
    pub fn get(&self, kind: Kind, id: &str) -> Option<&Value> {
        self.position(kind, id)
            .map(|i| &self.lists[kind.index()][i])
    }

    /// Replaces the object with the same id in place, or appends it. Returns its position.
    pub fn put(&mut self, kind: Kind, id: &str, value: Value) -> usize {
        match self.position(kind, id) {
            Some(i) => {
                self.lists[kind.index()][i] = value;
                i
            }
            None => {
                self.lists[kind.index()].push(value);
                self.lists[kind.index()].len() - 1
            }
        }
    }

    /// Appends an object of `kind` (as read from a keyed store, in key order).
    pub fn push(&mut self, kind: Kind, value: Value) {
        self.lists[kind.index()].push(value);
    }

    /// Removes the object of `kind` with `id`; returns it.
    pub fn remove(&mut self, kind: Kind, id: &str) -> Option<Value> {
        let i = self.position(kind, id)?;
        Some(self.lists[kind.index()].remove(i))
    }

    /// Every object that refers to the object of `kind` with `id`, as
    /// `services[0] (id mtls-nginx)`: routes and services through `service_id` /
    /// `upstream_id`, routes through `plugin_config_id` (APISIX refuses to delete a plugin
    /// config a route uses), upstreams (named or inline) through `tls.client_cert_id` and
    /// `tls.ca_certificate_id`. Nothing refers to consumers or global rules.
    pub fn referrers(&self, kind: Kind, id: &str) -> Vec<String> {
        let is = |v: Option<&Value>| {
            matches!(v, Some(Value::String(s)) if s == id)
                || matches!(v, Some(Value::Number(n)) if n.to_string() == id)
        };
        let tls_field = match kind {
            Kind::Ssls => Some("client_cert_id"),
            Kind::CaCertificates => Some("ca_certificate_id"),
            _ => None,
        };
        let upstream_refers = |up: Option<&Value>| {
            tls_field.is_some_and(|f| is(up.and_then(|u| u.get("tls")).and_then(|t| t.get(f))))
        };
        let mut out = Vec::new();
        for from in [Kind::Routes, Kind::Services, Kind::Upstreams] {
            for (i, v) in self.list(from).iter().enumerate() {
                let direct = match kind {
                    Kind::Services => from == Kind::Routes && is(v.get("service_id")),
                    Kind::Upstreams => from != Kind::Upstreams && is(v.get("upstream_id")),
                    Kind::PluginConfigs => from == Kind::Routes && is(v.get("plugin_config_id")),
                    _ => false,
                };
                let via_tls = if from == Kind::Upstreams {
                    upstream_refers(Some(v))
                } else {
                    upstream_refers(v.get("upstream"))
                };
                if direct || via_tls {
                    let rid = id_text(from, v).unwrap_or_default();
                    out.push(format!("{}[{i}] (id {rid})", from.segment()));
                }
            }
        }
        out
    }
}

/// Fields holding private keys or their passphrases: never returned by the API.
const SECRET_SSL_FIELDS: &[&str] = &["key", "keys", "key_passphrase"];
const SECRET_TLS_FIELDS: &[&str] = &["client_key", "client_key_passphrase"];

/// A copy of `value` (an object of `kind`) without secrets: `key`, `keys` and
/// `key_passphrase` of ssls; `tls.client_key` and `tls.client_key_passphrase` of upstreams,
/// named or inline in a route or service; and the plugin secrets of every `plugins` map
/// (APISIX's `encrypt_fields`, see [`crate::config::secrets`]: a consumer's key-auth `key`,
/// basic-auth `password`, jwt-auth `secret` and `private_key`, limit-count's
/// `redis_password`, …). They are left out, not masked. Any other string holding a private
/// key (one pasted into a certificate field, which validation refuses but etcd may hold) is
/// left out too.
pub fn redact(kind: Kind, value: &Value) -> Value {
    let mut v = value.clone();
    let strip = |obj: Option<&mut Value>, fields: &[&str]| {
        if let Some(Value::Object(m)) = obj {
            for f in fields {
                m.shift_remove(*f);
            }
        }
    };
    match kind {
        Kind::Ssls => strip(Some(&mut v), SECRET_SSL_FIELDS),
        Kind::Upstreams => strip(v.get_mut("tls"), SECRET_TLS_FIELDS),
        Kind::Routes | Kind::Services => strip(
            v.get_mut("upstream").and_then(|u| u.get_mut("tls")),
            SECRET_TLS_FIELDS,
        ),
        Kind::Consumers | Kind::PluginConfigs | Kind::GlobalRules | Kind::CaCertificates => {}
    }
    secrets::strip(kind, &mut v);
    drop_key_material(&mut v);
    v
}

/// Removes every string that holds a private key, wherever it is.
fn drop_key_material(v: &mut Value) {
    let holds =
        |x: &Value| matches!(x, Value::String(s) if crate::tls::holds_private_key(s.as_bytes()));
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !holds(x));
            m.values_mut().for_each(drop_key_material);
        }
        Value::Array(a) => {
            a.retain(|x| !holds(x));
            a.iter_mut().for_each(drop_key_material);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = "routes:\n  - id: 1\n    uri: /a\n    service_id: s\nservices:\n  - id: s\n    upstream_id: u\n    upstream:\n      nodes: {}\n      tls: { client_cert_id: c, client_key: SECRET }\nupstreams:\n  - id: u\n    nodes: { \"127.0.0.1:80\": 1 }\n    tls: { ca_certificate_id: ca }\nssls:\n  - id: c\n    type: client\n    cert: x\n    key: SECRET\n#END\n";

    #[test]
    fn parse_render_round_trip() {
        let doc = Doc::parse(FILE.as_bytes()).unwrap();
        assert_eq!(doc.list(Kind::Routes).len(), 1);
        assert_eq!(doc.get(Kind::Routes, "1").unwrap()["uri"], "/a");
        let text = doc.render().unwrap();
        assert!(text.ends_with("#END\n"), "{text}");
        assert_eq!(Doc::parse(text.as_bytes()).unwrap(), doc);
        assert_eq!(Doc::parse(b"#END\n").unwrap(), Doc::default());
        assert_eq!(Doc::parse(b"").unwrap(), Doc::default());
        assert_eq!(
            Doc::parse(Doc::default().render().unwrap().as_bytes()).unwrap(),
            Doc::default()
        );
        assert!(Doc::parse(b"plugins: []\n").is_err());
    }

    #[test]
    fn referrers_name_index_and_id() {
        let doc = Doc::parse(FILE.as_bytes()).unwrap();
        assert_eq!(
            doc.referrers(Kind::Upstreams, "u"),
            vec!["services[0] (id s)"]
        );
        assert_eq!(doc.referrers(Kind::Services, "s"), vec!["routes[0] (id 1)"]);
        assert_eq!(doc.referrers(Kind::Ssls, "c"), vec!["services[0] (id s)"]);
        assert_eq!(
            doc.referrers(Kind::CaCertificates, "ca"),
            vec!["upstreams[0] (id u)"]
        );
        assert!(doc.referrers(Kind::Routes, "1").is_empty());
    }

    #[test]
    fn put_replaces_in_place_and_remove() {
        let mut doc = Doc::parse(FILE.as_bytes()).unwrap();
        assert_eq!(doc.put(Kind::Routes, "2", json!({"id": "2"})), 1);
        assert_eq!(doc.put(Kind::Routes, "1", json!({"id": 1, "uri": "/b"})), 0);
        assert_eq!(doc.get(Kind::Routes, "1").unwrap()["uri"], "/b");
        assert!(doc.remove(Kind::Routes, "1").is_some());
        assert!(doc.remove(Kind::Routes, "1").is_none());
    }

    #[test]
    fn secrets_are_left_out() {
        let doc = Doc::parse(FILE.as_bytes()).unwrap();
        let ssl = redact(Kind::Ssls, doc.get(Kind::Ssls, "c").unwrap());
        assert!(ssl.get("key").is_none() && ssl.get("cert").is_some());
        let svc = redact(Kind::Services, doc.get(Kind::Services, "s").unwrap());
        assert!(!svc.to_string().contains("SECRET"), "{svc}");
        assert_eq!(svc["upstream"]["tls"]["client_cert_id"], "c");
        // Key-like text built at run time: no PEM key block stands in the source.
        let block = |kind: &str| format!("-----BEGIN {kind}-----\nx");
        let pasted = json!({"cert": block("PRIVATE KEY"), "certs": [block("RSA PRIVATE KEY")]});
        let out = redact(Kind::CaCertificates, &pasted);
        assert!(!out.to_string().contains("PRIVATE"), "{out}");
    }

    #[test]
    fn ids() {
        let r = |id: &str| valid_id(Kind::Routes, id);
        assert!(r("mtls-nginx") && r("1") && r("a.b_c"));
        assert!(!r("") && !r("a/b") && !r(&"x".repeat(65)));
        assert!(!r(".") && !r("..") && r("..."));
        assert_eq!(
            id_text(Kind::Routes, &json!({"id": 7})).as_deref(),
            Some("7")
        );
        // Consumers are named by username: [a-zA-Z0-9_-], up to 100.
        let c = |id: &str| valid_id(Kind::Consumers, id);
        assert!(c("jack") && c("Jack_2-b") && c(&"x".repeat(100)));
        assert!(!c("") && !c("a.b") && !c("a/b") && !c(&"x".repeat(101)));
        let jack = json!({"username": "jack", "id": "other"});
        assert_eq!(id_text(Kind::Consumers, &jack).as_deref(), Some("jack"));
        assert_eq!(
            with_id(Kind::Consumers, json!({"plugins": {}}), "jack"),
            json!({"plugins": {}, "username": "jack"})
        );
    }

    #[test]
    fn consumers_by_username_and_plugin_config_referrers() {
        let mut doc = Doc::parse(
            b"consumers:\n  - username: jack\n    plugins: { key-auth: { key: k1 } }\n\
              plugin_configs:\n  - id: 1\n    plugins: {}\n\
              routes:\n  - id: r\n    uri: /a\n    plugin_config_id: 1\n",
        )
        .unwrap();
        assert!(doc.get(Kind::Consumers, "jack").is_some());
        assert_eq!(
            doc.referrers(Kind::PluginConfigs, "1"),
            vec!["routes[0] (id r)"]
        );
        assert!(doc.referrers(Kind::Consumers, "jack").is_empty());
        doc.put(Kind::Consumers, "rose", json!({"username": "rose"}));
        assert_eq!(doc.list(Kind::Consumers).len(), 2);
        assert!(doc.remove(Kind::Consumers, "jack").is_some());
    }

    #[test]
    fn credentials_are_left_out() {
        let c = json!({"username": "jack", "plugins": {
            "key-auth": {"key": "auth-one"},
            "jwt-auth": {"key": "user-key", "secret": "s3", "private_key": "pk"}}});
        let out = redact(Kind::Consumers, &c);
        assert_eq!(
            out,
            json!({"username": "jack", "plugins": {"key-auth": {}, "jwt-auth": {"key": "user-key"}}})
        );
        let route = json!({"plugins": {"limit-count": {"count": 1, "redis_password": "rp"}}});
        assert_eq!(
            redact(Kind::Routes, &route),
            json!({"plugins": {"limit-count": {"count": 1}}})
        );
    }
}
