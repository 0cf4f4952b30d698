//! The database's files beside SQLite itself: the lock that keeps a second
//! process away, owner-only permissions, and the checkpoint thread that
//! keeps the WAL short (and erased secrets out of it).

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use shoal_im::StoreError;

use super::{CHECKPOINT_BUSY_TIMEOUT, CHECKPOINT_INTERVAL, WAL_TRUNCATE_INTERVAL, ctx};

/// The thread that checkpoints the WAL of a file store. Dropping it stops
/// the thread and waits for it, so that when the store is gone its
/// connections are closed: the WAL is checkpointed away and no thread
/// touches the files after the lock is released.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only runs SQLite calls, which return errors rather
            // than panic; a panic there is already reported by the runtime.
            let _ = thread.join();
        }
    }
}

/// Starts the thread that checkpoints the WAL of the database at `path`
/// every [`CHECKPOINT_INTERVAL`] on a connection of its own, until the
/// returned [`Checkpointer`] is dropped. Checkpoints are `PASSIVE` (they
/// copy what no reader still needs and never block the writer), except one
/// every [`WAL_TRUNCATE_INTERVAL`], which is `TRUNCATE`: it waits for the
/// writer (up to [`CHECKPOINT_BUSY_TIMEOUT`]) and leaves the WAL empty.
pub(super) fn spawn_checkpointer(path: &Path) -> Result<Checkpointer, StoreError> {
    let conn = Connection::open(path).map_err(ctx("opening the checkpoint connection"))?;
    // Short: a checkpoint that cannot get its locks gives up and is tried
    // again soon, rather than holding off the engine's commits.
    conn.busy_timeout(CHECKPOINT_BUSY_TIMEOUT)
        .map_err(ctx("setting busy_timeout"))?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("shoal-sqlite-checkpoint".into())
        .spawn(move || {
            let mut truncated = std::time::Instant::now();
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(CHECKPOINT_INTERVAL)
            {
                let truncate = truncated.elapsed() >= WAL_TRUNCATE_INTERVAL;
                let mode = if truncate {
                    "PRAGMA wal_checkpoint(TRUNCATE)"
                } else {
                    "PRAGMA wal_checkpoint(PASSIVE)"
                };
                // The first column says whether it could not finish; a
                // truncation that could not is tried again at the next tick.
                match conn.query_row(mode, [], |row| row.get::<_, i64>(0)) {
                    Ok(0) if truncate => truncated = std::time::Instant::now(),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(%e, "wal checkpoint failed; retried later"),
                }
            }
        })
        .map_err(|e| StoreError(format!("starting the checkpoint thread: {e}")))?;
    Ok(Checkpointer {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// The lock file of the database at `path`: `<path>.lock` beside it.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// Takes an exclusive advisory lock on the database's lock file (created
/// owner-only if missing), so that two processes never run one identity:
/// both would seal with the same ratchet keys and the conversations would
/// break for good. Another holder makes this fail at once. The kernel drops
/// the lock when the holder's file closes, also when the process is killed
/// (`kill -9`), so a crash never leaves the directory locked.
pub(super) fn lock_database(path: &Path) -> Result<std::fs::File, StoreError> {
    let lock = lock_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&lock)
        .map_err(|e| StoreError(format!("opening the lock file {}: {e}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError(format!(
            "{} is in use by another process (it holds {}); stop it first",
            path.display(),
            lock.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError(format!("locking {}: {e}", lock.display())))
        }
    }
}

/// On Unix: creates `path` with mode `0o600` if `create` and it does not
/// exist, then sets its mode to exactly `0o600` if it exists.
#[cfg(unix)]
pub(super) fn restrict_permissions(path: &Path, create: bool) -> Result<(), StoreError> {
    use std::fs::{OpenOptions, Permissions};
    use std::io::ErrorKind;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    if create {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StoreError(format!(
                    "sqlite: creating {}: {e}",
                    path.display()
                )));
            }
        }
    }
    match std::fs::set_permissions(path, Permissions::from_mode(0o600)) {
        Ok(()) => Ok(()),
        Err(e) if !create && e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError(format!(
            "sqlite: setting mode 0600 on {}: {e}",
            path.display()
        ))),
    }
}

/// Elsewhere: nothing (the platform's default permissions apply).
#[cfg(not(unix))]
pub(super) fn restrict_permissions(_path: &Path, _create: bool) -> Result<(), StoreError> {
    Ok(())
}
