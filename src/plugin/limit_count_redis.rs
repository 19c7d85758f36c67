//! `limit-count` with `policy: redis`: fixed windows kept in Redis, so every gateway of a
//! fleet that points at the same Redis counts into the same windows.
//!
//! One request is one atomic step in Redis, a Lua script run with EVALSHA (as APISIX's
//! `limit-count-redis`): if the key has no time to live, the window starts (`SET key 1 PX
//! window`), else the count goes up (`INCR`). The key is the same on every gateway:
//! `plugin-limit-count:v1:<route/<id> or group:<name>>:<count>:<time_window>:<request key>`.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::redis::{RedisClient, RedisFailure};

/// KEYS[1] the window's key; ARGV[1] the window in milliseconds. Returns `{count, ttl_ms}`:
/// the count in the window with this request, and the window's time left.
static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"local ttl = redis.call('pttl', KEYS[1])
if ttl < 0 then
    redis.call('set', KEYS[1], 1, 'PX', ARGV[1])
    return {1, tonumber(ARGV[1])}
end
return {redis.call('incr', KEYS[1]), ttl}",
    )
});

/// Fixed windows in Redis for one `limit-count` configuration.
#[derive(Debug)]
pub struct RedisWindows {
    client: Arc<RedisClient>,
    /// The window in milliseconds, as the script's argument.
    window_ms: String,
}

impl RedisWindows {
    /// Windows of `window` through `client`.
    pub fn new(client: Arc<RedisClient>, window: Duration) -> RedisWindows {
        RedisWindows {
            client,
            window_ms: window.as_millis().to_string(),
        }
    }

    /// The key prefix for `scope` (`route/1`, `group:g`) with `count` per `time_window`
    /// seconds: the same on every gateway with this configuration.
    pub fn prefix(scope: &str, count: u64, time_window: u64) -> String {
        format!("plugin-limit-count:v1:{scope}:{count}:{time_window}:")
    }

    /// Counts one request under `key` (prefix included): the count in the current window
    /// (this one included) and the time left in it.
    ///
    /// Errors: Redis unreachable, slow (beyond `redis_timeout`) or answering an error.
    pub async fn incoming(&self, key: &str) -> Result<(u64, Duration), RedisFailure> {
        let (count, ttl): (i64, i64) = self
            .client
            .eval(&SCRIPT, vec![key.to_string()], vec![self.window_ms.clone()])
            .await?;
        Ok((
            u64::try_from(count).unwrap_or(0),
            Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
        ))
    }
}
