//! Request rate limits per credential and per client address (`ratelimit.*`).
//!
//! Every request to a limited class ([`RateClass`]) is counted against the key of its client
//! address (IPv4 whole, IPv6 by /64, as the login throttle counts) and, when it presents a
//! credential, against the key of that credential too; it is refused when any of its keys is
//! over the limit. [`rate_keys`] is the one place that decides the keys. A credential's key is
//! a hash of what the client sent (never a claim read from an unverified token), so nobody can
//! spend another's allowance, and an invented credential still counts against its address.
//!
//! The algorithm is GCRA (a token bucket: `burst` requests at once, then `rate` per second).
//! With Redis configured, instances share the counts through one Lua script per key
//! ([`shared::Shared::gcra`]); without it, or while Redis is away, each process counts on its
//! own with `governor` — a fleet of N then allows up to N times the limit, never less.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};

/// What a request is limited as (the HTTP layer decides it from the request's surface).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RateClass {
    /// `GET`/`HEAD` under `/v2` (off by default).
    Pull,
    /// Every other method under `/v2`.
    Push,
    /// `/jwt/auth`.
    Token,
    /// `/api/v4`.
    Api,
}

impl RateClass {
    fn name(self) -> &'static str {
        match self {
            RateClass::Pull => "pull",
            RateClass::Push => "push",
            RateClass::Token => "token",
            RateClass::Api => "api",
        }
    }
}

/// A limit: `rate` requests per second on average, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub rate: f64,
    pub burst: u32,
}

impl RateLimit {
    /// The limit, or `None` when `rate` is 0 (off); an error sentence for impossible values.
    pub fn new(key: &str, rate: f64, burst: u32) -> Result<Option<RateLimit>, String> {
        if rate == 0.0 {
            return Ok(None);
        }
        if !(0.001..=1_000_000.0).contains(&rate) {
            return Err(format!(
                "{key}.rate must be 0 (off) or between 0.001 and 1000000 requests per second"
            ));
        }
        if burst == 0 {
            return Err(format!("{key}.burst must be at least 1 when {key}.rate is set"));
        }
        Ok(Some(RateLimit { rate, burst }))
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }
}

/// Per-class limits; `None` is off.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateLimits {
    pub pull: Option<RateLimit>,
    pub push: Option<RateLimit>,
    pub token: Option<RateLimit>,
    pub api: Option<RateLimit>,
}

impl RateLimits {
    fn get(&self, class: RateClass) -> Option<RateLimit> {
        match class {
            RateClass::Pull => self.pull,
            RateClass::Push => self.push,
            RateClass::Token => self.token,
            RateClass::Api => self.api,
        }
    }
}

/// One key a request is counted against: a SHA-256 over its kind and value, so neither an
/// address nor a credential is ever kept or sent to Redis in the clear.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateKey(String);

impl RateKey {
    fn of(kind: &[u8], value: &[u8]) -> RateKey {
        let mut hasher = Sha256::new();
        hasher.update((kind.len() as u64).to_be_bytes());
        hasher.update(kind);
        hasher.update(value);
        RateKey(hex::encode(hasher.finalize()))
    }
}

/// The headers a credential arrives in, on any surface: `Authorization` (Basic or Bearer), and
/// the API's `PRIVATE-TOKEN`, `JOB-TOKEN` and `DEPLOY-TOKEN`.
const CREDENTIAL_HEADERS: [&str; 4] =
    ["authorization", "private-token", "job-token", "deploy-token"];

/// THE keys a request counts against: its client address (as `client_addr` computed it), and
/// its credential if it presents one.
pub fn rate_keys(client: IpAddr, headers: &HeaderMap) -> Vec<RateKey> {
    let address = match client.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
    };
    let mut keys = vec![RateKey::of(b"address", &address)];
    for name in CREDENTIAL_HEADERS {
        if let Some(value) = headers.get(name) {
            keys.push(RateKey::of(name.as_bytes(), value.as_bytes()));
            break;
        }
    }
    keys
}

/// Keys kept per class in process at most; past that, keys idle long enough to be full again
/// are dropped, and if that is not enough the class starts over.
const MAX_LOCAL_KEYS: usize = 100_000;

/// Checks requests against [`RateLimits`]; shared through Redis when `shared` has it.
pub struct RateLimiter {
    limits: RateLimits,
    shared: shared::Shared,
    local: [RwLock<Arc<DefaultKeyedRateLimiter<RateKey>>>; 4],
}

fn index(class: RateClass) -> usize {
    match class {
        RateClass::Pull => 0,
        RateClass::Push => 1,
        RateClass::Token => 2,
        RateClass::Api => 3,
    }
}

fn local_limiter(limit: Option<RateLimit>) -> Arc<DefaultKeyedRateLimiter<RateKey>> {
    let quota = match limit {
        Some(limit) => Quota::with_period(limit.interval().max(Duration::from_nanos(1)))
            .expect("a positive period")
            .allow_burst(NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN)),
        None => Quota::per_second(NonZeroU32::MAX),
    };
    Arc::new(DefaultKeyedRateLimiter::keyed(quota))
}

