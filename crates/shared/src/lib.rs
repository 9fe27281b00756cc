//! State the instances of a fleet share through Redis, when `redis.addr` is configured: rate
//! limits (GCRA, one Lua script per check) and failed-login counters (fixed windows). Keys are
//! opaque strings the caller builds (already hashed: no credential ever reaches Redis or a
//! log); this crate knows no HTTP, no SQL and no policy.
//!
//! Redis is optional and never a reason to fail a request. Every operation has a short
//! deadline ([`OPERATION_TIMEOUT`]); the first one that fails or times out opens a circuit for
//! [`RETRY_AFTER`], during which every call answers [`Unavailable`] at once, and callers fall
//! back to their in-process state (each instance then limits on its own, as without Redis).
//! The first call after that window tries Redis again; the connection reconnects by itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

/// How long one Redis operation may take before it counts as a failure: a local Redis
/// answers in well under a millisecond, and a request must never wait long for it.
pub const OPERATION_TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis is left alone after a failure before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Where Redis is (distribution's `redis.addr`, `redis.password`, `redis.db`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisSettings {
    /// `host:port`.
    pub addr: String,
    pub password: Option<String>,
    pub db: i64,
}

impl RedisSettings {
    /// The connection as redis-rs takes it; an error sentence naming `redis.addr` when the
    /// address is not `host:port`.
    fn connection_info(&self) -> Result<redis::ConnectionInfo, String> {
        let (host, port) = self
            .addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| {
                format!("redis.addr must be host:port, e.g. 127.0.0.1:6379; {:?} is not", self.addr)
            })?;
        Ok(redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(host.to_string(), port),
            redis: redis::RedisConnectionInfo {
                db: self.db,
                password: self.password.clone().filter(|p| !p.is_empty()),
                ..Default::default()
            },
        })
    }

    /// Checks the settings without connecting (configuration validation).
    pub fn validate(&self) -> Result<(), String> {
        self.connection_info().map(|_| ())
    }
}

/// Redis answered nothing usable in time, or is in its retry window: use local state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable;

/// A handle on the shared state; cheap to clone. [`Shared::local`] has no Redis at all.
#[derive(Clone, Default)]
pub struct Shared {
    redis: Option<Arc<Redis>>,
}

struct Redis {
    client: redis::Client,
    addr: String,
    connection: Mutex<Option<ConnectionManager>>,
    /// Milliseconds since `epoch` before which Redis is not tried (0: try).
    closed_until: AtomicU64,
    /// Whether the last attempt failed (to log transitions only, not every failure).
    down: AtomicBool,
    epoch: Instant,
}

/// `KEYS[1]` may take one request now under GCRA with an emission interval of `ARGV[1]`
/// microseconds and a burst of `ARGV[2]`: answers 0 (taken) or the microseconds to wait.
/// Time is Redis's own, so instances with skewed clocks agree.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return math.ceil(wait) end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
"#;

/// Counts one failure against every key in `KEYS`, each in a window of `ARGV[1]` ms that
/// starts with its first failure.
const COUNT_FAILURE: &str = r#"
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
end
return 0
"#;

/// The longest time (ms) until a key of `KEYS` whose count reached its limit (`ARGV[i]` for
/// `KEYS[i]`) expires; 0 when none has.
const BLOCKED_FOR: &str = r#"
local wait = 0
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= tonumber(ARGV[i]) then
    local ttl = redis.call('PTTL', key)
    if ttl > wait then wait = ttl end
  end
end
return wait
"#;

impl Shared {
    /// No Redis: every call answers [`Unavailable`] and callers use their own state.
    pub fn local() -> Shared {
        Shared { redis: None }
    }

    /// Redis at `settings`, connected on first use (an unreachable Redis at start is logged
    /// and retried like one that went away later; it never stops the server).
    pub fn redis(settings: &RedisSettings) -> Result<Shared, String> {
        let client = redis::Client::open(settings.connection_info()?)
            .map_err(|e| format!("redis.addr: {e}"))?;
        Ok(Shared {
            redis: Some(Arc::new(Redis {
                client,
                addr: settings.addr.clone(),
                connection: Mutex::new(None),
                closed_until: AtomicU64::new(0),
                down: AtomicBool::new(false),
                epoch: Instant::now(),
            })),
        })
    }

