//! The plugin registry: every plugin Pylon has, by APISIX name, with APISIX's priority and
//! the function that checks and compiles its configuration.

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    basic_auth, consumer, consumer_restriction, cors, ip_restriction, jwt_auth, key_auth,
    limit_conn, limit_count, limit_req, proxy_rewrite, real_ip, redirect, request_id,
    response_rewrite, Consumer, Entry, Plugin,
};
use crate::config::kind::Kind;
use crate::config::secrets;

/// A problem in one plugin's configuration, at a path relative to that configuration
/// (`count`, `headers.set`); the caller prefixes where the plugin map is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PluginError {
    /// Dotted path inside the plugin's configuration; empty for the whole of it.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl PluginError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> PluginError {
        PluginError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Compiles a route-side configuration into the plugin.
pub type CompileFn = fn(&Value, &Env) -> Result<Arc<dyn Plugin>, PluginError>;
/// Checks a consumer-side configuration (the credential), for authentication plugins.
pub type CredentialFn = fn(&Value) -> Result<(), PluginError>;

/// One plugin Pylon has.
pub struct Spec {
    /// APISIX's name.
    pub name: &'static str,
    /// APISIX's default priority (its `config.yaml` plugin list): higher runs first.
    pub priority: i32,
    /// Checks and compiles a route/service/plugin-config/global-rule configuration.
    pub compile: CompileFn,
    /// For authentication plugins: checks a consumer's credential.
    pub credential: Option<CredentialFn>,
}

/// Every plugin Pylon has. A new plugin adds its line here.
pub static REGISTRY: &[Spec] = &[
    key_auth::SPEC,
    limit_count::SPEC,
    proxy_rewrite::SPEC,
    basic_auth::SPEC,
    jwt_auth::SPEC,
    consumer_restriction::SPEC,
    ip_restriction::SPEC,
    real_ip::SPEC,
    response_rewrite::SPEC,
    redirect::SPEC,
    cors::SPEC,
    request_id::SPEC,
    limit_req::SPEC,
    limit_conn::SPEC,
];

static IGNORE_UNKNOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets `gateway.ignore_unknown_plugins` (a static setting, read at startup): unknown plugin
/// names are then skipped with a warning instead of refusing the configuration.
pub fn set_unknown_plugins_ignored(ignore: bool) {
    IGNORE_UNKNOWN.store(ignore, std::sync::atomic::Ordering::Relaxed);
}

/// Whether unknown plugin names are skipped (see [`set_unknown_plugins_ignored`]).
pub fn unknown_plugins_ignored() -> bool {
    IGNORE_UNKNOWN.load(std::sync::atomic::Ordering::Relaxed)
}

/// The plugin named `name`.
pub fn find(name: &str) -> Option<&'static Spec> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// What compiling a plugin may need beyond its own configuration.
pub struct Env<'a> {
    /// Every consumer, with its plugin map (credentials are read at compile only).
    pub consumers: &'a [(Arc<Consumer>, BTreeMap<String, Value>)],
    /// Who owns the plugin map being compiled (`route/1`, `global_rule/g`): counters are
    /// kept per owner, as APISIX keys them by `conf_type` and `conf_id`.
    pub owner: String,
    /// Lookup tables built once per configuration and shared by every route (the key-auth
    /// key → consumer map).
    shared: std::rc::Rc<RefCell<HashMap<&'static str, Arc<dyn Any + Send + Sync>>>>,
}

impl<'a> Env<'a> {
    /// An environment over `consumers`.
    pub fn new(consumers: &'a [(Arc<Consumer>, BTreeMap<String, Value>)]) -> Env<'a> {
        Env {
            consumers,
            owner: String::new(),
            shared: Default::default(),
        }
    }

    /// The same environment (and lookup tables) for another owner (`route/1`).
    pub fn for_owner(&self, owner: String) -> Env<'a> {
        Env {
            consumers: self.consumers,
            owner,
            shared: self.shared.clone(),
        }
    }

    /// The table `name` built by `build` the first time it is asked for in this
    /// configuration.
    pub fn shared<T: Any + Send + Sync>(
        &self,
        name: &'static str,
        build: impl FnOnce() -> T,
    ) -> Arc<T> {
        if let Some(v) = self.shared.borrow().get(name) {
            if let Ok(t) = v.clone().downcast::<T>() {
                return t;
            }
        }
        let t = Arc::new(build());
        self.shared.borrow_mut().insert(name, t.clone());
        t
    }
}

type Kept = Mutex<HashMap<String, Weak<dyn Any + Send + Sync>>>;
static KEPT: std::sync::OnceLock<Kept> = std::sync::OnceLock::new();

/// State that outlives a configuration change while the plugin's configuration stays the
/// same (a `limit-count` window survives a reload that changed another route): the state
/// stored under `key` while some configuration still holds it, else a new one from `make`.
pub fn keep<T: Any + Send + Sync>(key: String, make: impl FnOnce() -> T) -> Arc<T> {
    let kept = KEPT.get_or_init(Kept::default);
    let mut map = kept.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = map
        .get(&key)
        .and_then(Weak::upgrade)
        .and_then(|v| v.downcast::<T>().ok())
    {
        return t;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let t = Arc::new(make());
    let weak: Weak<dyn Any + Send + Sync> =
        Arc::downgrade(&(t.clone() as Arc<dyn Any + Send + Sync>));
    map.insert(key, weak);
    t
}

/// Reads a plugin configuration into `T` (serde, with APISIX's defaults as serde defaults).
///
/// Errors: the first field that does not fit, with its path.
pub fn parse<T: DeserializeOwned>(v: &Value) -> Result<T, PluginError> {
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        PluginError::new(path, e.into_inner().to_string())
    })
}

