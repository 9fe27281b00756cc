//! The storage quota at the /v2 write paths: one call before content is added. The decision
//! itself is `meta::QuotaStatus::check_new_content`; this maps it to the OCI `DENIED` error.
//! The figure is the namespace's indexed usage row, read per request, so every instance sees
//! the same value without a cache to invalidate. A push already in flight when the limit is
//! crossed may finish: the check runs before, not inside, the write transaction.

use oci::{ErrorCode, RepositoryName};

use crate::error::{RegistryError, Result};
use crate::Registry;

/// Refuses the write if it may add bytes (`digests`: the content it adds, `None` when not yet
/// known, as at the start of an upload) to a namespace at or above its limit.
pub(crate) async fn require_room(
    registry: &Registry,
    name: &RepositoryName,
    digests: Option<&[&str]>,
) -> Result<()> {
    let Some(status) = registry.store.quota_for_repository(name.as_str()).await? else {
        return Ok(());
    };
    if status.check_new_content(true).is_ok() {
        return Ok(());
    }
    let adds = match digests {
        None => true,
        Some(digests) => {
            registry.store.adds_bytes_to_namespace(status.namespace_id, digests).await?
        }
    };
    status.check_new_content(adds).map_err(|refused| {
        RegistryError::new(ErrorCode::Denied, refused.to_string()).with_detail(serde_json::json!({
            "namespace": refused.namespace,
            "usage_bytes": refused.usage_bytes,
            "limit_bytes": refused.limit_bytes,
        }))
    })
}
