//! Secrets: password hashing (argon2) and random tokens stored as SHA-256 hashes.
//!
//! Tokens carry 190 bits of randomness, so a fast hash is enough to store them safely; the
//! database lookup is by hash, and the final comparison is constant-time. Passwords are
//! low-entropy and get argon2id.
//!
//! Argon2 is slow and memory-hungry on purpose (tens of milliseconds and 19 MiB per hash), so it
//! never runs on the async worker threads that serve requests: every hash and verification goes
//! through one bounded pool ([`verify_password`], [`hash_password`]) of dedicated threads, half
//! the cores, with at most [`MAX_WAITING`] jobs waiting. A flood of logins thus slows logins,
//! not the registry, and what does not fit is refused at once ([`Busy`]) instead of queueing
//! without end. Each pool thread keeps its argon2 memory and reuses it: allocating 19 MiB per
//! hash made glibc's allocator keep hundreds of MiB after a burst of logins (measured: 17 to
//! 227 MiB RSS after 100 logins), where the pool now holds 19 MiB per thread, for good.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::Rng;
use sha2::Digest;
use subtle::ConstantTimeEq;

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

/// Argon2 working memory, reused from one hash to the next by a pool thread.
type Memory = Vec<Block>;

/// Memory a pool thread keeps between hashes at most (blocks of 1 KiB): enough for the
/// default parameters; a stored hash asking for more gets a one-off allocation.
const KEPT_BLOCKS: usize = 64 * 1024;

/// Runs argon2 with `params` into `out`, in `memory` when it is big enough to keep.
fn argon2_into(
    memory: &mut Memory,
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    if blocks > KEPT_BLOCKS {
        return argon2.hash_password_into(password, salt, out);
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
}

/// An argon2id hash (default parameters) of `password` in PHC string form.
fn hash_password_with(memory: &mut Memory, password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let params = Params::default();
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes).expect("a generated salt decodes");
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        let (alg, version) = (Algorithm::Argon2id, Version::V0x13);
        Ok(argon2_into(memory, alg, version, params.clone(), password.as_bytes(), salt_bytes, out)?)
    })
    .expect("argon2 hashing with default parameters cannot fail");
    PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).expect("default parameters are valid"),
        salt: Some(salt.as_salt()),
        hash: Some(output),
    }
    .to_string()
}

/// Whether `password` matches the argon2 PHC string `stored` (compared in constant time).
fn verify_password_with(memory: &mut Memory, password: &str, stored: &str) -> bool {
    let check = |memory: &mut Memory, stored: &str| -> Option<bool> {
        let hash = PasswordHash::new(stored).ok()?;
        let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
        let version = hash.version.map(Version::try_from).transpose().ok()?.unwrap_or_default();
        let params = Params::try_from(&hash).ok()?;
        let expected = hash.hash?;
        let mut salt_bytes = [0u8; 64];
        let salt = hash.salt?.decode_b64(&mut salt_bytes).ok()?;
        let computed = Output::init_with(expected.len(), |out| {
            Ok(argon2_into(memory, algorithm, version, params, password.as_bytes(), salt, out)?)
        })
        .ok()?;
        // `Output`'s equality is constant-time.
        Some(computed == expected)
    };
    match check(memory, stored) {
        Some(matches) => matches,
        // A malformed stored hash still costs a verification, so it is not told apart by time.
        None => {
            let _ = check(memory, DUMMY_HASH);
            false
        }
    }
}

/// The argon2id hash (default parameters, as [`hash_password`] makes) of a random password that
/// was thrown away. Failed logins that had no real password to check verify against it, so
/// every failure costs the same time: an unknown or blocked user, a deploy or CI username with
/// a wrong secret look exactly like a real user with a wrong password.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$wp72ri/oImkz+sWJwi85YQ$uqMjlm4BlCZ/cTPSGYIRv47NvPaN+AfutLssdB12inU";

/// Hashes and verifications waiting for a pool thread, at most; more are refused with [`Busy`].
pub const MAX_WAITING: usize = 128;

/// The password pool is full: the caller should answer 429 with `Retry-After`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the server is busy checking other passwords; try again in a moment")]
pub struct Busy;

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// A bounded pool for argon2 work: `threads` dedicated threads, each with its own memory, and a
/// line of at most `max_waiting` jobs. A job whose request was abandoned still runs (the line
/// is bounded, so this is bounded too) and its result is dropped.
struct PasswordPool {
    jobs: SyncSender<Job>,
}

