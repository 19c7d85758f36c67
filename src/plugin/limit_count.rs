//! `limit-count` (APISIX, priority 1002): at most `count` requests per `time_window`
//! seconds for each key (by default the client address), in fixed windows. A window starts
//! with the first request of its key.
//!
//! Within the limit the response carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (seconds until the window ends); beyond it the request gets
//! `rejected_code` (503 by default) with `{"error_msg":"<rejected_msg>"}` when a message is
//! set, an empty body otherwise, and `X-RateLimit-Remaining: 0`.
//!
//! `policy: local` counts in this process; counters are per route (`group` shares one
//! across routes) and survive a configuration change that leaves this plugin's
//! configuration as it was. `policy: redis` counts in Redis, shared by every gateway that
//! uses the same Redis ([`super::limit_count_redis`]); when Redis cannot answer within
//! `redis_timeout`, the request gets 500 `{"error_msg":"failed to limit count"}`, or goes
//! through with `allow_degradation: true` (APISIX's behaviour).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::Value;

use super::limit_count_redis::RedisWindows;
use super::redis::{check_policy, RedisConf};
use super::registry::{keep, parse, Env, PluginError, Spec};
use super::vars::{Template, Var};
use super::{Flow, Phases, Plugin, PluginCtx, Reply};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "limit-count",
    priority: 1002,
    compile,
    credential: None,
};

/// APISIX's schema (the fields Pylon has).
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Conf {
    /// Requests allowed per window; integer > 0.
    pub count: u64,
    /// Window length in seconds; integer > 0.
    pub time_window: u64,
    /// `var` (default: `key` names a variable), `var_combination` (`key` is a string with
    /// `$variables`) or `constant` (`key` is the key).
    #[serde(default = "var")]
    pub key_type: String,
    /// Default `remote_addr`.
    #[serde(default = "remote_addr")]
    pub key: String,
    /// Status when over the limit; 200–599, default 503.
    #[serde(default = "rejected_code")]
    pub rejected_code: u16,
    /// Body message when over the limit (`{"error_msg": ...}`); none by default.
    pub rejected_msg: Option<String>,
    /// `local` (default) or `redis` (with the `redis_*` fields of [`RedisConf`]).
    #[serde(default = "local")]
    pub policy: String,
    /// Routes with the same group share one counter.
    pub group: Option<String>,
    /// Let requests through when the counter cannot be reached (Redis down). Default false.
    #[serde(default)]
    pub allow_degradation: bool,
    /// Send the `X-RateLimit-*` headers. Default true.
    #[serde(default = "yes")]
    pub show_limit_quota_header: bool,
    /// `fixed` only (APISIX also has `sliding`).
    #[serde(default = "fixed")]
    pub window_type: String,
}

fn var() -> String {
    "var".into()
}
fn remote_addr() -> String {
    "remote_addr".into()
}
fn rejected_code() -> u16 {
    503
}
fn local() -> String {
    "local".into()
}
fn yes() -> bool {
    true
}
fn fixed() -> String {
    "fixed".into()
}

/// How a request's counting key is found (`key_type` + `key`), parsed once.
#[derive(Debug, Clone)]
pub enum Key {
    /// One variable; unset → the client address.
    Var(Var),
    /// A template; no variable set → the client address.
    Combination(Template),
    /// The same key for every request.
    Constant(String),
}

impl Key {
    /// Parses `key_type` and `key` (APISIX `limit-count`, `limit-req`, `limit-conn`).
    ///
    /// Errors: an unknown key type or variable, at `key_type` or `key`.
    pub fn parse(key_type: &str, key: &str) -> Result<Key, PluginError> {
        match key_type {
            "var" => Var::parse(key.trim_start_matches('$'))
                .map(Key::Var)
                .map_err(|e| PluginError::new("key", e)),
            "var_combination" => Template::parse(key)
                .map(Key::Combination)
                .map_err(|e| PluginError::new("key", e)),
            "constant" => Ok(Key::Constant(key.to_string())),
            other => Err(PluginError::new(
                "key_type",
                format!("{other:?} is not one of var, var_combination, constant"),
            )),
        }
    }

