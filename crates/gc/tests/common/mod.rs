//! Fakes shared by the gc crate's tests: a scripted reviewer and an object store whose
//! deletes fail on demand.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::BoxStream;
use gc::{Queue, ReviewError, ReviewReport, Reviewer};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// A reviewer that answers from a script, per queue, and records every call.
#[derive(Default)]
pub struct ScriptedReviewer {
    script: Mutex<HashMap<&'static str, VecDeque<Result<ReviewReport, String>>>>,
    pub calls: Mutex<Vec<(Queue, i64, usize)>>,
}

impl ScriptedReviewer {
    pub fn then(&self, queue: Queue, answer: Result<ReviewReport, &str>) -> &Self {
        self.script
            .lock()
            .unwrap()
            .entry(queue.name())
            .or_default()
            .push_back(answer.map_err(str::to_string));
        self
    }

    pub fn calls(&self) -> Vec<(Queue, i64, usize)> {
        self.calls.lock().unwrap().clone()
    }

    fn answer(&self, queue: Queue, now_ms: i64, limit: usize) -> Result<ReviewReport, ReviewError> {
        self.calls.lock().unwrap().push((queue, now_ms, limit));
        let next = self.script.lock().unwrap().get_mut(queue.name()).and_then(|q| q.pop_front());
        match next {
            Some(Ok(report)) => Ok(report),
            Some(Err(e)) => Err(e.into()),
            None => Ok(ReviewReport::default()), // nothing due
        }
    }
}

#[async_trait]
impl Reviewer for ScriptedReviewer {
    async fn review_blobs(&self, now_ms: i64, limit: usize) -> Result<ReviewReport, ReviewError> {
        self.answer(Queue::Blobs, now_ms, limit)
    }

    async fn review_manifests(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<ReviewReport, ReviewError> {
        self.answer(Queue::Manifests, now_ms, limit)
    }
}

pub fn reviewed(n: usize) -> ReviewReport {
    ReviewReport { reviewed: n, deleted: vec![], kept: n }
}

/// An in-memory object store whose next `fail_next` deletes fail (storage down), whose deletes
/// of `always_fail` paths always fail, and which counts deletes per path.
#[derive(Debug, Default)]
pub struct FlakyStore {
    inner: InMemory,
    pub fail_next: AtomicUsize,
    pub always_fail: Mutex<HashSet<String>>,
    pub deletes: Mutex<HashMap<String, usize>>,
}

impl FlakyStore {
    pub fn deletes_of(&self, key: &str) -> usize {
        self.deletes.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FlakyStore")
    }
}

fn storage_down(path: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "flaky",
        source: format!("storage is down (deleting {path})").into(),
    }
}

#[async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        if self.always_fail.lock().unwrap().contains(location.as_ref()) {
            return Err(storage_down(location));
        }
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(storage_down(location));
        }
        *self.deletes.lock().unwrap().entry(location.to_string()).or_default() += 1;
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// A blob store over a [`FlakyStore`].
pub fn flaky_blobs() -> (blobstore::BlobStore, Arc<FlakyStore>) {
    let flaky = Arc::new(FlakyStore::default());
    (blobstore::BlobStore::from_object_store(flaky.clone()), flaky)
}

/// Runs each named async test function taking a `meta::Backend` on SQLite and PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(meta::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(meta::Backend::Postgres).await })*
        }
    };
}

/// Records a stored blob linked to `repo`, as an upload commit does (due for review at once).
pub async fn link_blob(
    store: &meta::Store,
    repo: &oci::RepositoryName,
    digest: &oci::Digest,
    size: i64,
) {
    let schedule = meta::ReviewSchedule::immediate(meta::now_millis());
    let mut w = store.write_tx().await.unwrap();
    let id = w.ensure_repository(repo).await.unwrap();
    w.store_blob(digest, size, &schedule).await.unwrap();
    w.link_blob(id, digest.as_str()).await.unwrap();
    w.commit().await.unwrap();
}
