//! SQLite mode is one process. A `serve` on SQLite keeps caches of what it wrote (tags) and
//! serialises its writers in memory; a second process on the same file would serve stale tags,
//! fail writes with `database is locked` and race the first one's migrations. So `serve` takes
//! an exclusive advisory lock (`flock`) on `stowage.lock` in the directory holding the
//! database before it opens it, and holds it for its lifetime; the kernel releases it when the
//! process ends, however it ends. Admin commands (`stowage admin`, `stowage ci-env`) take no
//! lock: they are short and run beside a serving process by design. `stowage import` takes
//! the lock when it is free (and moves tags then); beside a `serve` it only adds tags.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rustix::fs::{flock, FlockOperation};

/// The held lock; released when dropped or when the process exits.
pub struct SqliteLock {
    _file: File,
}

impl SqliteLock {
    /// Takes the lock for the SQLite database file `database`, or says which process holds it.
    pub fn acquire(database: &Path) -> anyhow::Result<SqliteLock> {
        let path = lock_path(database);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!(" (pid {pid})"),
                    Err(_) => String::new(),
                };
                bail!(
                    "another stowage serve{holder} is using the SQLite database at {}; SQLite mode \
                     is one process — use PostgreSQL (database.url) to run several instances",
                    database.display()
                );
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Who holds it, for the message a second process prints.
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(SqliteLock { _file: file })
    }
}

/// For a command that changes registry state on its own (`stowage jobs run-due`,
/// `stowage gc run`): on SQLite it takes `serve`'s lock before the database is opened, or
/// refuses, saying `fix` (what to do instead), while a `serve` holds it. A serving process
/// caches what it wrote and runs that work itself. Nothing to take on PostgreSQL, where such
/// a command runs beside serving instances like one more instance.
pub fn for_command(database_url: &str, fix: &str) -> anyhow::Result<Option<SqliteLock>> {
    match meta::sqlite_database_file(database_url) {
        Some(database) => SqliteLock::acquire(&database).context(fix.to_string()).map(Some),
        None => Ok(None),
    }
}

fn lock_path(database: &Path) -> PathBuf {
    let dir = database.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.join("stowage.lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("stowage.db");
        let first = SqliteLock::acquire(&db).unwrap();
        let refused = SqliteLock::acquire(&db).err().expect("second lock refused").to_string();
        assert!(
            refused.starts_with(&format!(
                "another stowage serve (pid {}) is using the SQLite database at {}",
                std::process::id(),
                db.display()
            )),
            "{refused}"
        );
        assert!(refused.contains("use PostgreSQL (database.url)"), "{refused}");
        drop(first);
        SqliteLock::acquire(&db).expect("free again once the holder is gone");
    }

    #[test]
    fn commands_take_the_lock_on_sqlite_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("stowage.db").display());
        let serving = for_command(&url, "unused").unwrap().expect("a lock on SQLite");
        let refused = for_command(&url, "stop serve first").err().expect("refused").to_string();
        assert_eq!(refused, "stop serve first");
        drop(serving);
        assert!(for_command(&url, "unused").unwrap().is_some());
        assert!(for_command("postgres://u@h/db", "unused").unwrap().is_none());
    }
}