    /// This request's key, appended to `out`.
    pub fn append(&self, req: &RequestHeader, cx: &PluginCtx, out: &mut String) {
        let start = out.len();
        match self {
            Key::Var(v) => v.append(req, cx, out),
            Key::Combination(t) => t.render_into(req, cx, out),
            Key::Constant(k) => out.push_str(k),
        }
        if out.len() == start {
            Var::RemoteAddr.append(req, cx, out);
        }
    }
}

/// Fixed-window counters kept in this process, sharded to keep lock holds short.
#[derive(Debug)]
pub struct LocalWindows {
    shards: Vec<Mutex<HashMap<String, (Instant, u64)>>>,
}

const SHARDS: usize = 16;

impl LocalWindows {
    /// No counters yet.
    pub fn new() -> LocalWindows {
        LocalWindows {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Counts one request for `key` in a window of `window`: returns the count in the
    /// current window (this one included) and the time left in it.
    pub fn incoming(&self, key: &str, window: Duration, now: Instant) -> (u64, Duration) {
        let shard = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize) % SHARDS;
        let mut map = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 4096 {
            map.retain(|_, (end, _)| *end > now);
        }
        let slot = match map.get_mut(key) {
            Some(slot) => slot,
            None => map.entry(key.to_string()).or_insert((now + window, 0)),
        };
        if slot.0 <= now {
            *slot = (now + window, 0);
        }
        slot.1 += 1;
        (slot.1, slot.0 - now)
    }
}

impl Default for LocalWindows {
    fn default() -> Self {
        Self::new()
    }
}

fn compile(v: &Value, env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    if v.get("rules").is_some() {
        return Err(PluginError::new(
            "rules",
            "not supported by Pylon: use count and time_window",
        ));
    }
    check_policy(
        v,
        &["local", "redis"],
        &["local", "redis", "redis-cluster", "redis-sentinel"],
    )?;
    let (own, redis) = RedisConf::split(v)?;
    let c: Conf = parse(&own)?;
    if c.count == 0 {
        return Err(PluginError::new("count", "must be > 0"));
    }
    if c.time_window == 0 {
        return Err(PluginError::new("time_window", "must be > 0"));
    }
    if !(200..=599).contains(&c.rejected_code) {
        return Err(PluginError::new("rejected_code", "must be within 200–599"));
    }
    if c.rejected_msg.as_deref() == Some("") {
        return Err(PluginError::new("rejected_msg", "must not be empty"));
    }
    if c.window_type != "fixed" {
        return Err(PluginError::new(
            "window_type",
            "only fixed is supported by Pylon",
        ));
    }
    let key = Key::parse(&c.key_type, &c.key)?;
    let scope = match &c.group {
        Some(g) => format!("group:{g}"),
        None => env.owner.clone(),
    };
    let store = match c.policy.as_str() {
        "local" => {
            let conf_text = v.to_string();
            let kept = match &c.group {
                Some(_) => format!("limit-count/{scope}/{}/{}", c.count, c.time_window),
                None => format!("limit-count/{scope}/{conf_text}"),
            };
            Store::Local(keep(kept, LocalWindows::new))
        }
        "redis" => Store::Redis(RedisWindows::new(
            redis.client()?,
            Duration::from_secs(c.time_window),
        )),
        other => {
            return Err(PluginError::new(
                "policy",
                format!("{other:?} is not supported by Pylon (local, redis)"),
            ))
        }
    };
    let prefix = match &store {
        Store::Local(_) => format!("{scope}:"),
        Store::Redis(_) => RedisWindows::prefix(&scope, c.count, c.time_window),
    };
    let rejected_body = match &c.rejected_msg {
        Some(m) => Bytes::from(serde_json::json!({ "error_msg": m }).to_string() + "\n"),
        None => Bytes::new(),
    };
    Ok(Arc::new(LimitCount {
        limit: HeaderValue::from(c.count),
        count: c.count,
        window: Duration::from_secs(c.time_window),
        key,
        prefix,
        store,
        rejected_code: c.rejected_code,
        rejected_body,
        headers: c.show_limit_quota_header,
        allow_degradation: c.allow_degradation,
    }))
}

/// Where the counters are.
#[derive(Debug)]
enum Store {
    Local(Arc<LocalWindows>),
    Redis(RedisWindows),
}

/// The compiled plugin.
#[derive(Debug)]
struct LimitCount {
    limit: HeaderValue,
    count: u64,
    window: Duration,
    key: Key,
    /// What every counting key starts with: the owner (`route/1`) or `group:<name>`, and
    /// for Redis a namespace and the limit.
    prefix: String,
    store: Store,
    rejected_code: u16,
    rejected_body: Bytes,
    headers: bool,
    allow_degradation: bool,
}

/// APISIX's answer when the counter cannot be reached.
static FAILED: Bytes = Bytes::from_static(b"{\"error_msg\":\"failed to limit count\"}\n");

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

#[async_trait]
impl Plugin for LimitCount {
    fn name(&self) -> &'static str {
        "limit-count"
    }

