//! The durable job queue's SQL (the `jobs` table of migration 0008). The `jobs` crate runs the
//! queue — handlers, leases renewed while a job runs, backoff, periodic schedules; this module
//! only stores and claims rows, with every time given by the caller so tests control the clock.
//!
//! Claiming is race-free on both backends: on PostgreSQL the due rows are locked with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claimers on several instances never take the same
//! row; on SQLite the claim runs in a write transaction (`BEGIN IMMEDIATE`, the single writer).
//! A claim sets the lease; every later change of a claimed job names its lease owner, so an
//! instance that lost its lease (it stalled, another took the job over) changes nothing.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::store::{get_i64, placeholders, Backend, MetaError, Store, WriteTx};

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its `run_at`.
    Queued,
    /// Claimed by an instance whose lease runs until `lease_until`.
    Running,
    Succeeded,
    /// Its last attempt failed; it is retried at `run_at`.
    Failed,
    /// It failed `max_attempts` times, or failed in a way a retry cannot fix.
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the job is done for good (kept for the retention period, then pruned).
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to enqueue.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub kind: String,
    pub payload: serde_json::Value,
    /// At most one job exists per key (until pruned): enqueueing a key again returns the job
    /// that has it.
    pub dedupe_key: Option<String>,
    pub run_at: i64,
    pub max_attempts: i64,
}

/// A job row.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: serde_json::Value,
    pub dedupe_key: Option<String>,
    pub state: JobState,
    /// Attempts started so far, the running one included.
    pub attempts: i64,
    pub max_attempts: i64,
    pub run_at: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// What [`Store::enqueue_job`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub id: i64,
    /// False when a job with the same dedupe key existed already (`id` is that job's).
    pub created: bool,
}

/// Which jobs [`Store::list_jobs`] lists, newest first.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub limit: i64,
}

/// The error recorded for a job taken over from an instance whose lease ran out.
pub const LEASE_EXPIRED: &str =
    "lease expired: the instance running it stopped or stalled before it finished";

fn job_from_row(r: &AnyRow) -> Job {
    let payload: String = r.get("payload");
    let state: String = r.get("state");
    Job {
        id: get_i64(r, "id"),
        kind: r.get("kind"),
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        dedupe_key: r.get("dedupe_key"),
        // Only this module writes states.
        state: JobState::parse(&state).unwrap_or(JobState::Dead),
        attempts: get_i64(r, "attempts"),
        max_attempts: get_i64(r, "max_attempts"),
        run_at: get_i64(r, "run_at"),
        lease_owner: r.get("lease_owner"),
        lease_until: r.get::<Option<i64>, _>("lease_until"),
        last_error: r.get("last_error"),
        created_at: get_i64(r, "created_at"),
        started_at: r.get::<Option<i64>, _>("started_at"),
        finished_at: r.get::<Option<i64>, _>("finished_at"),
    }
}

impl WriteTx<'_> {
    /// Adds a job in this transaction (so it exists exactly when the change that needs it
    /// does), or finds the one that already has its dedupe key.
    pub async fn insert_job(&mut self, job: &NewJob, now: i64) -> Result<Enqueued, MetaError> {
        let inserted = sqlx::query(
            "INSERT INTO jobs (kind, payload, dedupe_key, state, attempts, max_attempts, run_at, \
             created_at) VALUES ($1, $2, $3, 'queued', 0, $4, $5, $6) \
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        )
        .bind(&job.kind)
        .bind(job.payload.to_string())
        .bind(job.dedupe_key.as_deref())
        .bind(job.max_attempts.max(1))
        .bind(job.run_at)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(match inserted {
            Some(row) => Enqueued { id: get_i64(&row, "id"), created: true },
            None => {
                let row = sqlx::query("SELECT id FROM jobs WHERE dedupe_key = $1")
                    .bind(job.dedupe_key.as_deref())
                    .fetch_optional(&mut *self.tx)
                    .await?
                    .ok_or(MetaError::NotFound("job"))?;
                Enqueued { id: get_i64(&row, "id"), created: false }
            }
        })
    }
}

// The queue's own bookkeeping (enqueue, lease renewal, outcome, pruning) runs on
// `background_write_tx`: the GC workers give way to foreground writes (pushes), and a periodic
// job's lease renewal each second is not one — counted as one, it kept GC in small batches.
impl Store {
    /// Adds a job, or finds the one that already has its dedupe key.
    pub async fn enqueue_job(&self, job: &NewJob, now: i64) -> Result<Enqueued, MetaError> {
        let mut w = self.background_write_tx().await?;
        let enqueued = w.insert_job(job, now).await?;
        w.commit().await?;
        Ok(enqueued)
    }