    /// Whether Redis is configured (not whether it is up).
    pub fn is_configured(&self) -> bool {
        self.redis.is_some()
    }

    /// One request against `key` under GCRA (`interval` between requests on average, `burst`
    /// at once): `Ok(None)` when taken, `Ok(Some(wait))` when refused.
    pub async fn gcra(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> Result<Option<Duration>, Unavailable> {
        let interval_us = interval.as_micros().clamp(1, i64::MAX as u128) as i64;
        let wait_us: i64 = self
            .run(|mut conn| async move {
                redis::Script::new(GCRA)
                    .key(key)
                    .arg(interval_us)
                    .arg(burst.max(1))
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok((wait_us > 0).then(|| Duration::from_micros(wait_us as u64)))
    }

    /// Counts a failure against every key, each in a `window` from its first failure.
    pub async fn count_failure(
        &self,
        keys: &[String],
        window: Duration,
    ) -> Result<(), Unavailable> {
        if keys.is_empty() {
            return Ok(());
        }
        let window_ms = window.as_millis().max(1) as i64;
        let _: i64 = self
            .run(|mut conn| async move {
                let script = redis::Script::new(COUNT_FAILURE);
                let mut invocation = script.prepare_invoke();
                for key in keys {
                    invocation.key(key);
                }
                invocation.arg(window_ms).invoke_async(&mut conn).await
            })
            .await?;
        Ok(())
    }

    /// How long until every `(key, limit)` whose failure count reached its limit expires;
    /// `None` when none has.
    pub async fn blocked_for(
        &self,
        keys: &[(String, u32)],
    ) -> Result<Option<Duration>, Unavailable> {
        if keys.is_empty() {
            return Ok(None);
        }
        let wait_ms: i64 = self
            .run(|mut conn| async move {
                let script = redis::Script::new(BLOCKED_FOR);
                let mut invocation = script.prepare_invoke();
                for (key, _) in keys {
                    invocation.key(key);
                }
                for (_, limit) in keys {
                    invocation.arg(*limit);
                }
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms as u64)))
    }

    /// Forgets `keys`.
    pub async fn forget(&self, keys: &[String]) -> Result<(), Unavailable> {
        if keys.is_empty() {
            return Ok(());
        }
        let _: i64 = self
            .run(|mut conn| async move { redis::cmd("DEL").arg(keys).query_async(&mut conn).await })
            .await?;
        Ok(())
    }

    /// Runs `op` on the connection within [`OPERATION_TIMEOUT`], through the circuit.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let redis = self.redis.as_ref().ok_or(Unavailable)?;
        if redis.millis() < redis.closed_until.load(Ordering::Acquire) {
            return Err(Unavailable);
        }
        let attempt = async {
            let conn = redis.connection().await?;
            op(conn).await.map_err(|e| e.to_string())
        };
        let outcome = match tokio::time::timeout(OPERATION_TIMEOUT, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {OPERATION_TIMEOUT:?}")),
        };
        match outcome {
            Ok(value) => {
                if redis.down.swap(false, Ordering::AcqRel) {
                    tracing::info!(addr = %redis.addr, "Redis is back: limits are shared again");
                }
                metrics::gauge!("stowage_redis_up").set(1.0);
                Ok(value)
            }
            Err(error) => {
                redis.trip();
                if !redis.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        addr = %redis.addr, %error,
                        "Redis is unavailable: each instance limits on its own until it is back \
                         (retried every {RETRY_AFTER:?})"
                    );
                }
                metrics::counter!("stowage_redis_errors_total").increment(1);
                metrics::gauge!("stowage_redis_up").set(0.0);
                Err(Unavailable)
            }
        }
    }
}

impl Redis {
    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn trip(&self) {
        self.closed_until.store(self.millis() + RETRY_AFTER.as_millis() as u64, Ordering::Release);
    }

