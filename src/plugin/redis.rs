//! Redis for plugins that share state across a fleet (`limit-count` and `limit-req` with
//! `policy: redis`).
//!
//! The connection settings are APISIX's `redis_*` plugin fields ([`RedisConf`]). Compiling a
//! plugin builds a [`RedisClient`] once (no connection yet); the first request connects.
//! One client, with one multiplexed, reconnecting connection (the `redis` crate's
//! `ConnectionManager`), serves every route that names the same server, database and
//! credentials, and outlives reloads that keep them.
//!
//! Every Redis command runs on one dedicated thread with its own tokio runtime
//! (`pylon-redis`): Pingora serves requests from several runtimes, and a connection's I/O
//! belongs to the runtime it was made on, so the connection lives on a runtime that is
//! always there. A request waits at most `redis_timeout` for its answer, connecting
//! included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, FromRedisValue, IntoConnectionInfo, RedisConnectionInfo};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::registry::{keep, parse, PluginError};

/// APISIX's `redis_*` fields (`apisix/utils/redis-schema.lua`, policy `redis`).
///
/// `redis_password` is never logged or returned: this type has no `Debug`.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RedisConf {
    /// Host name or address; required with `policy: redis` (at least 2 characters).
    pub redis_host: Option<String>,
    /// Default 6379.
    #[serde(default = "default_port")]
    pub redis_port: u16,
    /// ACL user name (Redis 6+); with it `AUTH user password`, without `AUTH password`.
    pub redis_username: Option<String>,
    /// Password; empty means none.
    pub redis_password: Option<String>,
    /// Database number (`SELECT`), default 0.
    #[serde(default)]
    pub redis_database: u32,
    /// Milliseconds a request waits for Redis (connecting included), default 1000.
    #[serde(default = "default_timeout")]
    pub redis_timeout: u64,
    /// TLS to Redis, default false.
    #[serde(default)]
    pub redis_ssl: bool,
    /// Verify Redis's certificate and name when `redis_ssl`. Default **true** in Pylon
    /// (APISIX: false), as Pylon verifies upstream certificates by default.
    #[serde(default = "yes")]
    pub redis_ssl_verify: bool,
    /// APISIX's keepalive settings (milliseconds, >= 1000; pool size, >= 1): accepted and
    /// checked, without effect (Pylon keeps one multiplexed connection per Redis).
    pub redis_keepalive_timeout: Option<u64>,
    /// See `redis_keepalive_timeout`.
    pub redis_keepalive_pool: Option<u64>,
}

fn default_port() -> u16 {
    6379
}
fn default_timeout() -> u64 {
    1000
}
fn yes() -> bool {
    true
}

impl RedisConf {
    /// Takes the `redis_*` fields out of a plugin configuration `v` (an object) and reads
    /// them; the rest is left for the plugin's own type.
    ///
    /// Errors: a field that does not fit its type, with its name.
    pub fn split(v: &Value) -> Result<(Value, RedisConf), PluginError> {
        let Value::Object(m) = v else {
            return Err(PluginError::new("", "must be an object"));
        };
        let (redis, rest): (Map<String, Value>, Map<String, Value>) = m
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .partition(|(k, _)| k.starts_with("redis_"));
        Ok((Value::Object(rest), parse(&Value::Object(redis))?))
    }

