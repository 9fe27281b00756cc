//! Usage: deduplicated bytes per repository, project and group, and what deleting something
//! would free. The figures are kept current by the triggers of migration 0009 inside every
//! write transaction (no code path has to remember to update them); reading one is a lookup
//! by primary key. [`Store::recompute_usage`] rebuilds them from scratch and reports drift.
//!
//! What counts: the distinct blobs (configs and layers) of every manifest stored in a scope,
//! tagged or not, at their size. An untagged manifest counts until garbage collection deletes
//! it, as in GitLab's registry: usage is what the scope holds in storage.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::Row;

use crate::store::{get_i64, MetaError, Store};

/// A scope usage is kept for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UsageScope {
    Repository(i64),
    Project(i64),
    /// A group with every group and project below it; a top-level group is a namespace.
    Group(i64),
}

impl UsageScope {
    fn kind(self) -> &'static str {
        match self {
            UsageScope::Repository(_) => "repository",
            UsageScope::Project(_) => "project",
            UsageScope::Group(_) => "group",
        }
    }

    fn id(self) -> i64 {
        match self {
            UsageScope::Repository(id) | UsageScope::Project(id) | UsageScope::Group(id) => id,
        }
    }

    fn from_row(kind: &str, id: i64) -> Option<UsageScope> {
        match kind {
            "repository" => Some(UsageScope::Repository(id)),
            "project" => Some(UsageScope::Project(id)),
            "group" => Some(UsageScope::Group(id)),
            _ => None,
        }
    }
}

impl std::fmt::Display for UsageScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind(), self.id())
    }
}

/// A figure [`Store::recompute_usage`] found wrong and corrected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageCorrection {
    pub scope: UsageScope,
    /// The scope's path (repository name, project or group full path), when it still exists.
    pub path: Option<String>,
    pub stored_bytes: i64,
    pub actual_bytes: i64,
}

/// What [`Store::recompute_usage`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecomputeReport {
    /// Top-level namespaces (or first path segments of repositories outside any) recomputed.
    pub namespaces: usize,
    /// Totals that were wrong, with the stored and the recomputed figure.
    pub corrections: Vec<UsageCorrection>,
    /// Per-scope blob reference counts that were wrong (missing, extra or miscounted).
    pub reference_rows_corrected: usize,
    /// Repository-to-scope links that were wrong (e.g. a project created after its repository).
    pub scope_links_corrected: usize,
}

impl RecomputeReport {
    pub fn is_clean(&self) -> bool {
        self.corrections.is_empty()
            && self.reference_rows_corrected == 0
            && self.scope_links_corrected == 0
    }
}

/// `P/` and `P0`: the bounds of the names strictly below `path` (`'0'` follows `'/'`).
fn below(path: &str) -> (String, String) {
    (format!("{path}/"), format!("{path}0"))
}

/// The scopes of top-level namespace `$1` (with `$2`, `$3` from [`below`]): its repositories,
/// projects and groups. Names a repository outside any namespace has are covered too.
const NAMESPACE_SCOPES: &str = "((scope_kind = 'repository' AND scope_id IN \
       (SELECT id FROM repositories WHERE name = $1 OR (name > $2 AND name < $3))) \
     OR (scope_kind = 'project' AND scope_id IN \
       (SELECT id FROM projects WHERE full_path > $2 AND full_path < $3)) \
     OR (scope_kind = 'group' AND scope_id IN \
       (SELECT id FROM namespaces WHERE full_path = $1 OR (full_path > $2 AND full_path < $3))))";

const NAMESPACE_REPOSITORIES: &str =
    "SELECT id FROM repositories WHERE name = $1 OR (name > $2 AND name < $3)";

