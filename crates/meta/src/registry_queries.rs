//! Queries for the registry management API (`/api/v4/.../registry`): repositories by project
//! path, tag listings with offset and keyset pagination, tag details, deduplicated sizes, and
//! metadata-only deletion of tags and whole repositories (bytes are left for GC).
//!
//! A repository belongs to the project whose full path is its longest prefix. Projects never
//! nest below projects (a project and a group never share a path), so "the repositories of
//! project `P`" is exactly the name range `P` and `P/…`, which the unique index on
//! `repositories.name` answers. Every range here is written as `name > 'P/' AND name < 'P0'`
//! (`'0'` is the byte after `'/'`) rather than `LIKE`, whose `_` and `%` our paths may contain.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::store::{get_i64, MetaError, Store};

/// A repository row.
#[derive(Clone, Debug)]
pub struct RepositoryRecord {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    /// How many tags it has (kept by the write transaction, never counted on read).
    pub tags_count: i64,
    /// The project it belongs to (its name's longest project prefix), if any.
    pub project_id: Option<i64>,
}

/// A tag with what it points at.
#[derive(Clone, Debug)]
pub struct TagDetail {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    pub config_digest: Option<String>,
    pub total_size: i64,
    /// When the tag was first created.
    pub created_at: i64,
    /// When the tag was last pushed or moved: its published time.
    pub updated_at: i64,
}

/// How a tag listing is ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagOrder {
    Name,
    NameDesc,
    Published,
    PublishedDesc,
}

impl TagOrder {
    fn by_published(self) -> bool {
        matches!(self, TagOrder::Published | TagOrder::PublishedDesc)
    }

    fn descending(self) -> bool {
        matches!(self, TagOrder::NameDesc | TagOrder::PublishedDesc)
    }
}

/// A keyset position: the last (or first) tag of a page. `published_at` only matters when
/// ordering by published time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagMarker {
    pub published_at: i64,
    pub name: String,
}

/// One page of a keyset tag listing.
#[derive(Clone, Debug)]
pub struct TagPageQuery {
    pub order: TagOrder,
    /// Tags strictly after this marker (in `order`).
    pub after: Option<TagMarker>,
    /// Tags strictly before this marker (in `order`); wins over `after`.
    pub before: Option<TagMarker>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
    pub name_exact: Option<String>,
    pub limit: i64,
}

/// Where a page starts when read from the nearer end of a listing.
pub(crate) struct NearerEnd {
    /// Read in descending order (and turn the rows around).
    pub from_end: bool,
    pub offset: i64,
    pub limit: i64,
}

/// Up to how many candidates a substring search takes from the trigram index.
const TRIGRAM_CANDIDATES: i64 = 2000;

/// `P/` and `P0`: the bounds of the names strictly below `path`.
fn below(path: &str) -> (String, String) {
    (format!("{path}/"), format!("{path}0"))
}

pub(crate) fn repository_from_row(row: &AnyRow) -> RepositoryRecord {
    RepositoryRecord {
        id: get_i64(row, "id"),
        name: row.get("name"),
        created_at: get_i64(row, "created_at"),
        tags_count: get_i64(row, "tags_count"),
        project_id: row.get::<Option<i64>, _>("project_id"),
    }
}

fn tag_from_row(row: &AnyRow) -> TagDetail {
    TagDetail {
        name: row.get("name"),
        digest: row.get("digest"),
        media_type: row.get("media_type"),
        config_digest: row.get("config_digest"),
        total_size: get_i64(row, "total_size"),
        created_at: get_i64(row, "created_at"),
        updated_at: get_i64(row, "updated_at"),
    }
}

const TAG_COLUMNS: &str = "t.name, m.digest, m.media_type, m.config_digest, m.total_size, \
     t.created_at, t.updated_at";