    /// Checks the fields for `policy: redis` and builds (or finds) the client.
    ///
    /// Errors: `redis_host` missing or too short, `redis_port`/`redis_timeout` 0, an empty
    /// `redis_username`, keepalive settings out of range, or a client the `redis` crate
    /// refuses.
    pub fn client(&self) -> Result<Arc<RedisClient>, PluginError> {
        let host = match self.redis_host.as_deref() {
            None => {
                return Err(PluginError::new(
                    "redis_host",
                    "required with policy: redis",
                ))
            }
            Some(h) if h.chars().count() < 2 => {
                return Err(PluginError::new(
                    "redis_host",
                    "must be at least 2 characters",
                ))
            }
            Some(h) => h,
        };
        if self.redis_port == 0 {
            return Err(PluginError::new("redis_port", "must be >= 1"));
        }
        if self.redis_timeout == 0 {
            return Err(PluginError::new("redis_timeout", "must be >= 1"));
        }
        if self.redis_username.as_deref() == Some("") {
            return Err(PluginError::new("redis_username", "must not be empty"));
        }
        if self.redis_keepalive_timeout.is_some_and(|t| t < 1000) {
            return Err(PluginError::new(
                "redis_keepalive_timeout",
                "must be >= 1000",
            ));
        }
        if self.redis_keepalive_pool == Some(0) {
            return Err(PluginError::new("redis_keepalive_pool", "must be >= 1"));
        }
        let password = self.redis_password.as_deref().filter(|p| !p.is_empty());
        // The kept-state key names the server and a digest of the credentials, never the
        // credentials themselves.
        let secret = format!(
            "{}\0{}",
            self.redis_username.as_deref().unwrap_or(""),
            password.unwrap_or("")
        );
        let id = format!(
            "redis/{}/{host}/{}/{}/{}/{:x}",
            match (self.redis_ssl, self.redis_ssl_verify) {
                (false, _) => "redis",
                (true, true) => "rediss",
                (true, false) => "rediss-noverify",
            },
            self.redis_port,
            self.redis_database,
            self.redis_timeout,
            xxhash_rust::xxh3::xxh3_64(secret.as_bytes()),
        );
        let addr = match self.redis_ssl {
            false => ConnectionAddr::Tcp(host.to_string(), self.redis_port),
            true => ConnectionAddr::TcpTls {
                host: host.to_string(),
                port: self.redis_port,
                insecure: !self.redis_ssl_verify,
                tls_params: None,
            },
        };
        let mut settings = RedisConnectionInfo::default().set_db(i64::from(self.redis_database));
        if let Some(p) = password {
            settings = settings.set_password(p);
        }
        if let Some(u) = &self.redis_username {
            settings = settings.set_username(u);
        }
        let info = addr
            .into_connection_info()
            .map(|i| i.set_redis_settings(settings))
            .and_then(redis::Client::open)
            .map_err(|e| PluginError::new("redis_host", format!("{e}")))?;
        let label = format!("{host}:{}/{}", self.redis_port, self.redis_database);
        let timeout = Duration::from_millis(self.redis_timeout);
        Ok(keep(id, || RedisClient::new(info, label, timeout)))
    }
}

/// Refuses a `policy` (a string in `v`) outside `apisix`, or one in `apisix` that Pylon
/// does not have (`pylon`), before any other field is read: `policy: redis-cluster` is
/// named as such, not through its `redis_cluster_nodes` field. A missing or non-string
/// `policy` is left to the plugin's schema.
///
/// Errors: at `policy`.
pub fn check_policy(v: &Value, pylon: &[&str], apisix: &[&str]) -> Result<(), PluginError> {
    let Some(p) = v.get("policy").and_then(Value::as_str) else {
        return Ok(());
    };
    if !apisix.contains(&p) {
        return Err(PluginError::new(
            "policy",
            format!("{p:?} is not one of {}", apisix.join(", ")),
        ));
    }
    if !pylon.contains(&p) {
        return Err(PluginError::new(
            "policy",
            format!("{p:?} is not supported by Pylon ({})", pylon.join(", ")),
        ));
    }
    Ok(())
}

/// Why a Redis command gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// No answer within `redis_timeout`.
    #[error("no answer from Redis {0} within {1:?}")]
    Timeout(String, Duration),
    /// Redis could not be reached, refused the command or answered an error.
    #[error("Redis {0}: {1}")]
    Redis(String, redis::RedisError),
    /// The thread that talks to Redis could not be started.
    #[error("cannot start the Redis thread: {0}")]
    Thread(String),
}