    /// Claims up to `limit` jobs of `kinds` that are due at `now` — queued or failed with
    /// `run_at` reached, or running under a lease that ran out — for `owner` until
    /// `now + lease_ms`, counting an attempt each. A job whose lease ran out on its last
    /// attempt is marked dead instead (a job that kills its instance every time must stop).
    pub async fn claim_jobs(
        &self,
        kinds: &[&str],
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Job>, MetaError> {
        if kinds.is_empty() || limit <= 0 {
            return Ok(Vec::new());
        }
        // Every worker polls this each second: bookkeeping, not a write GC should give way to.
        let mut w = self.background_write_tx().await?;
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let exhausted = format!(
            "SELECT id FROM jobs WHERE kind IN ({}) AND state = 'running' AND lease_until < $1 \
             AND attempts >= max_attempts ORDER BY id LIMIT 100{lock}",
            placeholders(2, kinds.len())
        );
        let mut query = sqlx::query(&exhausted).bind(now);
        for kind in kinds {
            query = query.bind(*kind);
        }
        for row in query.fetch_all(&mut *w.tx).await? {
            sqlx::query(
                "UPDATE jobs SET state = 'dead', finished_at = $1, last_error = $2, \
                 lease_owner = NULL, lease_until = NULL WHERE id = $3",
            )
            .bind(now)
            .bind(LEASE_EXPIRED)
            .bind(get_i64(&row, "id"))
            .execute(&mut *w.tx)
            .await?;
        }
        let due = format!(
            "SELECT id FROM jobs WHERE kind IN ({}) AND \
             ((state IN ('queued', 'failed') AND run_at <= $1) \
              OR (state = 'running' AND lease_until < $1 AND attempts < max_attempts)) \
             ORDER BY run_at, id LIMIT $2{lock}",
            placeholders(3, kinds.len())
        );
        let mut query = sqlx::query(&due).bind(now).bind(limit);
        for kind in kinds {
            query = query.bind(*kind);
        }
        let ids: Vec<i64> =
            query.fetch_all(&mut *w.tx).await?.iter().map(|r| get_i64(r, "id")).collect();
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1, \
                 lease_until = $2, started_at = $3, \
                 last_error = CASE WHEN state = 'running' THEN $4 ELSE last_error END \
                 WHERE id = $5 RETURNING *",
            )
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(LEASE_EXPIRED)
            .bind(id)
            .fetch_one(&mut *w.tx)
            .await?;
            claimed.push(job_from_row(&row));
        }
        w.commit().await?;
        Ok(claimed)
    }

    /// Extends `owner`'s lease on running job `id` to `until`. False: the lease is no longer
    /// `owner`'s (it ran out and another instance took the job over, or the job was finished).
    pub async fn renew_job_lease(
        &self,
        id: i64,
        owner: &str,
        until: i64,
    ) -> Result<bool, MetaError> {
        let mut w = self.background_write_tx().await?;
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = $1 \
             WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(until)
        .bind(id)
        .bind(owner)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records that `owner`'s attempt at job `id` succeeded. False: the lease was lost.
    pub async fn complete_job(&self, id: i64, owner: &str, now: i64) -> Result<bool, MetaError> {
        let mut w = self.background_write_tx().await?;
        let done = sqlx::query(
            "UPDATE jobs SET state = 'succeeded', finished_at = $1, lease_owner = NULL, \
             lease_until = NULL WHERE id = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records that `owner`'s attempt at job `id` failed with `error`: retried at `retry_at`,
    /// or dead when that was its last attempt or `retry_at` is `None` (a retry cannot help).
    /// Answers the state it is left in; `None` when the lease was lost.
    pub async fn fail_job(
        &self,
        id: i64,
        owner: &str,
        now: i64,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<Option<JobState>, MetaError> {
        let mut w = self.background_write_tx().await?;
        let retry = i64::from(retry_at.is_some());
        let row = sqlx::query(
            "UPDATE jobs SET \
             state = CASE WHEN $1 = 1 AND attempts < max_attempts THEN 'failed' ELSE 'dead' END, \
             finished_at = CASE WHEN $1 = 1 AND attempts < max_attempts THEN NULL ELSE $2 END, \
             run_at = $3, last_error = $4, lease_owner = NULL, lease_until = NULL \
             WHERE id = $5 AND lease_owner = $6 AND state = 'running' RETURNING state",
        )
        .bind(retry)
        .bind(now)
        .bind(retry_at.unwrap_or(now))
        .bind(error)
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(row.map(|r| JobState::parse(&r.get::<String, _>("state")).unwrap_or(JobState::Dead)))
    }

    pub async fn job(&self, id: i64) -> Result<Option<Job>, MetaError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(job_from_row))
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, MetaError> {
        let mut conditions = Vec::new();
        let mut n = 1;
        if filter.state.is_some() {
            conditions.push(format!("state = ${n}"));
            n += 1;
        }
        if filter.kind.is_some() {
            conditions.push(format!("kind = ${n}"));
            n += 1;
        }
        let filter_sql = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!("SELECT * FROM jobs {filter_sql} ORDER BY id DESC LIMIT ${n}");
        let mut query = sqlx::query(&sql);
        if let Some(state) = filter.state {
            query = query.bind(state.as_str());
        }
        if let Some(kind) = &filter.kind {
            query = query.bind(kind.as_str());
        }
        let limit = if filter.limit > 0 { filter.limit } else { 100 };
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(job_from_row).collect())
    }

    /// Number of jobs in each state.
    pub async fn job_counts(&self) -> Result<Vec<(JobState, i64)>, MetaError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(JobState, i64)> = rows
            .iter()
            .filter_map(|r| Some((JobState::parse(&r.get::<String, _>("state"))?, get_i64(r, "n"))))
            .collect();
        counts.sort_by_key(|(s, _)| JobState::ALL.iter().position(|a| a == s));
        Ok(counts)
    }

    /// Deletes finished jobs (succeeded or dead) that finished before `finished_before`. A job
    /// with a dedupe key is kept until its `run_at` is before `keyed_before` too: a periodic
    /// job's key must outlive its period, or the period would be run again.
    pub async fn prune_jobs(
        &self,
        finished_before: i64,
        keyed_before: i64,
    ) -> Result<u64, MetaError> {
        let mut w = self.background_write_tx().await?;
        let done = sqlx::query(
            "DELETE FROM jobs WHERE state IN ('succeeded', 'dead') AND finished_at < $1 \
             AND (dedupe_key IS NULL OR run_at < $2)",
        )
        .bind(finished_before)
        .bind(keyed_before)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::store::testing::TestDb;

    const MINUTE: i64 = 60_000;

    fn new_job(kind: &str, run_at: i64) -> NewJob {
        NewJob {
            kind: kind.into(),
            payload: serde_json::json!({"n": 1}),
            dedupe_key: None,
            run_at,
            max_attempts: 3,
        }
    }

    async fn claim_and_complete(backend: Backend) {
        let db = TestDb::new(backend, None).await;
        let store = &db.store;
        let t0 = 1_000_000;
        let early = store.enqueue_job(&new_job("a", t0), t0).await.unwrap();
        let later = store.enqueue_job(&new_job("a", t0 + MINUTE), t0).await.unwrap();
        let other = store.enqueue_job(&new_job("b", t0), t0).await.unwrap();
        assert!(early.created && later.created && other.created);

        // Only due jobs of the asked kinds are claimed.
        let claimed = store.claim_jobs(&["a"], "i1", t0, MINUTE, 10).await.unwrap();
        assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![early.id]);
        let job = &claimed[0];
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.attempts, 1);
        assert_eq!(job.lease_owner.as_deref(), Some("i1"));
        assert_eq!(job.lease_until, Some(t0 + MINUTE));
        assert_eq!(job.payload, serde_json::json!({"n": 1}));
        // A claimed job is not claimed again while its lease holds.
        assert!(store.claim_jobs(&["a"], "i2", t0 + 1, MINUTE, 10).await.unwrap().is_empty());
        // Only the lease owner may finish it.
        assert!(!store.complete_job(early.id, "i2", t0 + 2).await.unwrap());
        assert!(store.complete_job(early.id, "i1", t0 + 2).await.unwrap());
        let done = store.job(early.id).await.unwrap().unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.finished_at, Some(t0 + 2));
        assert_eq!(done.lease_owner, None);
        assert!(!store.complete_job(early.id, "i1", t0 + 3).await.unwrap(), "finished once");

        // The later one is due later.
        let claimed = store.claim_jobs(&["a", "b"], "i1", t0 + MINUTE, MINUTE, 10).await.unwrap();
        let ids: HashSet<i64> = claimed.iter().map(|j| j.id).collect();
        assert_eq!(ids, HashSet::from([later.id, other.id]));

        // Listing: newest first, by state and kind.
        let all = store.list_jobs(&JobFilter::default()).await.unwrap();
        assert_eq!(
            all.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![other.id, later.id, early.id]
        );
        let running =
            JobFilter { state: Some(JobState::Running), kind: Some("a".into()), limit: 5 };
        let listed = store.list_jobs(&running).await.unwrap();
        assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), vec![later.id]);
        let counts = store.job_counts().await.unwrap();
        assert_eq!(counts, vec![(JobState::Running, 2), (JobState::Succeeded, 1)]);
        db.drop_database().await;
    }

    async fn dedupe_keys(backend: Backend) {
        let db = TestDb::new(backend, None).await;
        let store = &db.store;
        let mut job = new_job("periodic", 10);
        job.dedupe_key = Some("periodic@1".into());
        let first = store.enqueue_job(&job, 10).await.unwrap();
        let second = store.enqueue_job(&job, 11).await.unwrap();
        assert!(first.created);
        assert_eq!(second, Enqueued { id: first.id, created: false });
        assert_eq!(store.list_jobs(&JobFilter::default()).await.unwrap().len(), 1);
        db.drop_database().await;
    }

    async fn retries_then_dead(backend: Backend) {
        let db = TestDb::new(backend, None).await;
        let store = &db.store;
        let t0 = 5_000_000;
        let id = store.enqueue_job(&new_job("flaky", t0), t0).await.unwrap().id;
        let mut now = t0;
        for attempt in 1..=3 {
            let claimed = store.claim_jobs(&["flaky"], "i1", now, MINUTE, 1).await.unwrap();
            assert_eq!(claimed.len(), 1, "attempt {attempt} is due");
            assert_eq!(claimed[0].attempts, attempt);
            let retry_at = now + 10_000 * attempt;
            let state =
                store.fail_job(id, "i1", now + 1, &format!("boom {attempt}"), Some(retry_at)).await;
            let job = store.job(id).await.unwrap().unwrap();
            assert_eq!(job.last_error.as_deref(), Some(format!("boom {attempt}").as_str()));
            if attempt < 3 {
                assert_eq!(state.unwrap(), Some(JobState::Failed));
                assert_eq!(job.run_at, retry_at);
                assert_eq!(job.finished_at, None);
                // Not before its retry time.
                let early = store.claim_jobs(&["flaky"], "i1", retry_at - 1, MINUTE, 1).await;
                assert!(early.unwrap().is_empty(), "backoff holds attempt {attempt}");
                now = retry_at;
            } else {
                assert_eq!(state.unwrap(), Some(JobState::Dead), "max_attempts reached");
                assert_eq!(job.finished_at, Some(now + 1));
            }
        }
        assert!(store
            .claim_jobs(&["flaky"], "i1", now + 10 * MINUTE, MINUTE, 1)
            .await
            .unwrap()
            .is_empty());

        // A failure a retry cannot fix is dead at once.
        let id = store.enqueue_job(&new_job("bad", t0), t0).await.unwrap().id;
        store.claim_jobs(&["bad"], "i1", t0, MINUTE, 1).await.unwrap();
        let state = store.fail_job(id, "i1", t0, "invalid payload", None).await.unwrap();
        assert_eq!(state, Some(JobState::Dead));
        // A stranger's failure report changes nothing.
        let id = store.enqueue_job(&new_job("c", t0), t0).await.unwrap().id;
        store.claim_jobs(&["c"], "i1", t0, MINUTE, 1).await.unwrap();
        assert_eq!(store.fail_job(id, "i2", t0, "x", Some(t0)).await.unwrap(), None);
        assert_eq!(store.job(id).await.unwrap().unwrap().state, JobState::Running);
        db.drop_database().await;
    }

    async fn expired_lease_is_taken_over(backend: Backend) {
        let db = TestDb::new(backend, None).await;
        let store = &db.store;
        let t0 = 7_000_000;
        let mut job = new_job("long", t0);
        job.max_attempts = 2;
        let id = store.enqueue_job(&job, t0).await.unwrap().id;
        store.claim_jobs(&["long"], "crashed", t0, MINUTE, 1).await.unwrap();
        // Renewed while it runs: still held after the first lease would have run out.
        assert!(store.renew_job_lease(id, "crashed", t0 + 2 * MINUTE).await.unwrap());
        let at = t0 + MINUTE + 1;
        assert!(store.claim_jobs(&["long"], "i2", at, MINUTE, 1).await.unwrap().is_empty());
        // The instance stops renewing; once the lease is out another instance takes it over.
        let at = t0 + 2 * MINUTE + 1;
        let taken = store.claim_jobs(&["long"], "i2", at, MINUTE, 1).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].lease_owner.as_deref(), Some("i2"));
        assert_eq!(taken[0].attempts, 2);
        assert_eq!(taken[0].last_error.as_deref(), Some(LEASE_EXPIRED));
        // The old owner has lost it: it can neither renew nor finish it.
        assert!(!store.renew_job_lease(id, "crashed", at + MINUTE).await.unwrap());
        assert!(!store.complete_job(id, "crashed", at).await.unwrap());
        // When the second attempt's instance dies too, the job is dead, not retried forever.
        let later = at + 2 * MINUTE;
        assert!(store.claim_jobs(&["long"], "i3", later, MINUTE, 1).await.unwrap().is_empty());
        let job = store.job(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Dead);
        assert_eq!(job.finished_at, Some(later));
        db.drop_database().await;
    }

    async fn prune(backend: Backend) {
        let db = TestDb::new(backend, None).await;
        let store = &db.store;
        let t0 = 9_000_000;
        let mut ids = Vec::new();
        for kind in ["old", "recent", "pending"] {
            ids.push(store.enqueue_job(&new_job(kind, t0), t0).await.unwrap().id);
        }
        let mut periodic = new_job("periodic", t0);
        periodic.dedupe_key = Some("periodic@9".into());
        let periodic = store.enqueue_job(&periodic, t0).await.unwrap().id;
        store.claim_jobs(&["old", "periodic"], "i", t0, MINUTE, 10).await.unwrap();
        store.complete_job(ids[0], "i", t0).await.unwrap();
        store.complete_job(periodic, "i", t0).await.unwrap();
        store.claim_jobs(&["recent"], "i", t0, MINUTE, 10).await.unwrap();
        store.fail_job(ids[1], "i", t0 + 10, "gone", None).await.unwrap();
        // Finished before t0 + 5: only "old"; the periodic job's key must outlive its period.
        assert_eq!(store.prune_jobs(t0 + 5, t0).await.unwrap(), 1);
        assert!(store.job(ids[0]).await.unwrap().is_none());
        assert!(store.job(periodic).await.unwrap().is_some());
        assert_eq!(store.prune_jobs(t0 + 11, t0 + 1).await.unwrap(), 2);
        let left = store.list_jobs(&JobFilter::default()).await.unwrap();
        assert_eq!(left.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[2]], "pending kept");
        db.drop_database().await;
    }

    /// Two instances claiming from one PostgreSQL database never get the same job.
    #[tokio::test]
    async fn concurrent_claimers_never_share_a_job() {
        let db = TestDb::new(Backend::Postgres, None).await;
        let store = db.store.clone();
        let t0 = 11_000_000;
        let jobs = 400;
        for _ in 0..jobs {
            store.enqueue_job(&new_job("race", t0), t0).await.unwrap();
        }
        let claimer = |owner: &'static str| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store.claim_jobs(&["race"], owner, t0, MINUTE, 3).await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    for job in batch {
                        assert!(store.complete_job(job.id, owner, t0).await.unwrap());
                        mine.push(job.id);
                    }
                }
            })
        };
        let tasks: Vec<_> = ["a", "b", "c", "d"].into_iter().map(claimer).collect();
        let mut seen = HashSet::new();
        let mut per_claimer = Vec::new();
        for task in tasks {
            let mine = task.await.unwrap();
            per_claimer.push(mine.len());
            for id in mine {
                assert!(seen.insert(id), "job {id} was claimed twice");
            }
        }
        assert_eq!(seen.len(), jobs, "every job ran once: {per_claimer:?}");
        assert!(per_claimer.iter().filter(|n| **n > 0).count() >= 2, "{per_claimer:?}");
        db.drop_database().await;
    }

    macro_rules! on_both_backends {
        ($($name:ident),*) => {
            mod sqlite {
                $(#[tokio::test] async fn $name() { super::$name(crate::Backend::Sqlite).await })*
            }
            mod postgres {
                $(#[tokio::test] async fn $name() { super::$name(crate::Backend::Postgres).await })*
            }
        };
    }
    on_both_backends!(
        claim_and_complete,
        dedupe_keys,
        retries_then_dead,
        expired_lease_is_taken_over,
        prune
    );
}
