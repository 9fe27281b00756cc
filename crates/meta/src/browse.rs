//! What the web UI reads besides the registry listings the REST API shares: sign-in sessions
//! (`web_sessions`), the projects a viewer may see (explore), and a project's repositories
//! with their tag count and last published time, searched, sorted and paged in SQL.
//!
//! Visibility here is the SQL form of `auth::policy`'s rule for seeing a project (public to
//! everyone, internal to signed-in users, private to members and instance admins), so a
//! listing costs one query whatever the number of projects.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::registry_queries::{like_literal, RepositoryRecord};
use crate::store::{get_i64, MetaError, Store};
use crate::tenancy::{project_from_row, user_from_row};
use crate::{now_millis, Project, User};

/// A stored sign-in session (its id itself is only in the browser's cookie).
#[derive(Clone, Debug)]
pub struct WebSession {
    pub id_hash: String,
    pub user_id: i64,
    pub csrf_token: String,
    pub created_at: i64,
    pub expires_at: i64,
}

fn session_from_row(r: &AnyRow) -> WebSession {
    WebSession {
        id_hash: r.get("id_hash"),
        user_id: get_i64(r, "user_id"),
        csrf_token: r.get("csrf_token"),
        created_at: get_i64(r, "session_created_at"),
        expires_at: get_i64(r, "expires_at"),
    }
}

/// Who asks for a project listing.
#[derive(Clone, Copy, Debug)]
pub struct ProjectViewer {
    /// `None` for anonymous visitors.
    pub user_id: Option<i64>,
    pub is_admin: bool,
}

/// Which projects a listing shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectScope {
    /// Every project the viewer may see (explore).
    Visible,
    /// Projects the viewer is a member of, directly or through a group (instance admins:
    /// every project).
    Member,
}

/// A repository with what the registry page shows of it.
#[derive(Clone, Debug)]
pub struct RepositorySummary {
    pub repository: RepositoryRecord,
    pub tags_count: i64,
    /// The newest tag's published time; `None` for a repository without tags.
    pub last_published: Option<i64>,
}

/// How a project's repositories are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepositoryOrder {
    Name,
    NameDesc,
    /// Most recently published first.
    PublishedDesc,
    Published,
}

/// `%text%` for a case-insensitive `LIKE … ESCAPE '\'`, or `''` for no search.
fn contains_pattern(search: &str) -> String {
    if search.is_empty() {
        String::new()
    } else {
        format!("%{}%", like_literal(&search.to_lowercase()))
    }
}