    /// The connection, made on first use (and again after a failed first attempt).
    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(OPERATION_TIMEOUT)
            .set_response_timeout(OPERATION_TIMEOUT)
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|e| e.to_string())?;
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_be_host_and_port() {
        let s = |addr: &str| RedisSettings { addr: addr.into(), ..Default::default() };
        assert!(s("127.0.0.1:6379").validate().is_ok());
        assert!(s("redis.internal:6380").validate().is_ok());
        assert!(s("[::1]:6379").validate().is_ok());
        for bad in ["", "127.0.0.1", ":6379", "host:port", "host:99999"] {
            let e = s(bad).validate().unwrap_err();
            assert!(e.contains("redis.addr"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn without_redis_everything_is_unavailable_at_once() {
        let shared = Shared::local();
        assert_eq!(shared.gcra("k", Duration::from_secs(1), 1).await, Err(Unavailable));
        assert_eq!(shared.blocked_for(&[("k".into(), 1)]).await, Err(Unavailable));
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_then_stays_out_of_the_way() {
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let shared = Shared::redis(&RedisSettings {
            addr: format!("127.0.0.1:{port}"),
            ..Default::default()
        })
        .unwrap();
        let started = Instant::now();
        assert_eq!(shared.gcra("k", Duration::from_secs(1), 1).await, Err(Unavailable));
        assert!(started.elapsed() < OPERATION_TIMEOUT * 2, "{:?}", started.elapsed());
        // In the retry window: no attempt at all.
        let started = Instant::now();
        for _ in 0..100 {
            assert_eq!(shared.gcra("k", Duration::from_secs(1), 1).await, Err(Unavailable));
        }
        assert!(started.elapsed() < Duration::from_millis(50), "{:?}", started.elapsed());
    }

    /// Against the Redis on `STOWAGE_TEST_REDIS` (default 127.0.0.1:6379), when it answers.
    async fn test_redis() -> Option<Shared> {
        let addr = std::env::var("STOWAGE_TEST_REDIS").unwrap_or_else(|_| "127.0.0.1:6379".into());
        let shared = Shared::redis(&RedisSettings { addr, ..Default::default() }).unwrap();
        match shared.forget(&["stowage:test:probe".into()]).await {
            Ok(()) => Some(shared),
            Err(_) => {
                eprintln!("no Redis on STOWAGE_TEST_REDIS: skipped");
                None
            }
        }
    }

    fn unique(name: &str) -> String {
        format!("stowage:test:{name}:{}:{:?}", std::process::id(), Instant::now())
    }

    #[tokio::test]
    async fn gcra_allows_the_burst_then_one_per_interval() {
        let Some(shared) = test_redis().await else { return };
        let key = unique("gcra");
        let interval = Duration::from_millis(200);
        for i in 0..3 {
            assert_eq!(shared.gcra(&key, interval, 3).await, Ok(None), "request {i}");
        }
        let wait = shared.gcra(&key, interval, 3).await.unwrap().expect("the fourth is refused");
        assert!(wait > Duration::ZERO && wait <= interval, "{wait:?}");
        tokio::time::sleep(wait + Duration::from_millis(5)).await;
        assert_eq!(shared.gcra(&key, interval, 3).await, Ok(None));
        assert!(shared.gcra(&key, interval, 3).await.unwrap().is_some());
        shared.forget(&[key]).await.unwrap();
    }

    #[tokio::test]
    async fn failure_windows_count_and_block_until_they_expire() {
        let Some(shared) = test_redis().await else { return };
        let (a, b) = (unique("fail-a"), unique("fail-b"));
        let window = Duration::from_secs(2);
        for _ in 0..3 {
            shared.count_failure(&[a.clone(), b.clone()], window).await.unwrap();
        }
        assert_eq!(shared.blocked_for(&[(a.clone(), 4), (b.clone(), 4)]).await, Ok(None));
        let wait = shared.blocked_for(&[(a.clone(), 4), (b.clone(), 3)]).await.unwrap().unwrap();
        assert!(wait <= window && wait > Duration::from_millis(1500), "{wait:?}");
        shared.forget(std::slice::from_ref(&b)).await.unwrap();
        assert_eq!(shared.blocked_for(&[(b.clone(), 1)]).await, Ok(None));
        shared.forget(&[a]).await.unwrap();
    }
}
