//! `limit-req` with `policy: redis`: leaky buckets kept in Redis, shared by every gateway
//! that uses the same Redis.
//!
//! One request is one atomic step, APISIX's `limit-req` Redis script run with EVALSHA: the
//! bucket (a hash with `excess` and `last`, in milli-requests and milliseconds) is read,
//! drained, checked against the burst and written back in one go. Time is the gateways'
//! wall clock (milliseconds since the Unix epoch), as in APISIX, so a fleet's clocks should
//! agree (NTP). The key is the same on every gateway:
//! `limit_req:plugin-limit-req:<route/<id>>:<rate>:<burst>:<request key>`.

use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::redis::{RedisClient, RedisFailure};

/// APISIX's script (`apisix/plugins/limit-req/util.lua`). KEYS[1] the bucket; ARGV rate
/// (milli-requests per second), burst (milli-requests), now (ms), time to live (s).
/// Returns `{1, excess}` when admitted (state stored), `{0, excess}` when rejected.
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"local state_key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local state = redis.call('hmget', state_key, 'excess', 'last')
local excess
if state[1] and state[2] then
    local elapsed = now - tonumber(state[2])
    excess = math.max(tonumber(state[1]) - rate * math.abs(elapsed) / 1000 + 1000, 0)
    if excess > burst then
        return {0, tostring(excess)}
    end
else
    excess = 0
end
redis.call('hset', state_key, 'excess', excess, 'last', now)
redis.call('expire', state_key, ttl)
return {1, tostring(excess)}",
    )
});

/// Leaky buckets in Redis for one `limit-req` configuration.
#[derive(Debug)]
pub struct RedisBuckets {
    client: Arc<RedisClient>,
    /// The script's rate, burst and time-to-live arguments.
    rate: String,
    burst: String,
    ttl: String,
}

impl RedisBuckets {
    /// Buckets through `client`, `rate` and `burst` in milli-requests (per second).
    pub fn new(client: Arc<RedisClient>, rate: f64, burst: f64) -> RedisBuckets {
        // APISIX: ceil(burst / rate) + 1 seconds (both in the same unit).
        let ttl = (burst / rate).ceil() as u64 + 1;
        RedisBuckets {
            client,
            rate: rate.to_string(),
            burst: burst.to_string(),
            ttl: ttl.to_string(),
        }
    }

    /// The key prefix for `scope` (`route/1`) with `rate` and `burst` as configured
    /// (requests): the same on every gateway with this configuration.
    pub fn prefix(scope: &str, rate: f64, burst: f64) -> String {
        format!("limit_req:plugin-limit-req:{scope}:{rate}:{burst}:")
    }

    /// Adds one request to the bucket under `key` (prefix included): its excess in
    /// milli-requests, or `None` when it is over the burst.
    ///
    /// Errors: Redis unreachable, slow (beyond `redis_timeout`) or answering an error.
    pub async fn incoming(&self, key: &str) -> Result<Option<f64>, RedisFailure> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let (allowed, excess): (i64, String) = self
            .client
            .eval(
                &SCRIPT,
                vec![key.to_string()],
                vec![
                    self.rate.clone(),
                    self.burst.clone(),
                    now.to_string(),
                    self.ttl.clone(),
                ],
            )
            .await?;
        Ok((allowed == 1).then(|| excess.parse().unwrap_or(0.0)))
    }
}
