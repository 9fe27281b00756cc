//! Container registry storage in the API: usage statistics of projects and groups, exclusive
//! sizes, and the storage limit of top-level groups (set by instance admins). The figures are
//! `meta`'s indexed usage rows; nothing here scans the registry tables.

use meta::{Group, Project, Store, UsageScope};
use serde_json::{json, Value};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::input::Ref;
use crate::views::{GroupStorageView, GroupView};

/// `statistics` of a project: its deduplicated size and the part only it holds in its
/// namespace (what deleting it would free after garbage collection).
pub async fn project_statistics(store: &Store, project: &Project) -> Result<Value, ApiError> {
    let scope = UsageScope::Project(project.id);
    let namespace = top_level_id(store, &project.full_path).await?;
    Ok(json!({
        "container_registry_size": store.usage(scope).await?,
        "container_registry_exclusive_size": store.exclusive_size(scope, namespace).await?,
    }))
}

/// `statistics` of a group: its deduplicated size with every subgroup and project.
pub async fn group_statistics(store: &Store, group: &Group) -> Result<Value, ApiError> {
    Ok(json!({ "container_registry_size": store.usage(UsageScope::Group(group.id)).await? }))
}

/// The quota figures of a top-level group; `None` for a subgroup (limits apply to top-level
/// groups, whose usage includes every subgroup).
pub async fn group_storage(
    store: &Store,
    group: &Group,
) -> Result<Option<GroupStorageView>, ApiError> {
    let Some((status, notice)) = store.group_quota(group.id).await? else { return Ok(None) };
    let notice = notice.map(|n| {
        json!({
            "threshold": n.threshold,
            "message": n.message(),
            "usage_bytes": n.usage_bytes,
            "limit_bytes": n.limit_bytes,
            "created_at": crate::time::iso8601(n.created_at),
        })
    });
    Ok(Some(GroupStorageView {
        container_registry_storage_limit: status.limit_bytes.unwrap_or(0),
        container_registry_storage_limit_source: if status.group_limit.is_some() {
            "group"
        } else {
            "instance"
        },
        container_registry_storage_usage: status.usage_bytes,
        container_registry_storage_percentage: status
            .percentage()
            .map(|p| (p * 100.0).round() / 100.0),
        container_registry_storage_notice: notice,
    }))
}

/// A single group as `GET /groups/:id` shows it: quota figures, and usage statistics when
/// asked for.
pub async fn group_view(
    store: &Store,
    group: &Group,
    statistics: bool,
) -> Result<GroupView, ApiError> {
    let mut view = GroupView::from(group);
    view.storage = group_storage(store, group).await?;
    if statistics {
        view.statistics = Some(group_statistics(store, group).await?);
    }
    Ok(view)
}

/// Sets a top-level group's storage limit in bytes (0: none). Instance admins only: the limit
/// is what the instance grants the group, not a setting of its owners.
pub async fn set_group_storage_limit(
    store: &Store,
    caller: &Caller,
    group_ref: &Ref,
    bytes: i64,
) -> Result<Group, ApiError> {
    let group = crate::service::group(store, caller, group_ref).await?;
    caller.require_admin()?;
    if bytes < 0 {
        return Err(ApiError::invalid(
            "container_registry_storage_limit",
            "must be a number of bytes, 0 for no limit",
        ));
    }
    if group.parent_id.is_some() {
        return Err(ApiError::invalid(
            "container_registry_storage_limit",
            format!(
                "applies to top-level groups only; set it on {}",
                group.full_path.split('/').next().unwrap_or(&group.full_path)
            ),
        ));
    }
    store.set_group_storage_limit(group.id, Some(bytes)).await?;
    store.log_storage_notices().await;
    Ok(group)
}

/// The top-level group a path is under, if it exists.
async fn top_level_id(store: &Store, path: &str) -> Result<Option<i64>, ApiError> {
    let top = path.split('/').next().unwrap_or(path);
    Ok(store.group_by_full_path(top).await?.filter(|g| g.parent_id.is_none()).map(|g| g.id))
}