/// One Redis server (address, database, credentials) as plugins use it: built at compile,
/// connected on first use.
pub struct RedisClient {
    client: redis::Client,
    /// `host:port/db`, for logs.
    label: String,
    timeout: Duration,
    conn: OnceLock<ConnectionManager>,
    /// When the last failure was logged (milliseconds since `born`), to log at most one a
    /// second.
    logged: AtomicU64,
    born: Instant,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("server", &self.label)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    fn new(client: redis::Client, label: String, timeout: Duration) -> RedisClient {
        RedisClient {
            client,
            label,
            timeout,
            conn: OnceLock::new(),
            logged: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// `host:port/db`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs `script` (EVALSHA, loading it on NOSCRIPT) with `keys` and `args` on the Redis
    /// thread, waiting at most `redis_timeout`.
    ///
    /// Errors: [`RedisFailure`]; each is logged (at most one line a second per server).
    pub async fn eval<T>(
        self: &Arc<Self>,
        script: &'static redis::Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<T, RedisFailure>
    where
        T: FromRedisValue + Send + 'static,
    {
        let result = self.eval_inner(script, keys, args).await;
        if let Err(e) = &result {
            self.log_failure(e);
        }
        result
    }

    async fn eval_inner<T>(
        self: &Arc<Self>,
        script: &'static redis::Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<T, RedisFailure>
    where
        T: FromRedisValue + Send + 'static,
    {
        let handle = redis_thread().map_err(|e| RedisFailure::Thread(e.clone()))?;
        let me = Arc::clone(self);
        let task = handle.spawn(async move {
            let work = async {
                let mut conn = me.connection()?;
                let mut call = script.prepare_invoke();
                for k in &keys {
                    call.key(k);
                }
                for a in &args {
                    call.arg(a);
                }
                call.invoke_async::<T>(&mut conn).await
            };
            match tokio::time::timeout(me.timeout, work).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(RedisFailure::Redis(me.label.clone(), e)),
                Err(_) => Err(RedisFailure::Timeout(me.label.clone(), me.timeout)),
            }
        });
        match task.await {
            Ok(r) => r,
            Err(e) => Err(RedisFailure::Thread(e.to_string())),
        }
    }

    /// The connection manager, made on first use (on the Redis thread, so its tasks live
    /// there); it connects lazily and reconnects after failures.
    fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // A failed reconnection is not retried in the background: the next request
            // tries again, so a Redis that is down answers "refused" at once.
            .set_number_of_retries(0);
        let made = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        Ok(self.conn.get_or_init(|| made).clone())
    }

    fn log_failure(&self, e: &RedisFailure) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.logged.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1000)
            && self
                .logged
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::error!("{e}");
        }
    }
}

/// The dedicated Redis thread's runtime (started on first use).
fn redis_thread() -> Result<&'static tokio::runtime::Handle, &'static String> {
    static THREAD: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    THREAD
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("pylon-redis".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redis_fields_are_split_off_with_defaults() {
        let (rest, r) = RedisConf::split(&json!({"count": 1, "redis_host": "127.0.0.1"})).unwrap();
        assert_eq!(rest, json!({"count": 1}));
        assert_eq!(r.redis_port, 6379);
        assert_eq!((r.redis_database, r.redis_timeout), (0, 1000));
        assert!(!r.redis_ssl && r.redis_ssl_verify);
        let e = RedisConf::split(&json!({"redis_hots": "x"})).err().unwrap();
        assert!(e.message.contains("redis_hots"), "{e}");
        let e = RedisConf::split(&json!({"redis_port": "x"})).err().unwrap();
        assert_eq!(e.path, "redis_port");
    }

    #[test]
    fn client_checks_fields_and_is_shared_without_naming_the_password() {
        let conf = |v: Value| RedisConf::split(&v).unwrap().1;
        let e = conf(json!({})).client().unwrap_err();
        assert_eq!(e.path, "redis_host");
        let e = conf(json!({"redis_host": "h", "redis_port": 1}))
            .client()
            .unwrap_err();
        assert_eq!(e.path, "redis_host");
        let e = conf(json!({"redis_host": "localhost", "redis_timeout": 0}))
            .client()
            .unwrap_err();
        assert_eq!(e.path, "redis_timeout");
        let a = conf(json!({"redis_host": "localhost", "redis_password": "s3cret"}))
            .client()
            .unwrap();
        let b = conf(json!({"redis_host": "localhost", "redis_password": "s3cret"}))
            .client()
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b), "one client per server and credentials");
        let c = conf(json!({"redis_host": "localhost", "redis_password": "other"}))
            .client()
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(!format!("{a:?}").contains("s3cret"));
    }
}
