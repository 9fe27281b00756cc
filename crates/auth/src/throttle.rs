//! Throttling of failed logins.
//!
//! Failures are counted per client address (at most [`MAX_ADDRESS_FAILURES`] per
//! [`LOGIN_WINDOW`]) and per client address and username (at most [`MAX_PAIR_FAILURES`]).
//! Every key contains the client address, so failures from one address never refuse a
//! credential presented from another: guessing `root`'s password from one place cannot lock
//! `root` out, and ten bad CI logins cannot stop CI. The username every CI job token shares is
//! never part of a key (each job has its own secret, so its failures say nothing about the
//! next job); only the address limit applies to it.
//!
//! IPv6 clients are counted by their /64 prefix, which one end site usually gets whole: an
//! attacker with a /64 must not get 2^64 fresh addresses to guess from.
//!
//! Memory is bounded whatever clients send: keys are stored as 16-byte salted hashes (a 2 MB
//! username costs what a short one does), expired windows are dropped, and at most
//! [`MAX_ENTRIES`] are kept — when full, the oldest windows go first.
//!
//! With Redis configured (`redis.addr`) failures are also counted there, under keys that are
//! the full SHA-256 of the same parts (unsalted, so every instance computes the same key; at
//! 32 bytes nobody can make two collide), and an attempt is refused when either count says so:
//! the instances of a fleet share one limit, and while Redis is away each still has its own.
//!
//! The `governor` crate was considered: its keyed limiters count every check as a use and
//! have no way to ask "is this key blocked?" without spending, while a login limit must count
//! only failures and look before hashing; its keyed store also has no size cap. A fixed window
//! over a capped map is what this needs, in a hundred lines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Failed logins allowed per client address and username within [`LOGIN_WINDOW`].
pub const MAX_PAIR_FAILURES: u32 = 10;
/// Failed logins allowed per client address: higher, since many users (a CI runner, an
/// office behind NAT) may share one address and one user's typos must not lock them all out.
pub const MAX_ADDRESS_FAILURES: u32 = 50;
/// How long failures are remembered (a fixed window from the first failure).
pub const LOGIN_WINDOW: Duration = Duration::from_secs(300);
/// Windows kept at most.
pub const MAX_ENTRIES: usize = 100_000;

type KeyHash = [u8; 16];

/// One throttling key (a client address, or an address and a username) with the failures it
/// allows per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitKey {
    hash: KeyHash,
    /// The key in Redis: `stowage:login:<sha-256 hex>`.
    shared: [u8; 32],
    max: u32,
}

impl LimitKey {
    fn shared_key(&self) -> String {
        format!("stowage:login:{}", hex::encode(self.shared))
    }
}

#[derive(Clone, Copy, Debug)]
struct Window {
    failures: u32,
    started: Instant,
}

/// Counts failed logins per [`LimitKey`] in fixed windows; see the module docs.
pub struct LoginLimiter {
    windows: Mutex<HashMap<KeyHash, Window>>,
    /// Redis, when configured: the counts every instance shares.
    shared: shared::Shared,
    /// Random per process, so nobody can choose usernames whose keys collide.
    salt: [u8; 16],
    capacity: usize,
    window: Duration,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::with_capacity(MAX_ENTRIES)
    }
}

/// The part of an address clients are counted by: IPv4 addresses whole, IPv6 by /64.
fn counted_part(client: IpAddr) -> Vec<u8> {
    match client.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
    }
}

impl LoginLimiter {
    pub fn with_capacity(capacity: usize) -> LoginLimiter {
        LoginLimiter {
            windows: Mutex::new(HashMap::new()),
            shared: shared::Shared::local(),
            salt: rand::random(),
            capacity: capacity.max(1),
            window: LOGIN_WINDOW,
        }
    }

    /// This limiter, sharing its counts through `shared` (Redis) when that is configured.
    pub fn sharing(mut self, shared: shared::Shared) -> LoginLimiter {
        self.shared = shared;
        self
    }

