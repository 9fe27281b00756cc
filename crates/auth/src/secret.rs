//! Secrets: password hashing (argon2) and random tokens stored as SHA-256 hashes.
//!
//! Tokens carry 190 bits of randomness, so a fast hash is enough to store them safely; the
//! database lookup is by hash, and the final comparison is constant-time. Passwords are
//! low-entropy and get argon2id.
//!
//! Argon2 is slow and memory-hungry on purpose (tens of milliseconds and 19 MiB per hash), so it
//! never runs on the async worker threads that serve requests: every hash and verification goes
//! through one bounded pool ([`verify_password`], [`hash_password`]) that uses at most half the
//! cores and lets at most [`MAX_WAITING`] more wait. A flood of logins thus slows logins, not
//! the registry, and what does not fit is refused at once ([`Busy`]) instead of queueing
//! without end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;
use sha2::Digest;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// Prefix of personal access tokens.
pub const PAT_PREFIX: &str = "stwp_";
/// Prefix of deploy tokens.
pub const DEPLOY_PREFIX: &str = "stwd_";
/// Prefix of CI job tokens.
pub const JOB_PREFIX: &str = "stwj_";

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new random token: `prefix` + 32 alphanumeric characters.
pub fn new_token(prefix: &str) -> String {
    let mut rng = rand::rngs::OsRng;
    let body: String =
        (0..32).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    format!("{prefix}{body}")
}

/// The stored form of a token: hex SHA-256.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Constant-time equality of two stored hashes.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn hash_password_now(password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with default parameters cannot fail")
        .to_string()
}

fn verify_password_now(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(hash) => Argon2::default().verify_password(password.as_bytes(), &hash).is_ok(),
        // A malformed stored hash still costs a verification, so it is not told apart by time.
        Err(_) => {
            let _ = verify_password_now(password, DUMMY_HASH);
            false
        }
    }
}

/// The argon2id hash (default parameters, as [`hash_password`] makes) of a random password that
/// was thrown away. Failed logins that had no real password to check verify against it, so
/// every failure costs the same time: an unknown or blocked user, a deploy or CI username with
/// a wrong secret look exactly like a real user with a wrong password.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$wp72ri/oImkz+sWJwi85YQ$uqMjlm4BlCZ/cTPSGYIRv47NvPaN+AfutLssdB12inU";

/// Hashing and verification waiting for a free slot, at most; more are refused with [`Busy`].
pub const MAX_WAITING: usize = 128;

/// The password pool is full: the caller should answer 429 with `Retry-After`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server is busy checking other passwords; try again in a moment")]
pub struct Busy;

/// A bounded pool for argon2 work: `slots` run at once on tokio's blocking threads, at most
/// `max_waiting` wait for a slot.
struct PasswordPool {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Leaves the waiting line when dropped (also when the waiting request is abandoned).
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordPool {
    fn new(slots: usize, max_waiting: usize) -> PasswordPool {
        PasswordPool {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return Err(Busy);
                }
                let _in_line = InLine(&self.waiting);
                self.slots.clone().acquire_owned().await.expect("the password pool never closes")
            }
        };
        // The slot moves into the blocking task: if the request is abandoned meanwhile, the
        // hash still finishes before the slot is free again, so the bound always holds.
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        });
        match task.await {
            Ok(value) => Ok(value),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Half the cores (at least one) hash passwords; the others keep serving requests.
static POOL: LazyLock<PasswordPool> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    PasswordPool::new((cores / 2).max(1), MAX_WAITING)
});

/// An argon2id hash of `password`, computed on the password pool.
pub async fn hash_password(password: &str) -> Result<String, Busy> {
    let password = password.to_string();
    POOL.run(move || hash_password_now(&password)).await
}

/// Whether `password` matches the argon2 hash `stored`, checked on the password pool.
pub async fn verify_password(password: &str, stored: &str) -> Result<bool, Busy> {
    let (password, stored) = (password.to_string(), stored.to_string());
    POOL.run(move || verify_password_now(&password, &stored)).await
}

/// A generated password for the first admin: 24 alphanumeric characters.
pub fn new_password() -> String {
    new_token("")[..24].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens() {
        let h = hash_password_now("correct horse");
        assert!(verify_password_now("correct horse", &h));
        assert!(!verify_password_now("wrong", &h));
        assert!(!verify_password_now("x", "not a hash"));
        let t = new_token(PAT_PREFIX);
        assert!(t.starts_with(PAT_PREFIX) && t.len() == 37);
        assert_ne!(t, new_token(PAT_PREFIX));
        assert!(hashes_equal(&token_hash(&t), &token_hash(&t)));
        assert!(!hashes_equal(&token_hash(&t), &token_hash("other")));
    }

    /// The dummy hash costs what a real one does: same algorithm and parameters.
    #[test]
    fn dummy_hash_has_the_parameters_of_real_hashes() {
        let real = hash_password_now("anything");
        let params = |h: &str| h.rsplitn(3, '$').nth(2).unwrap().to_string();
        assert_eq!(params(DUMMY_HASH), params(&real));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify_password_now("", DUMMY_HASH));
    }

    /// At most `slots` run at once, at most `max_waiting` wait, the rest are refused at once;
    /// abandoned waiters leave the line.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_is_bounded() {
        use std::sync::atomic::AtomicUsize;
        use std::time::Duration;
        let pool = Arc::new(PasswordPool::new(2, 3));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (pool, running, most, gate) =
                (pool.clone(), running.clone(), most.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    gate.lock().unwrap().recv().unwrap();
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        // 2 run, 3 wait: the line is full, so the next one is refused without waiting.
        while pool.waiting.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(pool.run(|| ()).await.is_err());
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(pool.waiting.load(Ordering::SeqCst), 0);
        // A waiter whose request is abandoned gives its place in line back.
        let abandoned = tokio::time::timeout(Duration::from_millis(1), async {
            let _hold = pool.slots.clone().acquire_many_owned(2).await.unwrap();
            pool.run(|| ()).await
        })
        .await;
        assert!(abandoned.is_err());
        assert_eq!(pool.waiting.load(Ordering::SeqCst), 0);
        assert!(pool.run(|| 7).await.is_ok());
    }
}
