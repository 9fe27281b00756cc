//! The metadata store: schema, migrations and one query API over SQLite and PostgreSQL.
//!
//! The database is the source of truth for what the registry holds — repositories, blobs and
//! which repository may serve them, manifests with their layers and children, tags and upload
//! sessions. Storage only holds bytes, so no request ever needs to walk the storage tree.
//!
//! Every query is written once, with `$N` placeholders that both SQLite and PostgreSQL accept,
//! and runs through sqlx's `Any` driver. This crate must not know about HTTP or blob bytes.

mod registry;
mod store;

pub use registry::*;
pub use store::{Backend, MetaError, Store};

/// Milliseconds since the Unix epoch: the portable timestamp every table uses.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
