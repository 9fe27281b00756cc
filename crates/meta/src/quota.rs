//! Quotas: a storage limit per top-level group, threshold notices, and the one decision on
//! whether a write may add bytes ([`QuotaStatus::check_new_content`]).
//!
//! The limit of a namespace is its own `container_registry_storage_limit` when set, else the
//! instance default (`quotas.default_limit`, stored in `quota_settings` at start so that
//! triggers and every instance see the same value); 0 means no limit. Notices are recorded by
//! triggers when usage or a limit change crosses 70, 85, 95 or 100 % (migration 0009).

use sqlx::Row;

use crate::store::{get_i64, MetaError, Store};
use crate::UsageScope;

/// The percentages at which a notice is recorded, in order.
pub const NOTICE_THRESHOLDS: [i64; 4] = [70, 85, 95, 100];

/// A top-level namespace's figures, as one indexed read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaStatus {
    pub namespace_id: i64,
    pub namespace: String,
    pub usage_bytes: i64,
    /// `None`: no limit.
    pub limit_bytes: Option<i64>,
    /// The group's own setting (`None`: the instance default applies).
    pub group_limit: Option<i64>,
}

/// Why a write was refused: the namespace is at or above its limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "group {namespace} has used {} of its {} container registry storage limit, so new content \
     cannot be pushed: delete tags, manifests or repositories in {namespace} (the space is \
     freed by garbage collection) or ask an administrator to raise the limit; pulls, deletes \
     and pushes of content the group already stores keep working",
    human_bytes(*usage_bytes),
    human_bytes(*limit_bytes)
)]
pub struct QuotaExceeded {
    pub namespace: String,
    pub usage_bytes: i64,
    pub limit_bytes: i64,
}

/// A recorded threshold crossing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageNotice {
    pub id: i64,
    pub namespace_id: i64,
    pub namespace: String,
    pub threshold: i64,
    pub usage_bytes: i64,
    pub limit_bytes: i64,
    pub created_at: i64,
}

impl StorageNotice {
    /// The sentence logged and shown on the group.
    pub fn message(&self) -> String {
        let verb = if self.threshold >= 100 { "reached" } else { "passed" };
        format!(
            "group {} has {verb} {} % of its container registry storage limit: {} of {}",
            self.namespace,
            self.threshold,
            human_bytes(self.usage_bytes),
            human_bytes(self.limit_bytes)
        )
    }
}

/// `1.5 GiB (1610612736 bytes)`: readable, and exact for whoever compares figures.
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {} ({bytes} bytes)", UNITS[unit])
}

impl QuotaStatus {
    /// Used share of the limit in percent (`None` without a limit).
    pub fn percentage(&self) -> Option<f64> {
        self.limit_bytes.map(|limit| self.usage_bytes as f64 * 100.0 / limit as f64)
    }

    /// The highest threshold the usage is at or above.
    pub fn level(&self) -> Option<i64> {
        let limit = self.limit_bytes?;
        NOTICE_THRESHOLDS
            .iter()
            .rev()
            .copied()
            .find(|t| self.usage_bytes.saturating_mul(100) >= t.saturating_mul(limit))
    }

    /// THE quota decision: a write that would add bytes the namespace does not hold yet is
    /// refused at or above 100 % of the limit. Everything else (pulls, deletes, pushes of
    /// content already stored in the namespace) is always allowed, so a team can clean up.
    pub fn check_new_content(&self, adds_bytes: bool) -> Result<(), QuotaExceeded> {
        match self.limit_bytes {
            Some(limit) if adds_bytes && self.usage_bytes >= limit => Err(QuotaExceeded {
                namespace: self.namespace.clone(),
                usage_bytes: self.usage_bytes,
                limit_bytes: limit,
            }),
            _ => Ok(()),
        }
    }
}

fn effective_limit(group_limit: Option<i64>, default_limit: i64) -> Option<i64> {
    Some(group_limit.unwrap_or(default_limit)).filter(|l| *l > 0)
}

impl Store {
    /// Stores the instance default limit (bytes, 0 = none); every instance writes the same
    /// value from its configuration at start. A change records the notices it causes.
    pub async fn set_default_storage_limit(&self, bytes: i64) -> Result<(), MetaError> {
        let mut w = self.write_tx().await?;
        sqlx::query(
            "UPDATE quota_settings SET default_limit = $1 WHERE id = 1 AND default_limit <> $1",
        )
        .bind(bytes.max(0))
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }

    /// Sets a top-level group's own limit (`None`: the instance default; `Some(0)`: none).
    /// Returns false when the group does not exist or is not top-level.
    pub async fn set_group_storage_limit(
        &self,
        group_id: i64,
        bytes: Option<i64>,
    ) -> Result<bool, MetaError> {
        let mut w = self.write_tx().await?;
        let result = sqlx::query(
            "UPDATE namespaces SET container_registry_storage_limit = $1 \
             WHERE id = $2 AND parent_id IS NULL",
        )
        .bind(bytes.map(|b| b.max(0)))
        .bind(group_id)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(result.rows_affected() > 0)
    }

    /// The figures of top-level group `namespace_id`.
    pub async fn quota_status(&self, namespace_id: i64) -> Result<Option<QuotaStatus>, MetaError> {
        let sql = format!("{STATUS_SELECT} WHERE n.id = $1 AND n.parent_id IS NULL");
        let row = sqlx::query(&sql).bind(namespace_id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(status_from_row))
    }

    /// A group's quota as every surface shows it (the REST API's `GET /groups/:id`, the group
    /// page): its figures and the notice of the threshold it is at now. `None` for a subgroup:
    /// limits apply to top-level groups, whose usage includes every subgroup.
    pub async fn group_quota(
        &self,
        group_id: i64,
    ) -> Result<Option<(QuotaStatus, Option<StorageNotice>)>, MetaError> {
        let Some(status) = self.quota_status(group_id).await? else { return Ok(None) };
        let notice = self.current_storage_notice(&status).await?;
        Ok(Some((status, notice)))
    }

