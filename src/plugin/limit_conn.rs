//! `limit-conn` (APISIX, priority 1003, access phase): at most `conn` requests at once per
//! key (by default the client address), as OpenResty's `resty.limit.conn`, which APISIX
//! uses.
//!
//! A request counts from its access step until it ends (its slot is released when the
//! request's plugin state is dropped, after the log step, also when the client goes away).
//! Beyond `conn` and up to `conn + burst` concurrent requests, a request waits
//! `unit_delay * floor((n - 1) / conn)` seconds before going on, `n` being its place; beyond
//! `conn + burst` it is rejected with `rejected_code` (503 by default) and
//! `{"error_msg":"<rejected_msg>"}` when a message is set, an empty body otherwise.
//!
//! `unit_delay` starts at `default_conn_delay`. Unless `only_use_default_delay` is set, each
//! request that ends moves it halfway towards that request's latency (from admission to the
//! end), as `resty.limit.conn`'s `leaving` does, so the wait follows how long requests
//! really take.
//!
//! Counters are kept in this process (`policy: local`), per route, and survive a
//! configuration change that leaves this plugin's configuration as it was.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::Value;

use super::limit_count::Key;
use super::redis::{check_policy, RedisConf};
use super::registry::{keep, parse, Env, PluginError, Spec};
use super::{Flow, Held, Phases, Plugin, PluginCtx, Reply};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "limit-conn",
    priority: 1003,
    compile,
    credential: None,
};

/// APISIX's schema (the fields Pylon has).
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Conf {
    /// Concurrent requests allowed without delay; integer > 0.
    pub conn: u64,
    /// Concurrent requests beyond `conn` that are delayed instead of rejected; integer >= 0.
    pub burst: u64,
    /// Seconds a request beyond `conn` waits per `conn` requests ahead of it; > 0.
    pub default_conn_delay: f64,
    /// Always wait multiples of `default_conn_delay`, never the measured latency. Default
    /// false.
    #[serde(default)]
    pub only_use_default_delay: bool,
    /// `var` (default: `key` names a variable) or `var_combination` (`key` is a string
    /// with `$variables`).
    #[serde(default = "var")]
    pub key_type: String,
    /// Required: `remote_addr`, `consumer_name`, `http_x_user` …; an unset value counts by
    /// the client address.
    pub key: String,
    /// Status when over the limit; 200–599, default 503.
    #[serde(default = "rejected_code")]
    pub rejected_code: u16,
    /// Body message when over the limit (`{"error_msg": ...}`); none by default.
    pub rejected_msg: Option<String>,
    /// Let requests through when the limiter fails. Default false (the local limiter
    /// cannot fail; kept for APISIX files).
    #[serde(default)]
    pub allow_degradation: bool,
    /// `local` only (APISIX also has `redis` and `redis-cluster`).
    #[serde(default = "local")]
    pub policy: String,
    /// APISIX's Redis key time to live (seconds); accepted for APISIX files, unused.
    pub key_ttl: Option<i64>,
}

fn var() -> String {
    "var".into()
}
fn rejected_code() -> u16 {
    503
}
fn local() -> String {
    "local".into()
}

const SHARDS: usize = 16;

/// Concurrent requests per key, and the unit delay, for one `limit-conn` configuration.
#[derive(Debug)]
pub struct Counters {
    shards: Vec<Mutex<HashMap<String, u64>>>,
    /// `unit_delay` in seconds, as `f64` bits.
    unit_delay: AtomicU64,
}

/// Over `conn + burst`.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejected;