impl PasswordPool {
    fn new(threads: usize, max_waiting: usize) -> PasswordPool {
        let (jobs, line) = sync_channel::<Job>(max_waiting);
        let line = Arc::new(Mutex::new(line));
        for i in 0..threads.max(1) {
            let line = line.clone();
            std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || work_through(&line))
                .expect("start a password pool thread");
        }
        PasswordPool { jobs }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (reply, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = reply.send(work(memory));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Busy),
            Err(TrySendError::Disconnected(_)) => panic!("the password pool threads are gone"),
        }
        Ok(result.await.expect("a password job panicked"))
    }
}

/// A pool thread: takes jobs from the line until the pool is dropped.
fn work_through(line: &Mutex<Receiver<Job>>) {
    let mut memory = Memory::new();
    loop {
        let job = match line.lock().expect("password line lock").recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A panicking job (none is expected) must not take the thread, and its memory, along.
        let run = std::panic::AssertUnwindSafe(|| job(&mut memory));
        if std::panic::catch_unwind(run).is_err() {
            memory = Memory::new();
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
    POOL.run(move |memory| hash_password_with(memory, &password)).await
}

/// Whether `password` matches the argon2 hash `stored`, checked on the password pool.
pub async fn verify_password(password: &str, stored: &str) -> Result<bool, Busy> {
    let (password, stored) = (password.to_string(), stored.to_string());
    POOL.run(move |memory| verify_password_with(memory, &password, &stored)).await
}

/// A generated password for the first admin: 24 alphanumeric characters.
pub fn new_password() -> String {
    new_token("")[..24].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_now(password: &str) -> String {
        hash_password_with(&mut Memory::new(), password)
    }

    fn verify_now(password: &str, stored: &str) -> bool {
        verify_password_with(&mut Memory::new(), password, stored)
    }

    #[test]
    fn passwords_and_tokens() {
        let mut memory = Memory::new();
        let h = hash_password_with(&mut memory, "correct horse");
        assert!(verify_password_with(&mut memory, "correct horse", &h));
        assert!(!verify_password_with(&mut memory, "wrong", &h));
        assert!(!verify_now("x", "not a hash"));
        assert_eq!(memory.len(), Params::DEFAULT_M_COST as usize, "the memory is kept");
        let t = new_token(PAT_PREFIX);
        assert!(t.starts_with(PAT_PREFIX) && t.len() == 37);
        assert_ne!(t, new_token(PAT_PREFIX));
        assert!(hashes_equal(&token_hash(&t), &token_hash(&t)));
        assert!(!hashes_equal(&token_hash(&t), &token_hash("other")));
    }

    /// Hashes made here and by the argon2 crate's own API check out against each other, with
    /// other parameters too (argon2i, fewer passes, a longer output).
    #[test]
    fn compatible_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_now("s3cret");
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"s3cret", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"other", &parsed).is_err());
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let theirs = Argon2::default().hash_password(b"s3cret", &salt).unwrap().to_string();
        assert!(verify_now("s3cret", &theirs));
        assert!(!verify_now("s3cre", &theirs));
        let params = Params::new(1024, 1, 1, Some(48)).unwrap();
        let other = Argon2::new(Algorithm::Argon2i, Version::V0x10, params)
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        assert!(verify_now("s3cret", &other), "{other}");
        assert!(!verify_now("wrong", &other));
    }

    /// The dummy hash costs what a real one does: same algorithm and parameters.
    #[test]
    fn dummy_hash_has_the_parameters_of_real_hashes() {
        let real = hash_now("anything");
        let params = |h: &str| h.rsplitn(3, '$').nth(2).unwrap().to_string();
        assert_eq!(params(DUMMY_HASH), params(&real));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify_now("", DUMMY_HASH));
    }

    /// At most `threads` jobs run at once, at most `max_waiting` wait, the rest are refused at
    /// once; a job whose caller went away still runs, and the pool is free again after.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_is_bounded() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;
        let pool = Arc::new(PasswordPool::new(2, 3));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let submit = |tasks: &mut Vec<tokio::task::JoinHandle<Result<(), Busy>>>| {
            let (pool, running, most, gate, done) =
                (pool.clone(), running.clone(), most.clone(), gate.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move |_| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    gate.lock().unwrap().recv().unwrap();
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                })
                .await
            }));
        };
        let mut tasks = Vec::new();
        submit(&mut tasks);
        submit(&mut tasks);
        while running.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // 2 run; 3 wait, and the line is full: the next one is refused without waiting.
        for _ in 0..3 {
            submit(&mut tasks);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(pool.run(|_| ()).await, Err(Busy)));
        // One caller goes away while its job waits.
        tasks.pop().unwrap().abort();
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
        while done.load(Ordering::SeqCst) < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(pool.run(|_| 7).await.unwrap(), 7);
    }
}
