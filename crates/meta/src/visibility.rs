//! Which repositories a reader may pull, as SQL: the listings (`/v2/_catalog`, a group's
//! repositories) ask the database for the readable set instead of asking the policy about one
//! repository at a time, so a page costs the same for every caller.
//!
//! [`read_predicate`] is the set form of the pull rule of `auth::policy::allowed_actions` (the
//! table in `auth/src/policy.rs`): a SQL condition on a project row `p` that holds exactly when
//! that function would answer `pull` for the reader and `p`. The two are kept equal by a
//! property test in `auth` that generates random tenancies and compares them on both backends;
//! a change to one is a change to both.
//!
//! A repository belongs to the project recorded in `repositories.project_id` (its name's
//! longest project prefix, kept by triggers, migration 0014).

use sqlx::Row;

use crate::store::{get_i64, MetaError, Store};
use crate::tenancy::{access_level, SourceType};

/// Who reads, as the visibility predicate needs to know them: the credential, already checked
/// (not revoked, not expired), with what it carries in itself. The rest (memberships, project
/// settings, a job token's user) is read by the query, current at the time of the query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryReader {
    /// Someone without credentials.
    Anonymous,
    /// A person, signed in by password (`read_scope: true`) or by personal access token
    /// (`read_scope`: the token has `read_registry` or `api`).
    User { user_id: i64, is_admin: bool, blocked: bool, read_scope: bool },
    /// A deploy token of a project or group; `read_scope`: it has `read_registry`.
    Deploy { source_type: SourceType, source_id: i64, read_scope: bool },
    /// A CI job token of `project_id`, minted for `user_id` (or by an operator: `None`).
    Job { project_id: i64, user_id: Option<i64> },
    /// The operator (the REST API's admin token): every registry that is not disabled.
    Operator,
}

/// Up to how many readable projects the catalog reads each project's repositories separately.
pub const FEW_PROJECTS: i64 = 100;

/// The access level from which a member may pull (GitLab's reporter).
const READ_LEVEL: i64 = access_level::REPORTER;