    /// The figures of the top-level group repository `name` is (or would be) under: the group
    /// whose full path is the name's first segment. One indexed read per request, the same on
    /// every instance.
    pub async fn quota_for_repository(&self, name: &str) -> Result<Option<QuotaStatus>, MetaError> {
        let top = name.split('/').next().unwrap_or(name);
        let sql = format!("{STATUS_SELECT} WHERE n.full_path = $1 AND n.parent_id IS NULL");
        let row = sqlx::query(&sql).bind(top).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(status_from_row))
    }

    /// Whether any of `digests` is not yet counted in the namespace, i.e. whether a manifest
    /// referencing them adds bytes there.
    pub async fn adds_bytes_to_namespace(
        &self,
        namespace_id: i64,
        digests: &[&str],
    ) -> Result<bool, MetaError> {
        for digest in digests {
            let counted = sqlx::query(
                "SELECT 1 AS one FROM usage_blob_refs \
                 WHERE scope_kind = 'group' AND scope_id = $1 AND blob_digest = $2",
            )
            .bind(namespace_id)
            .bind(*digest)
            .fetch_optional(&self.pool)
            .await?;
            if counted.is_none() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The notice for the threshold the namespace is at now, if it is at one: the latest
    /// recorded crossing of that threshold.
    pub async fn current_storage_notice(
        &self,
        status: &QuotaStatus,
    ) -> Result<Option<StorageNotice>, MetaError> {
        let Some(level) = status.level() else { return Ok(None) };
        let row = sqlx::query(&format!(
            "{NOTICE_SELECT} WHERE s.namespace_id = $1 AND s.threshold = $2 ORDER BY s.id DESC LIMIT 1"
        ))
        .bind(status.namespace_id)
        .bind(level)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(notice_from_row))
    }

    /// Every recorded notice of a namespace, oldest first.
    pub async fn storage_notices(
        &self,
        namespace_id: i64,
    ) -> Result<Vec<StorageNotice>, MetaError> {
        let rows = sqlx::query(&format!("{NOTICE_SELECT} WHERE s.namespace_id = $1 ORDER BY s.id"))
            .bind(namespace_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(notice_from_row).collect())
    }

    /// Notices not yet written to the log, marked as logged; the caller logs them. Cheap when
    /// there are none (an index range that is empty).
    pub async fn take_unlogged_storage_notices(&self) -> Result<Vec<StorageNotice>, MetaError> {
        let rows =
            sqlx::query(&format!("{NOTICE_SELECT} WHERE s.logged = 0 ORDER BY s.id LIMIT 100"))
                .fetch_all(&self.pool)
                .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let notices: Vec<StorageNotice> = rows.iter().map(notice_from_row).collect();
        let mut w = self.write_tx().await?;
        let mut taken = Vec::new();
        for notice in notices {
            // Of two instances taking the same row, one logs it.
            let marked =
                sqlx::query("UPDATE storage_notices SET logged = 1 WHERE id = $1 AND logged = 0")
                    .bind(notice.id)
                    .execute(&mut *w.tx)
                    .await?;
            if marked.rows_affected() == 1 {
                taken.push(notice);
            }
        }
        w.commit().await?;
        Ok(taken)
    }

    /// Writes notices recorded since the last call to the log (each once, whichever instance
    /// takes it). Called after writes that may add bytes and after limit changes; failures
    /// are logged, never returned: a notice is also kept in the database.
    pub async fn log_storage_notices(&self) {
        match self.take_unlogged_storage_notices().await {
            Ok(notices) => {
                for n in notices {
                    tracing::warn!(
                        namespace = %n.namespace,
                        threshold = n.threshold,
                        usage_bytes = n.usage_bytes,
                        limit_bytes = n.limit_bytes,
                        "{}",
                        n.message()
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "reading storage notices failed"),
        }
    }

    /// Usage of a scope for the quota figures of a group that is not top-level: its own
    /// deduplicated usage (limits apply to top-level groups only).
    pub async fn group_usage(&self, group_id: i64) -> Result<i64, MetaError> {
        self.usage(UsageScope::Group(group_id)).await
    }
}

const STATUS_SELECT: &str = "SELECT n.id, n.full_path, \
     n.container_registry_storage_limit AS group_limit, s.default_limit, \
     COALESCE(u.bytes, 0) AS bytes FROM namespaces n \
     JOIN quota_settings s ON s.id = 1 \
     LEFT JOIN usage_totals u ON u.scope_kind = 'group' AND u.scope_id = n.id";

fn status_from_row(r: &sqlx::any::AnyRow) -> QuotaStatus {
    let group_limit = r.get::<Option<i64>, _>("group_limit");
    QuotaStatus {
        namespace_id: get_i64(r, "id"),
        namespace: r.get("full_path"),
        usage_bytes: get_i64(r, "bytes"),
        limit_bytes: effective_limit(group_limit, get_i64(r, "default_limit")),
        group_limit,
    }
}

const NOTICE_SELECT: &str = "SELECT s.id, s.namespace_id, n.full_path, s.threshold, \
     s.usage_bytes, s.limit_bytes, s.created_at FROM storage_notices s \
     JOIN namespaces n ON n.id = s.namespace_id";

fn notice_from_row(r: &sqlx::any::AnyRow) -> StorageNotice {
    StorageNotice {
        id: get_i64(r, "id"),
        namespace_id: get_i64(r, "namespace_id"),
        namespace: r.get("full_path"),
        threshold: get_i64(r, "threshold"),
        usage_bytes: get_i64(r, "usage_bytes"),
        limit_bytes: get_i64(r, "limit_bytes"),
        created_at: get_i64(r, "created_at"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(usage: i64, limit: Option<i64>) -> QuotaStatus {
        QuotaStatus {
            namespace_id: 1,
            namespace: "acme".into(),
            usage_bytes: usage,
            limit_bytes: limit,
            group_limit: None,
        }
    }

    #[test]
    fn decision() {
        assert!(status(100, None).check_new_content(true).is_ok());
        assert!(status(99, Some(100)).check_new_content(true).is_ok());
        let refused = status(100, Some(100)).check_new_content(true).unwrap_err();
        assert!(refused.to_string().contains("group acme has used 100 bytes of its 100 bytes"));
        assert!(status(150, Some(100)).check_new_content(false).is_ok(), "nothing new: allowed");
        assert_eq!(status(69, Some(100)).level(), None);
        assert_eq!(status(70, Some(100)).level(), Some(70));
        assert_eq!(status(96, Some(100)).level(), Some(95));
        assert_eq!(status(1000, Some(100)).level(), Some(100));
        assert_eq!(effective_limit(None, 0), None);
        assert_eq!(effective_limit(Some(0), 50), None, "0 on the group: no limit");
        assert_eq!(effective_limit(None, 50), Some(50));
        assert_eq!(human_bytes(1536), "1.5 KiB (1536 bytes)");
    }
}
