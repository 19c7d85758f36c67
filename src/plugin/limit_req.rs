//! `limit-req` (APISIX, priority 1001, access phase): a leaky bucket per key (by default the
//! client address), as nginx's `limit_req` and OpenResty's `resty.limit.req`, which APISIX
//! uses.
//!
//! Requests drain at `rate` per second. A request that finds more than `burst` requests
//! waiting ahead of it (the bucket's *excess*) is rejected with `rejected_code` (503 by
//! default) and `{"error_msg":"<rejected_msg>"}` when a message is set, an empty body
//! otherwise. One within the burst is delayed until its turn (`excess / rate` seconds),
//! unless `nodelay: true`, when it goes through at once.
//!
//! The excess is kept in milli-requests and truncated to an integer on each request, as
//! `resty.limit.req` does: `excess = max(excess - rate * elapsed_ms + 1000, 0)` with `rate`
//! in milli-requests per second; the first request of a key starts at 0.
//!
//! Buckets are kept in this process (`policy: local`), per route, and survive a
//! configuration change that leaves this plugin's configuration as it was; or in Redis
//! (`policy: redis`, [`super::limit_req_redis`]), shared by a fleet. When Redis does not
//! answer within `redis_timeout` the request gets 500, or goes on with
//! `allow_degradation: true` (APISIX's behaviour).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::Value;

use super::limit_count::Key;
use super::limit_req_redis::RedisBuckets;
use super::redis::{check_policy, RedisConf};
use super::registry::{keep, parse, Env, PluginError, Spec};
use super::{Flow, Phases, Plugin, PluginCtx, Reply};

/// Registry entry.
pub const SPEC: Spec = Spec {
    name: "limit-req",
    priority: 1001,
    compile,
    credential: None,
};