/// What [`compile_map`] found.
#[derive(Default)]
pub struct Compiled {
    /// The enabled plugins.
    pub entries: Vec<Entry>,
    /// Problems, at paths relative to the map (`limit-count.count`).
    pub problems: Vec<PluginError>,
    /// Warnings (unknown plugins skipped), relative to the map.
    pub warnings: Vec<PluginError>,
}

/// `_meta`: APISIX's per-plugin settings that are not the plugin's own.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Meta {
    /// `_meta.disable`: the plugin is configured but does not run.
    #[serde(default)]
    disable: bool,
    /// `_meta.priority`: replaces the plugin's default priority.
    priority: Option<i32>,
}

/// Checks and compiles a plugin map (`plugins:` of a route, service, plugin config or global
/// rule). An unknown name is a problem, or with `ignore_unknown` a warning (the plugin is
/// left out). `_meta.disable: true` leaves a plugin out after checking it.
pub fn compile_map(map: &BTreeMap<String, Value>, env: &Env, ignore_unknown: bool) -> Compiled {
    let mut out = Compiled::default();
    for (name, conf) in map {
        let Some(spec) = find(name) else {
            let msg = "unknown plugin (Pylon's plugins are listed in docs/plugins.md)";
            if ignore_unknown {
                out.warnings
                    .push(PluginError::new(name.clone(), format!("{msg}: ignored")));
            } else {
                out.problems.push(PluginError::new(name.clone(), msg));
            }
            continue;
        };
        let (conf, meta) = match split_meta(conf) {
            Ok(x) => x,
            Err(e) => {
                out.problems.push(under(name, e));
                continue;
            }
        };
        match (spec.compile)(&conf, env) {
            Ok(plugin) if !meta.disable => out.entries.push(Entry {
                plugin,
                priority: meta.priority.unwrap_or(spec.priority),
            }),
            Ok(_) => {}
            Err(e) => out
                .problems
                .push(under(name, hide_secret(name, Kind::Routes, e))),
        }
    }
    out
}

/// Checks a consumer's plugin map: only authentication plugins, each with a valid
/// credential.
pub fn check_credentials(map: &BTreeMap<String, Value>) -> Vec<PluginError> {
    let mut problems = Vec::new();
    for (name, conf) in map {
        match find(name).map(|s| s.credential) {
            None => problems.push(PluginError::new(name.clone(), "unknown plugin")),
            Some(None) => problems.push(PluginError::new(
                name.clone(),
                "not an authentication plugin: Pylon runs only credentials (key-auth, \
                 basic-auth, jwt-auth) from consumers",
            )),
            Some(Some(check)) => {
                if let Err(e) = split_meta(conf).and_then(|(c, _)| check(&c)) {
                    problems.push(under(name, hide_secret(name, Kind::Consumers, e)));
                }
            }
        }
    }
    problems
}

/// `e` without the value it quotes when it is about a secret field of `plugin` (APISIX's
/// `encrypt_fields`, see [`crate::config::secrets`]): serde quotes a value of the wrong type
/// (``invalid type: integer `12345`, expected a string``), and problems are logged and
/// returned by the admin API, where a credential must never appear.
fn hide_secret(plugin: &str, kind: Kind, e: PluginError) -> PluginError {
    let secret = secrets::fields(plugin, kind, secrets::Use::Read)
        .iter()
        .any(|f| {
            e.path == *f
                || e.path
                    .strip_prefix(f)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        });
    if secret && e.message.contains(['`', '"']) {
        PluginError::new(e.path, "invalid value (not shown: it is a secret)")
    } else {
        e
    }
}

fn under(name: &str, e: PluginError) -> PluginError {
    let path = if e.path.is_empty() {
        name.to_string()
    } else {
        format!("{name}.{}", e.path)
    };
    PluginError::new(path, e.message)
}

fn split_meta(conf: &Value) -> Result<(Value, Meta), PluginError> {
    let Value::Object(m) = conf else {
        return Err(PluginError::new("", "must be an object"));
    };
    let mut m = m.clone();
    let meta = match m.shift_remove("_meta") {
        None | Some(Value::Null) => Meta::default(),
        Some(v) => parse::<Meta>(&v).map_err(|e| under("_meta", e))?,
    };
    Ok((Value::Object(m), meta))
}

/// The consumers as plugins see them, from `(username, plugins)` pairs.
pub fn consumers(
    list: impl IntoIterator<Item = (String, BTreeMap<String, Value>)>,
) -> Vec<(Arc<Consumer>, BTreeMap<String, Value>)> {
    list.into_iter()
        .map(|(name, plugins)| (Arc::new(consumer::Consumer::new(&name)), plugins))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credential_values_are_not_quoted_in_problems() {
        let map: BTreeMap<String, Value> = [("key-auth".to_string(), json!({"key": 98765}))].into();
        let p = check_credentials(&map);
        assert_eq!(p[0].path, "key-auth.key");
        assert!(!p[0].message.contains("98765"), "{}", p[0].message);
        // Other fields keep serde's message.
        let map: BTreeMap<String, Value> =
            [("key-auth".to_string(), json!({"key": "k", "bogus": 1}))].into();
        assert!(check_credentials(&map)[0].message.contains("bogus"));
    }
}