impl Counters {
    /// No requests yet; the unit delay starts at `default_delay` seconds.
    pub fn new(default_delay: f64) -> Counters {
        Counters {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            unit_delay: AtomicU64::new(default_delay.to_bits()),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        let i = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `resty.limit.conn`'s `incoming(key, commit = true)`: counts a request under `key`
    /// and returns its place (this one included), or [`Rejected`] (not counted) beyond
    /// `max`.
    pub fn incoming(&self, key: &str, max: u64) -> Result<u64, Rejected> {
        let mut map = self.shard(key);
        let n = map.get(key).copied().unwrap_or(0) + 1;
        if n > max {
            return Err(Rejected);
        }
        match map.get_mut(key) {
            Some(slot) => *slot = n,
            None => {
                map.insert(key.to_string(), n);
            }
        }
        Ok(n)
    }

    /// `resty.limit.conn`'s `leaving`: one request under `key` ended; with a `latency`,
    /// the unit delay moves halfway towards it.
    pub fn leaving(&self, key: &str, latency: Option<Duration>) {
        {
            let mut map = self.shard(key);
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        if let Some(l) = latency {
            let _ = self
                .unit_delay
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                    Some(((l.as_secs_f64() + f64::from_bits(bits)) / 2.0).to_bits())
                });
        }
    }

    /// The current unit delay in seconds.
    pub fn unit_delay(&self) -> f64 {
        f64::from_bits(self.unit_delay.load(Ordering::Relaxed))
    }

    /// Requests counted under `key` now.
    pub fn current(&self, key: &str) -> u64 {
        self.shard(key).get(key).copied().unwrap_or(0)
    }
}

/// `resty.limit.conn`'s delay for the `n`th concurrent request with `conn` allowed.
pub fn delay(unit_delay: f64, n: u64, conn: u64) -> f64 {
    if n > conn {
        unit_delay * ((n - 1) / conn) as f64
    } else {
        0.0
    }
}

/// A request's place, given back when the request ends.
struct Slot {
    counters: Arc<Counters>,
    key: String,
    /// When the request was admitted (after its delay); `None` with
    /// `only_use_default_delay`.
    admitted: Option<Instant>,
}

impl Held for Slot {}

impl Drop for Slot {
    fn drop(&mut self) {
        let latency = self.admitted.map(|t| t.elapsed());
        self.counters.leaving(&self.key, latency);
    }
}

fn compile(v: &Value, env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    if v.get("rules").is_some() {
        return Err(PluginError::new(
            "rules",
            "not supported by Pylon: use conn, burst and key",
        ));
    }
    check_policy(v, &["local"], &["local", "redis", "redis-cluster"])?;
    // APISIX's `redis_*` fields belong to the redis policies, refused above.
    let (own, _) = RedisConf::split(v)?;
    let c: Conf = parse(&own)?;
    if c.conn == 0 {
        return Err(PluginError::new("conn", "must be > 0"));
    }
    if !(c.default_conn_delay > 0.0 && c.default_conn_delay.is_finite()) {
        return Err(PluginError::new("default_conn_delay", "must be > 0"));
    }
    if !(200..=599).contains(&c.rejected_code) {
        return Err(PluginError::new("rejected_code", "must be within 200–599"));
    }
    if c.rejected_msg.as_deref() == Some("") {
        return Err(PluginError::new("rejected_msg", "must not be empty"));
    }
    let key = match c.key_type.as_str() {
        "var" | "var_combination" => Key::parse(&c.key_type, &c.key)?,
        other => {
            return Err(PluginError::new(
                "key_type",
                format!("{other:?} is not one of var, var_combination"),
            ))
        }
    };
    let delay0 = c.default_conn_delay;
    let counters = keep(format!("limit-conn/{}/{v}", env.owner), || {
        Counters::new(delay0)
    });
    let rejected_body = match &c.rejected_msg {
        Some(m) => Bytes::from(serde_json::json!({ "error_msg": m }).to_string() + "\n"),
        None => Bytes::new(),
    };
    Ok(Arc::new(LimitConn {
        conn: c.conn,
        max: c.conn.saturating_add(c.burst),
        key,
        counters,
        adapt: !c.only_use_default_delay,
        rejected_code: c.rejected_code,
        rejected_body,
    }))
}

/// The compiled plugin.
#[derive(Debug)]
struct LimitConn {
    conn: u64,
    /// `conn + burst`.
    max: u64,
    key: Key,
    counters: Arc<Counters>,
    /// Whether ended requests adjust the unit delay (not `only_use_default_delay`).
    adapt: bool,
    rejected_code: u16,
    rejected_body: Bytes,
}

#[async_trait]
impl Plugin for LimitConn {
    fn name(&self) -> &'static str {
        "limit-conn"
    }

    fn phases(&self) -> Phases {
        Phases {
            access: true,
            ..Phases::default()
        }
    }

    async fn access(&self, req: &RequestHeader, cx: &mut PluginCtx) -> Flow {
        let mut key = String::with_capacity(48);
        self.key.append(req, cx, &mut key);
        let Ok(n) = self.counters.incoming(&key, self.max) else {
            return Flow::Reply(match self.rejected_body.is_empty() {
                true => Reply::status(self.rejected_code),
                false => Reply::json(self.rejected_code, self.rejected_body.clone()),
            });
        };
        let wait = delay(self.counters.unit_delay(), n, self.conn);
        // The slot is held from here: a guard that gives it back when dropped, also if the
        // client goes away during the wait.
        let mut slot = Slot {
            counters: self.counters.clone(),
            key,
            admitted: None,
        };
        if wait >= 0.001 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        if self.adapt {
            // Latency counts from admission, as APISIX's `request_time - delay`.
            slot.admitted = Some(Instant::now());
        }
        cx.held.push(Box::new(slot));
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_rejects_and_releases() {
        let c = Counters::new(0.1);
        assert_eq!(c.incoming("k", 3), Ok(1));
        assert_eq!(c.incoming("k", 3), Ok(2));
        assert_eq!(c.incoming("k", 3), Ok(3));
        assert_eq!(c.incoming("k", 3), Err(Rejected));
        assert_eq!(c.current("k"), 3, "a rejection is not counted");
        assert_eq!(c.incoming("other", 3), Ok(1));
        c.leaving("k", None);
        assert_eq!(c.incoming("k", 3), Ok(3));
        for _ in 0..3 {
            c.leaving("k", None);
        }
        assert_eq!(c.current("k"), 0);
        assert_eq!(c.unit_delay(), 0.1);
        c.leaving("other", Some(Duration::from_millis(300)));
        assert!((c.unit_delay() - 0.2).abs() < 1e-9);
    }

    #[test]
    fn delay_grows_per_conn_requests_ahead() {
        // conn 2: the 3rd and 4th wait one unit, the 5th two.
        assert_eq!(delay(0.5, 2, 2), 0.0);
        assert_eq!(delay(0.5, 3, 2), 0.5);
        assert_eq!(delay(0.5, 4, 2), 0.5);
        assert_eq!(delay(0.5, 5, 2), 1.0);
        assert_eq!(delay(1.0, 6, 5), 1.0);
    }

    #[test]
    fn schema_errors_name_the_field() {
        let consumers = Vec::new();
        let env = Env::new(&consumers);
        let err = |v: Value| compile(&v, &env).unwrap_err();
        let base = json!({"conn": 1, "burst": 0, "default_conn_delay": 0.1, "key": "remote_addr"});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        assert_eq!(err(with("conn", json!(0))).path, "conn");
        assert_eq!(
            err(with("default_conn_delay", json!(0))).path,
            "default_conn_delay"
        );
        assert_eq!(err(with("burst", json!(-1))).path, "burst");
        assert_eq!(err(with("key_type", json!("constant"))).path, "key_type");
        assert_eq!(err(with("policy", json!("redis"))).path, "policy");
        assert_eq!(err(with("rules", json!([]))).path, "rules");
        assert!(compile(&base, &env).is_ok());
    }
}