/// APISIX's schema (the fields Pylon has).
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Conf {
    /// Requests per second that drain from the bucket; > 0 (may be fractional).
    pub rate: f64,
    /// Requests allowed to wait beyond `rate`; >= 0 (may be fractional).
    pub burst: f64,
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
    /// Let requests within the burst through at once instead of delaying them. Default
    /// false.
    #[serde(default)]
    pub nodelay: bool,
    /// With `policy: redis`: let requests through when Redis does not answer. Default
    /// false.
    #[serde(default)]
    pub allow_degradation: bool,
    /// `local` (default) or `redis` (with the `redis_*` fields of [`RedisConf`]; APISIX
    /// also has `redis-cluster`).
    #[serde(default = "local")]
    pub policy: String,
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

/// One bucket: the excess in milli-requests and when it was last computed.
type Bucket = (u64, Instant);

/// Leaky buckets kept in this process, sharded to keep lock holds short.
#[derive(Debug)]
pub struct LeakyBuckets {
    shards: Vec<Mutex<HashMap<String, Bucket>>>,
}

const SHARDS: usize = 16;

impl LeakyBuckets {
    /// No buckets yet.
    pub fn new() -> LeakyBuckets {
        LeakyBuckets {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// `resty.limit.req`'s `incoming(key, commit = true)`: with `rate` and `burst` in
    /// milli-requests (per second), the excess this request adds to, in milli-requests;
    /// `None` when it is over `burst` (the bucket is then left as it was).
    pub fn incoming(&self, key: &str, rate: f64, burst: f64, now: Instant) -> Option<u64> {
        let shard = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize) % SHARDS;
        let mut map = self.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 4096 {
            // A bucket that has drained completely acts as no bucket.
            map.retain(|_, (excess, last)| {
                elapsed_ms(now, *last) * rate / 1000.0 < *excess as f64 + 1000.0
            });
        }
        let excess = match map.get(key) {
            Some((excess, last)) => {
                let e = (*excess as f64 - rate * elapsed_ms(now, *last) / 1000.0 + 1000.0).max(0.0);
                if e > burst {
                    return None;
                }
                e as u64
            }
            None => 0,
        };
        match map.get_mut(key) {
            Some(slot) => *slot = (excess, now),
            None => {
                map.insert(key.to_string(), (excess, now));
            }
        }
        Some(excess)
    }
}

impl Default for LeakyBuckets {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds from `last` to `now` (0 if `now` is earlier).
fn elapsed_ms(now: Instant, last: Instant) -> f64 {
    now.saturating_duration_since(last).as_secs_f64() * 1000.0
}

fn compile(v: &Value, env: &Env) -> Result<Arc<dyn Plugin>, PluginError> {
    check_policy(v, &["local", "redis"], &["local", "redis", "redis-cluster"])?;
    let (own, redis) = RedisConf::split(v)?;
    let c: Conf = parse(&own)?;
    if !(c.rate > 0.0 && c.rate.is_finite()) {
        return Err(PluginError::new("rate", "must be > 0"));
    }
    if !(c.burst >= 0.0 && c.burst.is_finite()) {
        return Err(PluginError::new("burst", "must be >= 0"));
    }
    if !(200..=599).contains(&c.rejected_code) {
        return Err(PluginError::new("rejected_code", "must be within 200–599"));
    }
    if c.rejected_msg.as_deref() == Some("") {
        return Err(PluginError::new("rejected_msg", "must not be empty"));
    }
    let (rate, burst) = (c.rate * 1000.0, c.burst * 1000.0);
    let (store, prefix) = match c.policy.as_str() {
        "local" => (
            Store::Local(keep(
                format!("limit-req/{}/{v}", env.owner),
                LeakyBuckets::new,
            )),
            String::new(),
        ),
        "redis" => (
            Store::Redis(RedisBuckets::new(redis.client()?, rate, burst)),
            RedisBuckets::prefix(&env.owner, c.rate, c.burst),
        ),
        other => {
            return Err(PluginError::new(
                "policy",
                format!("{other:?} is not supported by Pylon (local, redis)"),
            ))
        }
    };
    let key = match c.key_type.as_str() {
        "var" | "var_combination" => Key::parse(&c.key_type, &c.key)?,
        other => {
            return Err(PluginError::new(
                "key_type",
                format!("{other:?} is not one of var, var_combination"),
            ))
        }
    };
    let rejected_body = match &c.rejected_msg {
        Some(m) => Bytes::from(serde_json::json!({ "error_msg": m }).to_string() + "\n"),
        None => Bytes::new(),
    };
    Ok(Arc::new(LimitReq {
        rate,
        burst,
        key,
        prefix,
        store,
        allow_degradation: c.allow_degradation,
        rejected_code: c.rejected_code,
        rejected_body,
        nodelay: c.nodelay,
    }))
}

/// Where the buckets are.
#[derive(Debug)]
enum Store {
    Local(Arc<LeakyBuckets>),
    Redis(RedisBuckets),
}

/// The compiled plugin.
#[derive(Debug)]
struct LimitReq {
    /// Milli-requests per second.
    rate: f64,
    /// Milli-requests.
    burst: f64,
    key: Key,
    /// What every Redis key starts with (empty for local buckets, which are per route).
    prefix: String,
    store: Store,
    allow_degradation: bool,
    rejected_code: u16,
    rejected_body: Bytes,
    nodelay: bool,
}

#[async_trait]
impl Plugin for LimitReq {
    fn name(&self) -> &'static str {
        "limit-req"
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
        let excess = match &self.store {
            Store::Local(b) => b
                .incoming(&key, self.rate, self.burst, Instant::now())
                .map(|e| e as f64),
            Store::Redis(b) => match b.incoming(&key).await {
                Ok(e) => e,
                // Logged by the Redis client.
                Err(_) if self.allow_degradation => return Flow::Continue,
                Err(_) => return Flow::Reply(Reply::status(500)),
            },
        };
        let Some(excess) = excess else {
            return Flow::Reply(match self.rejected_body.is_empty() {
                true => Reply::status(self.rejected_code),
                false => Reply::json(self.rejected_code, self.rejected_body.clone()),
            });
        };
        // resty.limit.req's delay: excess / rate seconds; APISIX sleeps from 1 ms on.
        let delay = excess / self.rate;
        if !self.nodelay && delay >= 0.001 {
            tokio::time::sleep(Duration::from_secs_f64(delay)).await;
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_follows_resty_limit_req() {
        // rate 1 r/s, burst 2: the first request starts at 0, each next one at once adds
        // 1000 milli-requests, the fourth is over the burst.
        let b = LeakyBuckets::new();
        let t0 = Instant::now();
        let (rate, burst) = (1000.0, 2000.0);
        assert_eq!(b.incoming("k", rate, burst, t0), Some(0));
        assert_eq!(b.incoming("k", rate, burst, t0), Some(1000));
        assert_eq!(b.incoming("k", rate, burst, t0), Some(2000));
        assert_eq!(b.incoming("k", rate, burst, t0), None);
        assert_eq!(b.incoming("other", rate, burst, t0), Some(0));
        // Half a second drains 500: 2000 - 500 + 1000 = 2500 > 2000, still rejected, and
        // the rejection leaves the bucket as it was.
        assert_eq!(b.incoming("k", rate, burst, t0 + ms(500)), None);
        // 1.5 s drains 1500: 2000 - 1500 + 1000 = 1500.
        assert_eq!(b.incoming("k", rate, burst, t0 + ms(1500)), Some(1500));
        // Long idle: back to 0.
        assert_eq!(b.incoming("k", rate, burst, t0 + ms(60_000)), Some(0));
    }

    #[test]
    fn excess_is_truncated_to_whole_milli_requests() {
        let b = LeakyBuckets::new();
        let t0 = Instant::now();
        // rate 3 r/s = 3000 milli-requests/s; 100.5 ms drains 301.5.
        assert_eq!(b.incoming("k", 3000.0, 5000.0, t0), Some(0));
        assert_eq!(b.incoming("k", 3000.0, 5000.0, t0), Some(1000));
        let t = t0 + Duration::from_micros(100_500);
        assert_eq!(b.incoming("k", 3000.0, 5000.0, t), Some(1698));
    }

    #[test]
    fn schema_errors_name_the_field() {
        let consumers = Vec::new();
        let env = Env::new(&consumers);
        let err = |v: Value| compile(&v, &env).unwrap_err();
        let e = err(json!({"rate": 0, "burst": 1, "key": "remote_addr"}));
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("rate", "must be > 0")
        );
        let e = err(json!({"rate": 1, "burst": -1, "key": "remote_addr"}));
        assert_eq!(e.path, "burst");
        let e = err(json!({"rate": 1, "burst": 1}));
        assert!(e.message.contains("key"), "{e}");
        let e = err(json!({"rate": 1, "burst": 1, "key": "x", "key_type": "constant"}));
        assert_eq!(e.path, "key_type");
        let e = err(json!({"rate": 1, "burst": 1, "key": "remote_addr", "policy": "redis"}));
        assert_eq!(e.path, "redis_host");
        let e =
            err(json!({"rate": 1, "burst": 1, "key": "remote_addr", "policy": "redis-cluster"}));
        assert_eq!(e.path, "policy");
        assert!(e.message.contains("not supported by Pylon"), "{e}");
        assert!(compile(
            &json!({"rate": 0.5, "burst": 0, "key": "remote_addr"}),
            &env
        )
        .is_ok());
    }
}
