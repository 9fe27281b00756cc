//! The metadata store: schema, migrations and one query API over SQLite and PostgreSQL.
//!
//! The database is the source of truth for what the registry holds — repositories, blobs and
//! which repository may serve them, manifests with their layers and children, tags and upload
//! sessions — and for tenancy: users, groups, projects, members and (hashed) credentials.
//! Storage only holds bytes, so no request ever needs to walk the storage tree.
//!
//! Every query is written once, with `$N` placeholders that both SQLite and PostgreSQL accept,
//! and runs through sqlx's `Any` driver. The durable job queue's rows live here too ([`jobs`]).
//! This crate must not know about HTTP or blob bytes.

mod browse;
mod cleanup;
pub mod dependency_proxy;
pub mod events;
mod gc;
mod gc_review;
pub mod jobs;
pub mod mirrors;
mod protection;
mod quota;
mod registry;
pub mod registry_queries;
mod store;
mod tenancy;
#[cfg(test)]
mod test_writes;
mod usage;
mod visibility;
mod write;

pub use browse::*;
pub use cleanup::*;
pub use dependency_proxy::{
    dependency_proxy_prefix, DependencyProxySettings, DependencyProxySettingsUpdate, GroupUpstream,
    ProxyManifest, DEFAULT_PROXY_TTL_DAYS,
};
pub use gc::*;
pub use gc_review::*;
pub use protection::*;
pub use quota::*;
pub use registry::*;
#[cfg(any(test, feature = "testing"))]
pub use store::testing;
pub use store::{
    sqlite_database_file, Backend, MetaError, PoolSettings, Store, WriteTx, UNAVAILABLE_RETRY_AFTER,
};
pub use tenancy::*;
pub use usage::*;
pub use visibility::*;
pub use write::*;

/// Milliseconds since the Unix epoch: the portable timestamp every table uses.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `ms` (milliseconds since the epoch) as RFC 3339 / ISO 8601 UTC, e.g. `2026-11-25T17:02:03.004Z`.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