    fn key(&self, parts: &[&[u8]], max: u32) -> LimitKey {
        let mut salted = Sha256::new();
        salted.update(self.salt);
        let mut unsalted = Sha256::new();
        for part in parts {
            // Length-prefixed, so no two different part lists hash the same input.
            for hasher in [&mut salted, &mut unsalted] {
                hasher.update((part.len() as u64).to_be_bytes());
                hasher.update(part);
            }
        }
        let digest = salted.finalize();
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&digest[..16]);
        LimitKey { hash, shared: unsalted.finalize().into(), max }
    }

    /// The key of a client address alone.
    pub fn address_key(&self, client: IpAddr) -> LimitKey {
        self.key(&[b"address", &counted_part(client)], MAX_ADDRESS_FAILURES)
    }

    /// The keys a login attempt for `username` from `client` counts against.
    pub fn keys(&self, client: IpAddr, username: &str) -> Vec<LimitKey> {
        let mut keys = vec![self.address_key(client)];
        if !crate::is_ci_username(username) {
            let pair = self.key(
                &[b"address+username", &counted_part(client), username.as_bytes()],
                MAX_PAIR_FAILURES,
            );
            keys.push(pair);
        }
        keys
    }

    /// How long until an attempt with `keys` is allowed again; `None` when it is allowed now.
    /// Asks Redis too when it is configured (and up); the longer wait wins.
    pub async fn blocked(&self, keys: &[LimitKey]) -> Option<Duration> {
        let local = self.blocked_at(keys, Instant::now());
        if !self.shared.is_configured() {
            return local;
        }
        let shared_keys: Vec<(String, u32)> =
            keys.iter().map(|k| (k.shared_key(), k.max)).collect();
        let shared = self.shared.blocked_for(&shared_keys).await.unwrap_or(None);
        local.max(shared)
    }

    fn blocked_at(&self, keys: &[LimitKey], now: Instant) -> Option<Duration> {
        let windows = self.windows.lock().expect("limiter lock");
        keys.iter()
            .filter_map(|key| {
                let w = windows.get(&key.hash)?;
                let elapsed = now.saturating_duration_since(w.started);
                (w.failures >= key.max && elapsed < self.window).then(|| self.window - elapsed)
            })
            .max()
    }

    /// Records a failed attempt against every key, here and in Redis when configured.
    pub async fn failed(&self, keys: &[LimitKey]) {
        self.failed_at(keys, Instant::now());
        if self.shared.is_configured() {
            let shared_keys: Vec<String> = keys.iter().map(LimitKey::shared_key).collect();
            let _ = self.shared.count_failure(&shared_keys, self.window).await;
        }
    }

    fn failed_at(&self, keys: &[LimitKey], now: Instant) {
        let mut windows = self.windows.lock().expect("limiter lock");
        for key in keys {
            if !windows.contains_key(&key.hash) && windows.len() >= self.capacity {
                self.make_room(&mut windows, now);
            }
            let w = windows.entry(key.hash).or_insert(Window { failures: 0, started: now });
            if now.saturating_duration_since(w.started) >= self.window {
                *w = Window { failures: 0, started: now };
            }
            w.failures = w.failures.saturating_add(1);
        }
    }

    /// A successful login forgets the failures of its address and username (typos before the
    /// right password); the address's own count stays.
    pub async fn succeeded(&self, keys: &[LimitKey]) {
        self.succeeded_local(keys);
        if self.shared.is_configured() {
            let pairs: Vec<String> = keys
                .iter()
                .filter(|k| k.max == MAX_PAIR_FAILURES)
                .map(LimitKey::shared_key)
                .collect();
            let _ = self.shared.forget(&pairs).await;
        }
    }

    fn succeeded_local(&self, keys: &[LimitKey]) {
        let mut windows = self.windows.lock().expect("limiter lock");
        for key in keys.iter().filter(|k| k.max == MAX_PAIR_FAILURES) {
            windows.remove(&key.hash);
        }
    }

    /// Drops expired windows; if that frees too little, the oldest eighth of the windows, so
    /// a full map is not scanned again on every failure.
    fn make_room(&self, windows: &mut HashMap<KeyHash, Window>, now: Instant) {
        windows.retain(|_, w| now.saturating_duration_since(w.started) < self.window);
        if windows.len() < self.capacity {
            return;
        }
        let mut by_age: Vec<(Instant, KeyHash)> =
            windows.iter().map(|(k, w)| (w.started, *k)).collect();
        let evict = (self.capacity / 8).max(1).min(by_age.len());
        by_age.select_nth_unstable(evict - 1);
        for (_, key) in &by_age[..evict] {
            windows.remove(key);
        }
    }

    /// Windows kept (for tests and metrics).
    pub fn len(&self) -> usize {
        self.windows.lock().expect("limiter lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));

    fn fail(l: &LoginLimiter, client: IpAddr, user: &str, times: u32, now: Instant) {
        for _ in 0..times {
            l.failed_at(&l.keys(client, user), now);
        }
    }

    #[test]
    fn failures_from_one_address_never_block_another() {
        let l = LoginLimiter::default();
        let now = Instant::now();
        fail(&l, A, "root", MAX_PAIR_FAILURES - 1, now);
        assert_eq!(l.blocked_at(&l.keys(A, "root"), now), None);
        fail(&l, A, "root", 1, now);
        assert_eq!(l.blocked_at(&l.keys(A, "root"), now), Some(LOGIN_WINDOW));
        // Same user elsewhere, another user at A: not blocked.
        assert_eq!(l.blocked_at(&l.keys(B, "root"), now), None);
        assert_eq!(l.blocked_at(&l.keys(A, "alice"), now), None);
        // The window ends.
        let later = now + LOGIN_WINDOW;
        assert_eq!(l.blocked_at(&l.keys(A, "root"), later), None);
        assert!(l.blocked_at(&l.keys(A, "root"), now + Duration::from_secs(299)).is_some());
    }

    #[test]
    fn the_address_limit_covers_every_username_and_ci_logins() {
        let l = LoginLimiter::default();
        let now = Instant::now();
        // CI logins have no username key: 40 failures do not block CI from A...
        fail(&l, A, crate::CI_USERNAME, 40, now);
        fail(&l, A, "gitlab-ci-token", 5, now);
        assert_eq!(l.blocked_at(&l.keys(A, crate::CI_USERNAME), now), None);
        // ...but the address limit counts them, and then blocks everything from A.
        for i in 0..5 {
            fail(&l, A, &format!("user{i}"), 1, now);
        }
        assert!(l.blocked_at(&l.keys(A, crate::CI_USERNAME), now).is_some());
        assert!(l.blocked_at(&l.keys(A, "someone-new"), now).is_some());
        assert_eq!(l.blocked_at(&l.keys(B, crate::CI_USERNAME), now), None);
    }

    #[test]
    fn success_forgets_the_usernames_failures_not_the_addresses() {
        let l = LoginLimiter::default();
        let now = Instant::now();
        fail(&l, A, "alice", MAX_PAIR_FAILURES - 1, now);
        l.succeeded_local(&l.keys(A, "alice"));
        fail(&l, A, "alice", MAX_PAIR_FAILURES - 1, now);
        assert_eq!(l.blocked_at(&l.keys(A, "alice"), now), None);
        fail(&l, A, "bob", MAX_ADDRESS_FAILURES - 2 * (MAX_PAIR_FAILURES - 1), now);
        assert!(l.blocked_at(&[l.address_key(A)], now).is_some());
    }

    #[test]
    fn ipv6_clients_count_by_64_prefix_and_mapped_ipv4_as_ipv4() {
        let l = LoginLimiter::default();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(l.address_key(one), l.address_key(same_64));
        assert_ne!(l.address_key(one), l.address_key(other_64));
        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped());
        assert_eq!(l.address_key(mapped), l.address_key(A));
        assert_ne!(l.address_key(IpAddr::V6(Ipv6Addr::LOCALHOST)), l.address_key(A));
    }

    #[test]
    fn keys_are_fixed_size_and_distinct() {
        let l = LoginLimiter::default();
        let huge = "u".repeat(2_000_000);
        let keys = l.keys(A, &huge);
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[1], l.keys(A, "u")[1]);
        assert_eq!(l.keys(A, crate::CI_USERNAME), vec![l.address_key(A)]);
        // Another process (another salt) has other keys.
        assert_ne!(LoginLimiter::default().address_key(A), l.address_key(A));
    }

    #[test]
    fn memory_is_bounded_expired_first_then_oldest() {
        let l = LoginLimiter::with_capacity(1_000);
        let start = Instant::now();
        // 600 windows that expire, then a flood of fresh ones from distinct addresses.
        for i in 0..600u32 {
            fail(&l, IpAddr::V4(Ipv4Addr::from(i)), crate::CI_USERNAME, 1, start);
        }
        let later = start + LOGIN_WINDOW + Duration::from_secs(1);
        for i in 0..5_000u32 {
            let client = IpAddr::V4(Ipv4Addr::from(1_000_000 + i));
            fail(&l, client, "root", 1, later + Duration::from_millis(i as u64));
            assert!(l.len() <= 1_000, "{} windows after {i} failures", l.len());
        }
        // The newest windows are kept (the attacker's latest address is still counted).
        let last = IpAddr::V4(Ipv4Addr::from(1_000_000 + 4_999));
        assert!(l.windows.lock().unwrap().contains_key(&l.address_key(last).hash));
        // Counting stays correct for a key that is kept: 10 failures still block.
        let now = later + Duration::from_secs(10);
        fail(&l, B, "root", MAX_PAIR_FAILURES, now);
        assert!(l.blocked_at(&l.keys(B, "root"), now).is_some());
    }
}