/// A SQL condition on project row `p` that holds when `reader` may pull its images, with the
/// values its `$n` placeholders (numbered from `first`) take, all integers.
pub(crate) fn read_predicate(reader: &RegistryReader, first: usize) -> (String, Vec<i64>) {
    const NOT_DISABLED: &str = "p.registry_access_level <> 'disabled'";
    // What anonymous callers may pull, and so every credential but a user's (a user gets it
    // through `USERS_OPEN`).
    const PUBLIC_OPEN: &str = "(p.registry_access_level = 'enabled' AND p.visibility = 'public')";
    const USERS_OPEN: &str =
        "(p.registry_access_level = 'enabled' AND p.visibility IN ('public', 'internal'))";
    // A user (`user` is a SQL expression) who reads `p` as a person: an admin, a reporter or
    // more on the project or on a group above it (membership is inherited), or anyone signed
    // in when the project is public or internal with an open registry.
    let user_reads = |user: &str, admin: &str| {
        format!(
            "({admin} OR {USERS_OPEN} OR EXISTS (SELECT 1 FROM members m \
             WHERE m.user_id = {user} AND m.access_level >= {READ_LEVEL} \
             AND ((m.source_type = 'project' AND m.source_id = p.id) \
               OR (m.source_type = 'group' AND EXISTS (SELECT 1 FROM namespaces mg \
                   WHERE mg.id = m.source_id \
                   AND substr(p.full_path, 1, length(mg.full_path) + 1) = mg.full_path || '/')))))"
        )
    };
    let a = first;
    let b = first + 1;
    match reader {
        RegistryReader::Anonymous => (format!("({NOT_DISABLED} AND {PUBLIC_OPEN})"), vec![]),
        RegistryReader::Operator => (format!("({NOT_DISABLED})"), vec![]),
        RegistryReader::User { blocked: true, .. }
        | RegistryReader::User { read_scope: false, .. } => ("(1 = 0)".into(), vec![]),
        RegistryReader::User { user_id, is_admin, .. } => {
            let admin = if *is_admin { "1 = 1" } else { "1 = 0" };
            (
                format!("({NOT_DISABLED} AND {})", user_reads(&format!("${a}"), admin)),
                vec![*user_id],
            )
        }
        RegistryReader::Deploy { read_scope: false, .. } => {
            (format!("({NOT_DISABLED} AND {PUBLIC_OPEN})"), vec![])
        }
        RegistryReader::Deploy { source_type: SourceType::Project, source_id, .. } => {
            (format!("({NOT_DISABLED} AND ({PUBLIC_OPEN} OR p.id = ${a}))"), vec![*source_id])
        }
        RegistryReader::Deploy { source_type: SourceType::Group, source_id, .. } => (
            format!(
                "({NOT_DISABLED} AND ({PUBLIC_OPEN} OR EXISTS (SELECT 1 FROM namespaces dg \
                 WHERE dg.id = ${a} \
                 AND substr(p.full_path, 1, length(dg.full_path) + 1) = dg.full_path || '/')))"
            ),
            vec![*source_id],
        ),
        RegistryReader::Job { project_id, user_id: None } => (
            format!(
                "({NOT_DISABLED} AND (p.id = ${a} OR {PUBLIC_OPEN} OR EXISTS (SELECT 1 \
                 FROM job_token_allowlist ja WHERE ja.project_id = p.id \
                 AND ja.source_project_id = ${a})))"
            ),
            vec![*project_id],
        ),
        // The job acts with its user's current rights: none at all once the user is blocked
        // or gone; its own project as the user reads it; others when public, or when they
        // allowlist the job's project and the user reads them.
        RegistryReader::Job { project_id, user_id: Some(user_id) } => {
            let reads = user_reads("ju.id", "ju.is_admin <> 0");
            (
                format!(
                    "({NOT_DISABLED} AND EXISTS (SELECT 1 FROM users ju \
                     WHERE ju.id = ${b} AND ju.state <> 'blocked' AND ( \
                       (p.id = ${a} AND {reads}) \
                       OR (p.id <> ${a} AND ({PUBLIC_OPEN} OR ({reads} AND EXISTS (SELECT 1 \
                           FROM job_token_allowlist ja WHERE ja.project_id = p.id \
                           AND ja.source_project_id = ${a})))))))"
                ),
                vec![*project_id, *user_id],
            )
        }
    }
}

/// The number of `/` in a SQL text expression.
fn slashes(expr: &str) -> String {
    format!("(length({expr}) - length(replace({expr}, '/', '')))")
}