impl Store {
    pub async fn create_web_session(&self, session: &WebSession) -> Result<(), MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO web_sessions (id_hash, user_id, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&session.id_hash)
        .bind(session.user_id)
        .bind(&session.csrf_token)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *w.tx)
        .await?;
        // Expired sessions of anyone go when someone signs in: the table stays small without
        // a job of its own.
        sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(now_millis())
            .execute(&mut *w.tx)
            .await?;
        w.commit().await
    }

    /// The unexpired session with this id hash and its user — whatever the user's state; the
    /// caller refuses blocked users.
    pub async fn web_session(
        &self,
        id_hash: &str,
    ) -> Result<Option<(WebSession, User)>, MetaError> {
        let row = sqlx::query(
            "SELECT s.id_hash, s.user_id, s.csrf_token, s.created_at AS session_created_at, \
             s.expires_at, u.* \
             FROM web_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(id_hash)
        .bind(now_millis())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (session_from_row(&r), user_from_row(&r))))
    }

    /// Ends a session (sign-out). Answers whether it existed.
    pub async fn delete_web_session(&self, id_hash: &str) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM web_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&mut *w.tx)
            .await?
            .rows_affected();
        w.commit().await?;
        Ok(done > 0)
    }

    /// Projects `viewer` may see (or is a member of), below group path `under` (`""`: any),
    /// whose full path contains `search` (case-insensitive), by full path; `limit` rows from
    /// `offset`.
    pub async fn projects_for_viewer(
        &self,
        viewer: ProjectViewer,
        scope: ProjectScope,
        under: &str,
        search: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<Project>, MetaError> {
        let member = "EXISTS (SELECT 1 FROM members m WHERE m.user_id = $1 AND \
             ((m.source_type = 'project' AND m.source_id = p.id) OR \
              (m.source_type = 'group' AND m.source_id IN (SELECT n.id FROM namespaces n \
               WHERE SUBSTR(p.full_path, 1, LENGTH(n.full_path) + 1) = n.full_path || '/'))))";
        let who = match scope {
            ProjectScope::Visible => format!(
                "($3 = 1 OR p.visibility = 'public' OR (p.visibility = 'internal' AND $2 = 1) \
                 OR {member})"
            ),
            ProjectScope::Member => format!("($3 = 1 OR ($2 = 1 AND {member}))"),
        };
        let sql = format!(
            "SELECT p.* FROM projects p WHERE {who} \
             AND ($4 = '' OR LOWER(p.full_path) LIKE $4 ESCAPE '\\') \
             AND ($7 = '' OR SUBSTR(p.full_path, 1, LENGTH($7) + 1) = $7 || '/') \
             ORDER BY p.full_path LIMIT $5 OFFSET $6"
        );
        let rows = sqlx::query(&sql)
            .bind(viewer.user_id.unwrap_or(-1))
            .bind(i64::from(viewer.user_id.is_some()))
            .bind(i64::from(viewer.is_admin && viewer.user_id.is_some()))
            .bind(contains_pattern(search))
            .bind(limit)
            .bind(offset)
            .bind(under)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(project_from_row).collect())
    }

    /// The repositories of the project at `project_path` (the repository named so and those
    /// below it) whose name contains `search`, in `order`; `limit` rows from `offset`.
    pub async fn repository_summaries(
        &self,
        project_path: &str,
        search: &str,
        order: RepositoryOrder,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<RepositorySummary>, MetaError> {
        let order_by = match order {
            RepositoryOrder::Name => "r.name ASC",
            RepositoryOrder::NameDesc => "r.name DESC",
            RepositoryOrder::PublishedDesc => "last_published_or_0 DESC, r.name ASC",
            RepositoryOrder::Published => "last_published_or_0 ASC, r.name ASC",
        };
        let sql = format!(
            "SELECT r.id, r.name, r.created_at, \
             r.tags_count, r.project_id, \
             (SELECT MAX(t.updated_at) FROM tags t WHERE t.repository_id = r.id) AS last_published, \
             COALESCE((SELECT MAX(t.updated_at) FROM tags t WHERE t.repository_id = r.id), 0) AS last_published_or_0 \
             FROM repositories r \
             WHERE (r.name = $1 OR (r.name > $2 AND r.name < $3)) \
             AND ($4 = '' OR LOWER(r.name) LIKE $4 ESCAPE '\\') \
             ORDER BY {order_by} LIMIT $5 OFFSET $6"
        );
        let rows = sqlx::query(&sql)
            .bind(project_path)
            .bind(format!("{project_path}/"))
            .bind(format!("{project_path}0"))
            .bind(contains_pattern(search))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| RepositorySummary {
                repository: crate::registry_queries::repository_from_row(r),
                tags_count: get_i64(r, "tags_count"),
                last_published: r.try_get::<Option<i64>, _>("last_published").ok().flatten(),
            })
            .collect())
    }

    /// The total size (payload, config and layers) of each manifest of repository
    /// `repository_id` with one of `digests`: the sizes of an index's children.
    pub async fn manifest_sizes(
        &self,
        repository_id: i64,
        digests: &[String],
    ) -> Result<Vec<(String, i64)>, MetaError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT digest, total_size FROM manifests WHERE repository_id = $1 AND digest IN ({})",
            crate::store::placeholders(2, digests.len())
        );
        let mut q = sqlx::query(&sql).bind(repository_id);
        for d in digests {
            q = q.bind(d);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| (r.get("digest"), get_i64(r, "total_size"))).collect())
    }

    /// The referrers (attached artifacts) of every manifest of repository `repository_id` in
    /// `subjects`, as (subject digest, referrer), ordered by subject and digest: the tag page's
    /// one query for all its rows.
    pub async fn referrers_of_subjects(
        &self,
        repository_id: i64,
        subjects: &[String],
    ) -> Result<Vec<(String, crate::Referrer)>, MetaError> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT m.subject_digest, m.digest, m.media_type, m.artifact_type, m.annotations, \
             CAST(LENGTH(m.payload) AS BIGINT) AS size FROM manifests m \
             WHERE m.repository_id = $1 AND m.subject_digest IN ({}) \
             ORDER BY m.subject_digest, m.digest",
            crate::store::placeholders(2, subjects.len())
        );
        let mut q = sqlx::query(&sql).bind(repository_id);
        for d in subjects {
            q = q.bind(d);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let referrer = crate::Referrer {
                    digest: r.get("digest"),
                    media_type: r.get("media_type"),
                    artifact_type: r.get("artifact_type"),
                    size: get_i64(r, "size"),
                    annotations: r.get("annotations"),
                };
                (r.get("subject_digest"), referrer)
            })
            .collect())
    }

    /// The stored payloads of the manifests of repository `repository_id` with one of
    /// `digests`, as (digest, payload): the tag page reads the platforms of all its indexes
    /// in one query.
    pub async fn manifest_payloads(
        &self,
        repository_id: i64,
        digests: &[String],
    ) -> Result<Vec<(String, Vec<u8>)>, MetaError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT digest, payload FROM manifests WHERE repository_id = $1 AND digest IN ({})",
            crate::store::placeholders(2, digests.len())
        );
        let mut q = sqlx::query(&sql).bind(repository_id);
        for d in digests {
            q = q.bind(d);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| (r.get("digest"), r.get("payload"))).collect())
    }
}