impl Store {
    /// The deduplicated bytes a scope holds (0 for a scope with nothing stored).
    pub async fn usage(&self, scope: UsageScope) -> Result<i64, MetaError> {
        let row =
            sqlx::query("SELECT bytes FROM usage_totals WHERE scope_kind = $1 AND scope_id = $2")
                .bind(scope.kind())
                .bind(scope.id())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map_or(0, |r| get_i64(&r, "bytes")))
    }

    /// The top-level group a repository's content counts in, if it is under one.
    pub async fn repository_namespace(&self, repository_id: i64) -> Result<Option<i64>, MetaError> {
        let row = sqlx::query(
            "SELECT s.scope_id FROM usage_repository_scopes s \
             JOIN namespaces n ON n.id = s.scope_id \
             WHERE s.repository_id = $1 AND s.scope_kind = 'group' AND n.parent_id IS NULL",
        )
        .bind(repository_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| get_i64(&r, "scope_id")))
    }

    /// Bytes deleting the scope (a repository or a project) would free after garbage
    /// collection, as its namespace counts them: the blobs it references that nothing else in
    /// its top-level namespace references (a blob whose every namespace reference is in the
    /// scope). `namespace` is the top-level group; `None` counts the scope's own usage.
    pub async fn exclusive_size(
        &self,
        scope: UsageScope,
        namespace: Option<i64>,
    ) -> Result<i64, MetaError> {
        let Some(namespace) = namespace else { return self.usage(scope).await };
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS bytes FROM usage_blob_refs r \
             JOIN usage_blob_refs t ON t.scope_kind = 'group' AND t.scope_id = $3 \
               AND t.blob_digest = r.blob_digest AND t.refs = r.refs \
             JOIN blobs b ON b.digest = r.blob_digest \
             WHERE r.scope_kind = $1 AND r.scope_id = $2",
        )
        .bind(scope.kind())
        .bind(scope.id())
        .bind(namespace)
        .fetch_one(&self.pool)
        .await?;
        Ok(get_i64(&row, "bytes"))
    }

    /// Bytes deleting tag `name` of the repository would free after garbage collection, as its
    /// namespace counts them: the blobs of the manifests that would become dangling (the
    /// tagged manifest unless another tag or an index keeps it, then its index children and
    /// referrers that nothing else keeps) that no other manifest of the namespace references.
    pub async fn tag_exclusive_size(
        &self,
        repository_id: i64,
        name: &str,
    ) -> Result<i64, MetaError> {
        let Some(row) =
            sqlx::query("SELECT manifest_id FROM tags WHERE repository_id = $1 AND name = $2")
                .bind(repository_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(0);
        };
        let tagged = get_i64(&row, "manifest_id");
        let doomed = self.doomed_manifests(repository_id, tagged, name).await?;
        if doomed.is_empty() {
            return Ok(0);
        }
        // References from the doomed manifests, per blob.
        let ids = doomed.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query(&format!(
            "SELECT mb.blob_digest, CAST(COUNT(*) AS BIGINT) AS refs, MIN(b.size) AS size \
             FROM manifest_blobs mb JOIN blobs b ON b.digest = mb.blob_digest \
             WHERE mb.manifest_id IN ({ids}) GROUP BY mb.blob_digest"
        ))
        .fetch_all(&self.pool)
        .await?;
        let scope = match self.repository_namespace(repository_id).await? {
            Some(ns) => UsageScope::Group(ns),
            None => UsageScope::Repository(repository_id),
        };
        let mut total = 0;
        for row in rows {
            let digest: String = row.get("blob_digest");
            let in_scope = sqlx::query(
                "SELECT refs FROM usage_blob_refs \
                 WHERE scope_kind = $1 AND scope_id = $2 AND blob_digest = $3",
            )
            .bind(scope.kind())
            .bind(scope.id())
            .bind(&digest)
            .fetch_optional(&self.pool)
            .await?
            .map_or(0, |r| get_i64(&r, "refs"));
            if in_scope <= get_i64(&row, "refs") {
                total += get_i64(&row, "size");
            }
        }
        Ok(total)
    }

    /// The manifests of the repository that deleting tag `tag` (on `tagged`) leaves dangling,
    /// by the garbage collector's rules.
    async fn doomed_manifests(
        &self,
        repository_id: i64,
        tagged: i64,
        tag: &str,
    ) -> Result<BTreeSet<i64>, MetaError> {
        let mut doomed = BTreeSet::new();
        let mut candidates = vec![tagged];
        // Bounded: each round adds at least one manifest, and a repository has finitely many.
        while let Some(id) = candidates.pop() {
            if doomed.contains(&id) {
                continue;
            }
            let other_tags = sqlx::query(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM tags \
                 WHERE manifest_id = $1 AND NOT (repository_id = $2 AND name = $3)",
            )
            .bind(id)
            .bind(repository_id)
            .bind(tag)
            .fetch_one(&self.pool)
            .await?;
            if get_i64(&other_tags, "n") > 0 {
                continue;
            }
            // Every index listing it (by id or by digest) must be doomed too.
            let parents = sqlx::query(
                "SELECT parent_id FROM manifest_references WHERE child_id = $1 \
                 UNION SELECT md.parent_id FROM manifest_digest_references md \
                 JOIN manifests m ON m.repository_id = md.repository_id AND m.digest = md.child_digest \
                 WHERE m.id = $1",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            if parents.iter().any(|r| !doomed.contains(&get_i64(r, "parent_id"))) {
                continue;
            }
            doomed.insert(id);
            // Its children and referrers may now be dangling too.
            let next = sqlx::query(
                "SELECT child_id AS id FROM manifest_references WHERE parent_id = $1 \
                 UNION SELECT c.id FROM manifest_digest_references md \
                 JOIN manifests c ON c.repository_id = md.repository_id AND c.digest = md.child_digest \
                 WHERE md.parent_id = $1 \
                 UNION SELECT r.id FROM manifests r JOIN manifests m \
                 ON r.repository_id = m.repository_id AND r.subject_digest = m.digest WHERE m.id = $1",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            candidates
                .extend(next.iter().map(|r| get_i64(r, "id")).filter(|c| !doomed.contains(c)));
        }
        Ok(doomed)
    }

    /// Recalculates usage from scratch for the top-level namespace `namespace` (a group path;
    /// a subgroup path means its top-level group), or for everything, and corrects what the
    /// incremental figures got wrong. One transaction per namespace.
    pub async fn recompute_usage(
        &self,
        namespace: Option<&str>,
    ) -> Result<RecomputeReport, MetaError> {
        let tops: Vec<String> = match namespace {
            Some(path) => vec![path.split('/').next().unwrap_or(path).to_string()],
            None => {
                let mut tops = BTreeSet::new();
                for row in sqlx::query("SELECT full_path FROM namespaces WHERE parent_id IS NULL")
                    .fetch_all(&self.pool)
                    .await?
                {
                    tops.insert(row.get::<String, _>("full_path"));
                }
                for row in
                    sqlx::query("SELECT name FROM repositories").fetch_all(&self.pool).await?
                {
                    let name: String = row.get("name");
                    tops.insert(name.split('/').next().unwrap_or(&name).to_string());
                }
                tops.into_iter().collect()
            }
        };
        let mut report = RecomputeReport::default();
        for top in &tops {
            self.recompute_namespace(top, &mut report).await?;
            report.namespaces += 1;
        }
        Ok(report)
    }

    async fn recompute_namespace(
        &self,
        top: &str,
        report: &mut RecomputeReport,
    ) -> Result<(), MetaError> {
        let (low, high) = below(top);
        let mut w = self.write_tx().await?;
        macro_rules! run {
            ($sql:expr) => {
                sqlx::query($sql).bind(top).bind(&low).bind(&high).execute(&mut *w.tx).await?
            };
        }
        macro_rules! fetch {
            ($sql:expr) => {
                sqlx::query($sql).bind(top).bind(&low).bind(&high).fetch_all(&mut *w.tx).await?
            };
        }

        // 1. Which scopes each repository counts in.
        let scope_links = |rows: Vec<sqlx::any::AnyRow>| -> BTreeSet<(i64, String, i64)> {
            rows.iter()
                .map(|r| (get_i64(r, "repository_id"), r.get("scope_kind"), get_i64(r, "scope_id")))
                .collect()
        };
        let links_sql = format!(
            "SELECT repository_id, scope_kind, scope_id FROM usage_repository_scopes \
             WHERE repository_id IN ({NAMESPACE_REPOSITORIES})"
        );
        let old_links = scope_links(fetch!(&links_sql));
        run!(&format!(
            "DELETE FROM usage_repository_scopes WHERE repository_id IN ({NAMESPACE_REPOSITORIES})"
        ));
        run!(&format!(
            "INSERT INTO usage_repository_scopes (repository_id, scope_kind, scope_id) \
             SELECT r.id, 'repository', r.id FROM repositories r WHERE r.id IN ({NAMESPACE_REPOSITORIES})"
        ));
        run!(&format!(
            "INSERT INTO usage_repository_scopes (repository_id, scope_kind, scope_id) \
             SELECT r.id, 'project', p.id FROM repositories r JOIN projects p \
             ON p.full_path = r.name OR substr(r.name, 1, length(p.full_path) + 1) = p.full_path || '/' \
             WHERE r.id IN ({NAMESPACE_REPOSITORIES})"
        ));
        run!(&format!(
            "INSERT INTO usage_repository_scopes (repository_id, scope_kind, scope_id) \
             SELECT r.id, 'group', n.id FROM repositories r JOIN namespaces n \
             ON substr(r.name, 1, length(n.full_path) + 1) = n.full_path || '/' \
             WHERE r.id IN ({NAMESPACE_REPOSITORIES})"
        ));
        let new_links = scope_links(fetch!(&links_sql));
        report.scope_links_corrected += old_links.symmetric_difference(&new_links).count();

        // 2. Reference counts per scope and blob.
        let refs_of = |rows: Vec<sqlx::any::AnyRow>| -> HashMap<(String, i64, String), i64> {
            rows.iter()
                .map(|r| {
                    (
                        (r.get("scope_kind"), get_i64(r, "scope_id"), r.get("blob_digest")),
                        get_i64(r, "refs"),
                    )
                })
                .collect()
        };
        let refs_sql = format!(
            "SELECT scope_kind, scope_id, blob_digest, refs FROM usage_blob_refs WHERE {NAMESPACE_SCOPES}"
        );
        let old_refs = refs_of(fetch!(&refs_sql));
        run!(&format!("DELETE FROM usage_blob_refs WHERE {NAMESPACE_SCOPES}"));
        run!(&format!(
            "INSERT INTO usage_blob_refs (scope_kind, scope_id, blob_digest, refs) \
             SELECT s.scope_kind, s.scope_id, mb.blob_digest, COUNT(*) FROM manifest_blobs mb \
             JOIN manifests m ON m.id = mb.manifest_id \
             JOIN usage_repository_scopes s ON s.repository_id = m.repository_id \
             JOIN blobs b ON b.digest = mb.blob_digest \
             WHERE m.repository_id IN ({NAMESPACE_REPOSITORIES}) \
             GROUP BY s.scope_kind, s.scope_id, mb.blob_digest"
        ));
        let new_refs = refs_of(fetch!(&refs_sql));
        report.reference_rows_corrected +=
            old_refs.iter().filter(|(k, v)| new_refs.get(*k) != Some(*v)).count()
                + new_refs.keys().filter(|k| !old_refs.contains_key(*k)).count();

        // 3. Totals: only rows that differ are written, so a threshold notice is recorded only
        // for a real correction.
        let totals_sql = format!(
            "SELECT scope_kind, scope_id, bytes FROM usage_totals WHERE {NAMESPACE_SCOPES}"
        );
        let totals_of = |rows: Vec<sqlx::any::AnyRow>| -> BTreeMap<(String, i64), i64> {
            rows.iter()
                .map(|r| ((r.get("scope_kind"), get_i64(r, "scope_id")), get_i64(r, "bytes")))
                .collect()
        };
        let old_totals = totals_of(fetch!(&totals_sql));
        run!(&format!(
            "INSERT INTO usage_totals (scope_kind, scope_id, bytes) \
             SELECT scope_kind, scope_id, 0 FROM usage_repository_scopes \
             WHERE repository_id IN ({NAMESPACE_REPOSITORIES}) \
             GROUP BY scope_kind, scope_id \
             ON CONFLICT (scope_kind, scope_id) DO NOTHING"
        ));
        let actual = "(SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM usage_blob_refs r \
             JOIN blobs b ON b.digest = r.blob_digest \
             WHERE r.scope_kind = usage_totals.scope_kind AND r.scope_id = usage_totals.scope_id)";
        run!(&format!(
            "UPDATE usage_totals SET bytes = {actual} WHERE {NAMESPACE_SCOPES} AND bytes <> {actual}"
        ));
        let new_totals = totals_of(fetch!(&totals_sql));
        let mut corrections = Vec::new();
        for (key, actual) in &new_totals {
            let stored = old_totals.get(key).copied().unwrap_or(0);
            if stored != *actual {
                if let Some(scope) = UsageScope::from_row(&key.0, key.1) {
                    corrections.push((scope, stored, *actual));
                }
            }
        }
        w.commit().await?;
        for (scope, stored_bytes, actual_bytes) in corrections {
            let path = self.scope_path(scope).await?;
            report.corrections.push(UsageCorrection { scope, path, stored_bytes, actual_bytes });
        }
        Ok(())
    }

    /// The path of a scope: repository name, project or group full path.
    pub async fn scope_path(&self, scope: UsageScope) -> Result<Option<String>, MetaError> {
        let sql = match scope {
            UsageScope::Repository(_) => "SELECT name AS path FROM repositories WHERE id = $1",
            UsageScope::Project(_) => "SELECT full_path AS path FROM projects WHERE id = $1",
            UsageScope::Group(_) => "SELECT full_path AS path FROM namespaces WHERE id = $1",
        };
        let row = sqlx::query(sql).bind(scope.id()).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.get("path")))
    }
}

#[cfg(test)]
mod tests;