impl Store {
    /// Up to `limit` names of repositories `reader` may pull, after `after` in name order (the
    /// catalog). A repository counts when its project is readable and its name is at most
    /// `max_extra_segments` components below the project's path (deeper names belong to no
    /// project, as the policy sees it).
    ///
    /// Two ways to the same answer, chosen by how many projects the reader may read: up to
    /// [`FEW_PROJECTS`], each one's next `limit` names (an index range on `(project_id, name)`)
    /// merged, so a user who sees a handful of 100 000 repositories reads a handful of rows;
    /// beyond that, the repositories in name order with the rule as a join, which meets a page
    /// of readable names soon when so many projects are readable.
    pub async fn readable_repository_names(
        &self,
        reader: &RegistryReader,
        max_extra_segments: i64,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, MetaError> {
        let depth_ok = format!("{} - {} <= $2", slashes("r.name"), slashes("p.full_path"));
        let projects = self.readable_projects_up_to(reader, FEW_PROJECTS + 1).await?;
        let (sql, values) = if projects.len() as i64 <= FEW_PROJECTS {
            if projects.is_empty() {
                return Ok(Vec::new());
            }
            let ranges: Vec<String> = (0..projects.len())
                .map(|i| {
                    format!(
                        "SELECT name FROM (SELECT r.name FROM repositories r \
                         JOIN projects p ON p.id = r.project_id \
                         WHERE r.project_id = ${} AND r.name > $1 AND {depth_ok} \
                         ORDER BY r.name LIMIT $3) AS range{i}",
                        i + 4
                    )
                })
                .collect();
            let sql = format!(
                "SELECT name FROM ({}) AS readable ORDER BY name LIMIT $3",
                ranges.join(" UNION ALL ")
            );
            (sql, projects)
        } else {
            let (readable, values) = read_predicate(reader, 4);
            let sql = format!(
                "SELECT r.name FROM repositories r JOIN projects p ON p.id = r.project_id \
                 WHERE r.name > $1 AND {depth_ok} AND {readable} ORDER BY r.name LIMIT $3"
            );
            (sql, values)
        };
        let mut q =
            sqlx::query(&sql).bind(after.unwrap_or("")).bind(max_extra_segments).bind(limit);
        for v in values {
            q = q.bind(v);
        }
        Ok(q.fetch_all(&self.pool).await?.iter().map(|r| r.get("name")).collect())
    }

    /// The ids of up to `limit` projects whose registry `reader` may pull.
    async fn readable_projects_up_to(
        &self,
        reader: &RegistryReader,
        limit: i64,
    ) -> Result<Vec<i64>, MetaError> {
        let (readable, values) = read_predicate(reader, 2);
        let sql = format!("SELECT p.id FROM projects p WHERE {readable} ORDER BY p.id LIMIT $1");
        let mut q = sqlx::query(&sql).bind(limit);
        for v in values {
            q = q.bind(v);
        }
        Ok(q.fetch_all(&self.pool).await?.iter().map(|r| get_i64(r, "id")).collect())
    }

    /// The ids of the projects whose registry `reader` may pull.
    pub async fn readable_project_ids(
        &self,
        reader: &RegistryReader,
    ) -> Result<Vec<i64>, MetaError> {
        let (readable, values) = read_predicate(reader, 1);
        let sql = format!("SELECT p.id FROM projects p WHERE {readable} ORDER BY p.id");
        let mut q = sqlx::query(&sql);
        for v in values {
            q = q.bind(v);
        }
        Ok(q.fetch_all(&self.pool).await?.iter().map(|r| get_i64(r, "id")).collect())
    }

    /// How many repositories below group `group_path` (in every project under it) `reader`
    /// may pull, and the `limit` of them after the first `offset`, by name: a page of a
    /// group's repository listing. The total adds up the readable projects' kept counts; the
    /// page walks the group's name range (every repository below the group has a name in it)
    /// from the nearer end.
    pub async fn readable_repositories_below_group(
        &self,
        reader: &RegistryReader,
        group_path: &str,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<crate::registry_queries::RepositoryRecord>), MetaError> {
        let (readable, values) = read_predicate(reader, 3);
        let (low, high) = (format!("{group_path}/"), format!("{group_path}0"));
        let count_sql = format!(
            "SELECT CAST(COALESCE(SUM(p.repositories_count), 0) AS BIGINT) AS n FROM projects p \
             WHERE p.full_path > $1 AND p.full_path < $2 AND {readable}"
        );
        let mut q = sqlx::query(&count_sql).bind(&low).bind(&high);
        for v in &values {
            q = q.bind(*v);
        }
        let total = get_i64(&q.fetch_one(&self.pool).await?, "n");
        let page = Store::page_from_nearer_end(total, offset, limit);
        let n = 3 + values.len();
        let page_sql = format!(
            "SELECT r.id, r.name, r.created_at, r.tags_count, r.project_id \
             FROM repositories r JOIN projects p ON p.id = r.project_id \
             WHERE r.name > $1 AND r.name < $2 AND {readable} \
             ORDER BY r.name {} LIMIT ${n} OFFSET ${}",
            if page.from_end { "DESC" } else { "ASC" },
            n + 1
        );
        let mut q = sqlx::query(&page_sql).bind(&low).bind(&high);
        for v in &values {
            q = q.bind(*v);
        }
        let rows = q.bind(page.limit).bind(page.offset).fetch_all(&self.pool).await?;
        let mut repositories: Vec<_> =
            rows.iter().map(crate::registry_queries::repository_from_row).collect();
        if page.from_end {
            repositories.reverse();
        }
        Ok((total, repositories))
    }
}