impl RateLimiter {
    pub fn new(limits: RateLimits, shared: shared::Shared) -> RateLimiter {
        RateLimiter {
            limits,
            shared,
            local: [
                RwLock::new(local_limiter(limits.pull)),
                RwLock::new(local_limiter(limits.push)),
                RwLock::new(local_limiter(limits.token)),
                RwLock::new(local_limiter(limits.api)),
            ],
        }
    }

    /// Whether any class is limited at all.
    pub fn is_active(&self) -> bool {
        [RateClass::Pull, RateClass::Push, RateClass::Token, RateClass::Api]
            .iter()
            .any(|c| self.limits.get(*c).is_some())
    }

    /// `None` when the request may go on, else how long to wait; every key counts it.
    pub async fn check(&self, class: RateClass, keys: &[RateKey]) -> Option<Duration> {
        let limit = self.limits.get(class)?;
        if self.shared.is_configured() {
            let mut longest: Option<Duration> = None;
            let mut shared_ok = true;
            for key in keys {
                let redis_key = format!("stowage:rate:{}:{}", class.name(), key.0);
                match self.shared.gcra(&redis_key, limit.interval(), limit.burst).await {
                    Ok(None) => {}
                    Ok(Some(wait)) => longest = longest.max(Some(wait)),
                    Err(shared::Unavailable) => {
                        shared_ok = false;
                        break;
                    }
                }
            }
            if shared_ok {
                return longest.map(refused);
            }
        }
        self.check_local(class, keys)
    }

    fn check_local(&self, class: RateClass, keys: &[RateKey]) -> Option<Duration> {
        let slot = &self.local[index(class)];
        let limiter = slot.read().unwrap_or_else(|e| e.into_inner()).clone();
        if limiter.len() > MAX_LOCAL_KEYS {
            limiter.retain_recent();
            if limiter.len() > MAX_LOCAL_KEYS {
                *slot.write().unwrap_or_else(|e| e.into_inner()) =
                    local_limiter(self.limits.get(class));
            }
        }
        let now = DefaultClock::default().now();
        let mut longest: Option<Duration> = None;
        for key in keys {
            if let Err(not_until) = limiter.check_key(key) {
                longest = longest.max(Some(not_until.wait_time_from(now)));
            }
        }
        longest.map(refused)
    }
}

/// A wait as clients get it: at least a second (`Retry-After` counts whole seconds).
fn refused(wait: Duration) -> Duration {
    metrics::counter!("stowage_rate_limited_total").increment(1);
    wait.max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn limits(rate: f64, burst: u32) -> RateLimits {
        let limit = RateLimit::new("ratelimit.push", rate, burst).unwrap();
        RateLimits { push: limit, ..Default::default() }
    }

    #[test]
    fn keys_are_the_address_and_the_presented_credential() {
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(rate_keys(a, &headers).len(), 1);
        headers.insert("authorization", HeaderValue::from_static("Bearer x"));
        let keys = rate_keys(a, &headers);
        assert_eq!(keys.len(), 2);
        // The same credential from elsewhere has the same credential key.
        let b: IpAddr = "198.51.100.9".parse().unwrap();
        assert_eq!(rate_keys(b, &headers)[1], keys[1]);
        assert_ne!(rate_keys(b, &headers)[0], keys[0]);
        // IPv6 by /64; mapped IPv4 as IPv4.
        let v6 = |s: &str| rate_keys(s.parse().unwrap(), &HeaderMap::new())[0].clone();
        assert_eq!(v6("2001:db8:1:2::1"), v6("2001:db8:1:2:ffff::9"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("::ffff:203.0.113.7"), rate_keys(a, &HeaderMap::new())[0]);
        // No key reveals what it was made from.
        assert!(!keys[1].0.contains('x') || keys[1].0.len() == 64);
    }

    #[test]
    fn limits_refuse_impossible_values() {
        assert_eq!(RateLimit::new("k", 0.0, 0), Ok(None));
        assert!(RateLimit::new("k", -1.0, 5).unwrap_err().contains("k.rate"));
        assert!(RateLimit::new("k", f64::NAN, 5).is_err());
        assert!(RateLimit::new("k", 5.0, 0).unwrap_err().contains("k.burst"));
    }

    #[tokio::test]
    async fn in_process_the_burst_passes_then_requests_wait() {
        let limiter = RateLimiter::new(limits(1.0, 3), shared::Shared::local());
        let keys = rate_keys("203.0.113.7".parse().unwrap(), &HeaderMap::new());
        for _ in 0..3 {
            assert_eq!(limiter.check(RateClass::Push, &keys).await, None);
        }
        let wait = limiter.check(RateClass::Push, &keys).await.expect("refused");
        assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2), "{wait:?}");
        // Another class, another address: unaffected.
        assert_eq!(limiter.check(RateClass::Pull, &keys).await, None);
        let other = rate_keys("198.51.100.9".parse().unwrap(), &HeaderMap::new());
        assert_eq!(limiter.check(RateClass::Push, &other).await, None);
    }
}
