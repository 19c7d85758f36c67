//! The resources file as the admin API sees it: per kind, a list of JSON objects in file
//! order, exactly as written (raw `serde_json` values, not the typed model, so fields come
//! back as they were given and the typed model needs no `Serialize`). Typed checks happen
//! when the rendered file is parsed and compiled (see `super::api`).

use serde_json::{Map, Value};

pub use crate::config::kind::Kind;

/// An object's `id` as text: APISIX ids are strings or integers.
pub fn id_text(v: &Value) -> Option<String> {
    match v.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `value` with `id` set (from an etcd key) when it has none.
pub fn with_id(mut value: Value, id: &str) -> Value {
    if let Value::Object(m) = &mut value {
        m.entry("id")
            .or_insert_with(|| Value::String(id.to_string()));
    }
    value
}

/// Whether `id` is acceptable in a URL and a file: 1–64 characters of `[a-zA-Z0-9-_.]`
/// (APISIX's `id_schema`), but not `.` or `..`.
pub fn valid_id(id: &str) -> bool {
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

    /// The position of the object of `kind` whose id is `id`.
    pub fn position(&self, kind: Kind, id: &str) -> Option<usize> {
        self.lists[kind.index()]
            .iter()
            .position(|v| id_text(v).as_deref() == Some(id))
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
    /// `upstream_id`, upstreams (named or inline) through `tls.client_cert_id` and
    /// `tls.ca_certificate_id`.
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
                    _ => false,
                };
                let via_tls = if from == Kind::Upstreams {
                    upstream_refers(Some(v))
                } else {
                    upstream_refers(v.get("upstream"))
                };
                if direct || via_tls {
                    let rid = id_text(v).unwrap_or_default();
                    out.push(format!("{}[{i}] (id {rid})", from.segment()));
                }
            }
        }
        out
    }
}

/// The credential fields of a consumer's authentication plugin (APISIX's `encrypt_fields`):
/// never returned by the API.
pub fn credential_fields(plugin: &str) -> Option<&'static [&'static str]> {
    match plugin {
        "key-auth" => Some(&["key"]),
        "basic-auth" => Some(&["password"]),
        "jwt-auth" => Some(&["secret", "private_key"]),
        _ => None,
    }
}

/// The secret fields of a route-side plugin configuration (APISIX's `encrypt_fields`): never
/// returned by the API.
pub fn plugin_secret_fields(plugin: &str) -> Option<&'static [&'static str]> {
    match plugin {
        "limit-count" | "limit-req" | "limit-conn" => Some(&["redis_password"]),
        _ => None,
    }
}

/// Fields holding private keys or their passphrases: never returned by the API.
const SECRET_SSL_FIELDS: &[&str] = &["key", "keys", "key_passphrase"];
const SECRET_TLS_FIELDS: &[&str] = &["client_key", "client_key_passphrase"];

/// A copy of `value` (an object of `kind`) without private keys and passphrases: `key`,
/// `keys` and `key_passphrase` of ssls; `tls.client_key` and `tls.client_key_passphrase` of
/// upstreams, named or inline in a route or service. They are left out, not masked. Any
/// other string holding a private key (one pasted into a certificate field, which validation
/// refuses but etcd may hold) is left out too.
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
        Kind::Consumers => {
            if let Some(Value::Object(plugins)) = v.get_mut("plugins") {
                for (name, conf) in plugins.iter_mut() {
                    if let Some(fields) = credential_fields(name) {
                        strip(Some(conf), fields);
                    }
                }
            }
        }
        Kind::PluginConfigs | Kind::GlobalRules | Kind::CaCertificates => {}
    }
    if matches!(
        kind,
        Kind::Routes | Kind::Services | Kind::PluginConfigs | Kind::GlobalRules
    ) {
        if let Some(Value::Object(plugins)) = v.get_mut("plugins") {
            for (name, conf) in plugins.iter_mut() {
                if let Some(fields) = plugin_secret_fields(name) {
                    strip(Some(conf), fields);
                }
            }
        }
    }
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
        let route = json!({"plugins": {"limit-count": {"count": 1, "redis_password": "pw"}}});
        let out = redact(Kind::Routes, &route);
        assert_eq!(out["plugins"]["limit-count"], json!({"count": 1}));
    }

    #[test]
    fn ids() {
        assert!(valid_id("mtls-nginx") && valid_id("1") && valid_id("a.b_c"));
        assert!(!valid_id("") && !valid_id("a/b") && !valid_id(&"x".repeat(65)));
        assert!(!valid_id(".") && !valid_id("..") && valid_id("..."));
        assert_eq!(id_text(&json!({"id": 7})).as_deref(), Some("7"));
    }
}
