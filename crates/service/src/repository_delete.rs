//! Repository deletes: asked for by a surface (the REST API's
//! `DELETE /projects/:id/registry/repositories/:repository_id`, the registry page's
//! multi-select delete), run in the background as a durable job (crate `jobs`). The asking is
//! one function, [`WriteService::request_repository_deletes`], so every surface refuses the same
//! repositories (repository protection rules) with the same words before anything is queued.

use jobs::{JobContext, JobError, Queue};
use meta::registry_queries::RepositoryRecord;
use meta::Refusal;
use serde::{Deserialize, Serialize};

use crate::{RequestContext, ServiceError, WriteService};

/// The job kind that deletes one repository ([`RepositoryDelete`]).
pub const REPOSITORY_DELETE: &str = "repository_delete";

/// The payload of a [`REPOSITORY_DELETE`] job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepositoryDelete {
    pub repository_id: i64,
    /// For the log and `stowage jobs list`.
    pub repository: String,
    /// Who asked, for the audit log and the delete event.
    #[serde(default)]
    pub context: RequestContext,
}

impl WriteService {
    /// Queues the deletes of `repositories` for a caller at access `level` on their project
    /// (the caller's surface decided they may delete from the project's registry at all): one
    /// job each. All or nothing: when a repository protection rule keeps `level` from deleting
    /// any of them, nothing is queued and the answer is [`ServiceError::Refused`], naming each
    /// refused repository and its rule. Answers the jobs' ids.
    pub async fn request_repository_deletes(
        &self,
        queue: &Queue,
        repositories: &[RepositoryRecord],
        level: i64,
        ctx: &RequestContext,
    ) -> Result<Vec<i64>, ServiceError> {
        let mut refusals = Vec::new();
        for repository in repositories {
            if let Some(protection) = self.store.protection_for_repository(&repository.name).await?
            {
                if let Err(refusal) = protection.check_repository_delete(level) {
                    refusals.push(refusal);
                }
            }
        }
        if let Some(refusal) = Refusal::all(refusals) {
            return Err(ServiceError::Refused(refusal));
        }
        let mut jobs = Vec::with_capacity(repositories.len());
        for repository in repositories {
            let job = RepositoryDelete {
                repository_id: repository.id,
                repository: repository.name.clone(),
                context: ctx.clone(),
            };
            jobs.push(queue.enqueue(REPOSITORY_DELETE, job).await?);
        }
        Ok(jobs)
    }
}

/// The [`REPOSITORY_DELETE`] handler: deletes the repository's metadata
/// ([`WriteService::delete_repository`]). Already gone (a retry after a commit whose answer
/// was lost) is done too.
pub async fn run_repository_delete(writes: WriteService, ctx: JobContext) -> Result<(), JobError> {
    let job: RepositoryDelete = ctx.payload()?;
    let deleted =
        writes.delete_repository(job.repository_id, &job.context).await.map_err(JobError::retry)?;
    tracing::info!(repository = %job.repository, deleted, "deleted repository");
    Ok(())
}