/// `%`, `_` and `\` taken literally in a `LIKE ... ESCAPE '\'` pattern.
pub(crate) fn like_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Store {
    pub async fn repository_by_id(&self, id: i64) -> Result<Option<RepositoryRecord>, MetaError> {
        let row = sqlx::query(
            "SELECT id, name, created_at, tags_count, project_id FROM repositories WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(repository_from_row))
    }

    /// The repository named `path` and those below it, by name.
    pub async fn repositories_at_or_below(
        &self,
        path: &str,
    ) -> Result<Vec<RepositoryRecord>, MetaError> {
        let (low, high) = below(path);
        let rows = sqlx::query(
            "SELECT id, name, created_at, tags_count, project_id FROM repositories \
             WHERE name = $1 OR (name > $2 AND name < $3) ORDER BY name",
        )
        .bind(path)
        .bind(&low)
        .bind(&high)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(repository_from_row).collect())
    }

    /// The repository's tag count: one row read (`tags_count` is kept by triggers on `tags`
    /// in every writing transaction, migration 0014), not a count over its tags.
    pub async fn count_tags(&self, repository_id: i64) -> Result<i64, MetaError> {
        let row = sqlx::query("SELECT tags_count FROM repositories WHERE id = $1")
            .bind(repository_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map_or(0, |r| get_i64(&r, "tags_count")))
    }

    /// How many repositories project `project_id` has (`projects.repositories_count`, kept by
    /// triggers), and the `limit` of them after the first `offset`, by name: a range of the
    /// `(project_id, name)` index, read from the end for pages in the second half.
    pub async fn project_repositories_page(
        &self,
        project_id: i64,
        offset: i64,
        limit: i64,
    ) -> Result<(i64, Vec<RepositoryRecord>), MetaError> {
        let total = sqlx::query("SELECT repositories_count FROM projects WHERE id = $1")
            .bind(project_id)
            .fetch_optional(&self.pool)
            .await?
            .map_or(0, |r| get_i64(&r, "repositories_count"));
        let page = Self::page_from_nearer_end(total, offset, limit);
        let sql = format!(
            "SELECT id, name, created_at, tags_count, project_id FROM repositories \
             WHERE project_id = $1 ORDER BY name {} LIMIT $2 OFFSET $3",
            if page.from_end { "DESC" } else { "ASC" }
        );
        let rows = sqlx::query(&sql)
            .bind(project_id)
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(&self.pool)
            .await?;
        let mut repositories: Vec<RepositoryRecord> =
            rows.iter().map(repository_from_row).collect();
        if page.from_end {
            repositories.reverse();
        }
        Ok((total, repositories))
    }

    /// How to read rows `offset..offset + limit` of `total` in order with the fewest rows
    /// skipped: from the start, or (in the second half) backwards from the end.
    pub(crate) fn page_from_nearer_end(total: i64, offset: i64, limit: i64) -> NearerEnd {
        if offset > total / 2 && offset < total {
            let limit = limit.min(total - offset);
            NearerEnd { from_end: true, offset: total - offset - limit, limit }
        } else {
            NearerEnd { from_end: false, offset, limit }
        }
    }

    /// Tag names in name order, `offset`/`limit` (the REST API's page-numbered listing). A
    /// page in the second half of the listing is read from the end (`ORDER BY name DESC` with
    /// the offset counted from there, `tags_count` saying where the end is) and turned around,
    /// so the rows skipped are at most half the tags, and few for the last pages.
    pub async fn tag_names_page(
        &self,
        repository_id: i64,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<String>, MetaError> {
        let total = self.count_tags(repository_id).await?;
        let page = Self::page_from_nearer_end(total, offset, limit);
        let (from_end, offset, limit) = (page.from_end, page.offset, page.limit);
        let sql = if from_end {
            "SELECT name FROM tags WHERE repository_id = $1 ORDER BY name DESC LIMIT $2 OFFSET $3"
        } else {
            "SELECT name FROM tags WHERE repository_id = $1 ORDER BY name LIMIT $2 OFFSET $3"
        };
        let rows = sqlx::query(sql)
            .bind(repository_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let mut names: Vec<String> = rows.iter().map(|r| r.get("name")).collect();
        if from_end {
            names.reverse();
        }
        Ok(names)
    }

    pub async fn tag_detail(
        &self,
        repository_id: i64,
        name: &str,
    ) -> Result<Option<TagDetail>, MetaError> {
        let sql = format!(
            "SELECT {TAG_COLUMNS} FROM tags t JOIN manifests m ON m.id = t.manifest_id \
             WHERE t.repository_id = $1 AND t.name = $2"
        );
        let row =
            sqlx::query(&sql).bind(repository_id).bind(name).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(tag_from_row))
    }

    /// One keyset page, always returned in `query.order` (a `before` page is read backwards
    /// and turned around). Walks the `(repository_id, name)` primary key or the
    /// `(repository_id, updated_at, name)` index, so a page costs the same on page 1 and 5000.
    pub async fn tag_details_page(
        &self,
        repository_id: i64,
        query: &TagPageQuery,
    ) -> Result<Vec<TagDetail>, MetaError> {
        let (marker, backwards) = match (&query.before, &query.after) {
            (Some(m), _) => (Some(m), true),
            (None, Some(m)) => (Some(m), false),
            (None, None) => (None, false),
        };
        // Reading backwards flips the direction of both the comparison and the sort.
        let ascending = query.order.descending() == backwards;
        let (cmp, dir) = if ascending { (">", "ASC") } else { ("<", "DESC") };
        let mut sql = format!(
            "SELECT {TAG_COLUMNS} FROM tags t JOIN manifests m ON m.id = t.manifest_id \
             WHERE t.repository_id = $1"
        );
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        let marker_params = marker.map(|_| (next(), next()));
        if let Some((p_time, p_name)) = marker_params {
            if query.order.by_published() {
                sql.push_str(&format!(
                    " AND (t.updated_at {cmp} ${p_time} OR (t.updated_at = ${p_time} AND t.name {cmp} ${p_name}))"
                ));
            } else {
                // Keeps the placeholder numbering identical; the time is unused.
                sql.push_str(&format!(" AND t.name {cmp} ${p_name} AND ${p_time} = ${p_time}"));
            }
        }
        let contains = query.name_contains.as_ref().map(|c| (next(), c));
        let mut trigram_pattern = None;
        if let Some((p, text)) = contains {
            let needle = text.to_lowercase();
            // No tag holds any other character: nothing can match.
            if !needle.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
            {
                return Ok(Vec::new());
            }
            sql.push_str(&format!(" AND LOWER(t.name) LIKE ${p} ESCAPE '\\'"));
            if self.few_tags_contain(repository_id, &needle).await? {
                // The trigram index names the candidates (`_` matches any character there,
                // so they are a superset, filtered exactly above).
                let q = next();
                trigram_pattern = Some(format!("%{needle}%"));
                sql.push_str(&format!(
                    " AND t.name IN (SELECT s.name FROM tag_search_names s \
                     WHERE s.id IN ({matches}) AND +s.repository_id = $1)",
                    matches = trigram_matches(q)
                ));
            }
        }
        let exact = query.name_exact.as_ref().map(|e| (next(), e));
        if let Some((p, _)) = exact {
            sql.push_str(&format!(" AND t.name = ${p}"));
        }
        let p_limit = next();
        if query.order.by_published() {
            sql.push_str(&format!(" ORDER BY t.updated_at {dir}, t.name {dir}"));
        } else {
            sql.push_str(&format!(" ORDER BY t.name {dir}"));
        }
        sql.push_str(&format!(" LIMIT ${p_limit}"));

        let mut q = sqlx::query(&sql).bind(repository_id);
        if let Some(m) = marker {
            q = q.bind(m.published_at).bind(m.name.as_str());
        }
        if let Some((_, c)) = contains {
            q = q.bind(format!("%{}%", like_literal(&c.to_lowercase())));
        }
        if let Some(pattern) = &trigram_pattern {
            q = q.bind(pattern.as_str());
        }
        if let Some((_, e)) = exact {
            q = q.bind(e.as_str());
        }
        let rows = q.bind(query.limit).fetch_all(&self.pool).await?;
        let mut tags: Vec<TagDetail> = rows.iter().map(tag_from_row).collect();
        if backwards {
            tags.reverse();
        }
        Ok(tags)
    }

    /// Whether at most [`TRIGRAM_CANDIDATES`] tags of the repository contain `needle` (lower
    /// case, three characters or more) as the trigram index sees it. A rare substring is then
    /// found through the index; a common one by walking the tags in order, which meets a page
    /// of matches soon. Either way a page reads a bounded number of rows.
    async fn few_tags_contain(&self, repository_id: i64, needle: &str) -> Result<bool, MetaError> {
        if needle.chars().count() < 3 {
            return Ok(false);
        }
        let sql = format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM (SELECT 1 AS one FROM tag_search_names s \
             WHERE s.id IN ({}) AND +s.repository_id = $2 LIMIT $3) c",
            trigram_matches(1)
        );
        let row = sqlx::query(&sql)
            .bind(format!("%{needle}%"))
            .bind(repository_id)
            .bind(TRIGRAM_CANDIDATES + 1)
            .fetch_one(&self.pool)
            .await?;
        Ok(get_i64(&row, "n") <= TRIGRAM_CANDIDATES)
    }

    /// Every tag of the repository with its published time (for bulk deletion).
    pub async fn tags_with_published(
        &self,
        repository_id: i64,
    ) -> Result<Vec<(String, i64)>, MetaError> {
        let rows = sqlx::query("SELECT name, updated_at FROM tags WHERE repository_id = $1")
            .bind(repository_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get("name"), get_i64(r, "updated_at"))).collect())
    }

    /// Bytes of the distinct blobs (configs and layers) that tagged manifests reference,
    /// directly or through an index (children linked by id, or by digest when the index was
    /// pushed before them), in the repository `path` and, with `with_descendants`, every
    /// repository below it. A blob shared by many tags or repositories counts once.
    pub async fn deduplicated_size(
        &self,
        path: &str,
        with_descendants: bool,
    ) -> Result<i64, MetaError> {
        let (low, high) = below(path);
        let repos = if with_descendants {
            "SELECT id FROM repositories WHERE name = $1 OR (name > $2 AND name < $3)"
        } else {
            "SELECT id FROM repositories WHERE name = $1 AND $2 = $2 AND $3 = $3"
        };
        // Tagged manifests are found from the manifests (an index probe of `tags_by_manifest`
        // each), not from the tags: a repository with a million tags on a few manifests reads
        // a few rows. A tag's manifest is always in the tag's repository.
        let tagged = format!(
            "SELECT m.id FROM manifests m WHERE m.repository_id IN ({repos}) \
             AND EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)"
        );
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS size FROM blobs b \
             WHERE b.digest IN (SELECT mb.blob_digest FROM manifest_blobs mb WHERE mb.manifest_id IN ( \
               {tagged} \
               UNION SELECT mr.child_id FROM manifest_references mr WHERE mr.parent_id IN ({tagged}) \
               UNION SELECT m.id FROM manifest_digest_references md \
                 JOIN manifests m ON m.repository_id = md.repository_id AND m.digest = md.child_digest \
                 WHERE md.parent_id IN ({tagged})))"
        );
        let row = sqlx::query(&sql).bind(path).bind(&low).bind(&high).fetch_one(&self.pool).await?;
        Ok(get_i64(&row, "size"))
    }
}

/// The ids of the `tag_search_names` rows whose name the trigram index says may match the
/// pattern bound at `$param`. Callers join it as `s.id IN (…) AND +s.repository_id = …`: the
/// unary `+` keeps SQLite from walking every name of the repository through its
/// `repository_id` index and probing the trigram index once per name (seconds at 100 000
/// tags); it starts from the index's few matches instead (PostgreSQL plans both the same).
fn trigram_matches(param: usize) -> String {
    format!("SELECT f.rowid FROM tag_name_trigrams f WHERE f.name LIKE ${param}")
}