    fn phases(&self) -> Phases {
        Phases {
            access: true,
            ..Phases::default()
        }
    }

    async fn access(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        let mut key = String::with_capacity(self.prefix.len() + 48);
        key.push_str(&self.prefix);
        self.key.append(req, cx, &mut key);
        let (used, left) = match &self.store {
            Store::Local(w) => w.incoming(&key, self.window, Instant::now()),
            Store::Redis(w) => match w.incoming(&key).await {
                Ok(counted) => counted,
                // Logged by the Redis client.
                Err(_) if self.allow_degradation => return Flow::Continue,
                Err(_) => return Flow::Reply(Reply::json(500, FAILED.clone())),
            },
        };
        let reset = HeaderValue::from(left.as_secs() + u64::from(left.subsec_nanos() > 0));
        let over = used > self.count;
        if self.headers {
            let remaining = if over { 0 } else { self.count - used };
            cx.add_response_header(LIMIT, self.limit.clone());
            cx.add_response_header(REMAINING, HeaderValue::from(remaining));
            cx.add_response_header(RESET, reset);
        }
        if over {
            return Flow::Reply(match self.rejected_body.is_empty() {
                true => Reply::status(self.rejected_code),
                false => Reply::json(self.rejected_code, self.rejected_body.clone()),
            });
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn windows_count_and_reset() {
        let w = LocalWindows::new();
        let t0 = Instant::now();
        let win = Duration::from_secs(60);
        assert_eq!(w.incoming("k", win, t0).0, 1);
        assert_eq!(w.incoming("k", win, t0).0, 2);
        assert_eq!(w.incoming("other", win, t0).0, 1);
        let (n, left) = w.incoming("k", win, t0 + Duration::from_secs(59));
        assert_eq!((n, left), (3, Duration::from_secs(1)));
        assert_eq!(w.incoming("k", win, t0 + win).0, 1);
    }

    #[test]
    fn schema_errors_name_the_field() {
        let consumers = Vec::new();
        let env = Env::new(&consumers);
        let e = compile(&json!({"count": 0, "time_window": 60}), &env).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("count", "must be > 0")
        );
        let e = compile(&json!({"count": 2}), &env).unwrap_err();
        assert!(e.message.contains("time_window"), "{e}");
        let e = compile(&json!({"count": 2, "time_window": 1, "key": "nope"}), &env).unwrap_err();
        assert_eq!(e.path, "key");
        let e = compile(
            &json!({"count": 2, "time_window": 1, "rejected_code": 600}),
            &env,
        )
        .unwrap_err();
        assert_eq!(e.path, "rejected_code");
        let cluster = json!({"count": 2, "time_window": 1, "policy": "redis-cluster",
            "redis_cluster_nodes": ["127.0.0.1:7000"], "redis_cluster_name": "c"});
        let e = compile(&cluster, &env).unwrap_err();
        assert_eq!(e.path, "policy");
        assert!(e.message.contains("not supported by Pylon"), "{e}");
        let e = compile(
            &json!({"count": 2, "time_window": 1, "policy": "redis"}),
            &env,
        )
        .unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("redis_host", "required with policy: redis")
        );
        let ok = json!({"count": 2, "time_window": 1, "policy": "redis",
            "redis_host": "127.0.0.1", "redis_password": "pw"});
        let plugin = compile(&ok, &env).unwrap();
        assert!(!format!("{plugin:?}").contains("pw\""), "{plugin:?}");
    }
}
