//! [`SqliteStore`]: the messenger's [`Store`] in one SQLite database file.
//!
//! # What is stored where
//!
//! - `identity`: one row (`id = 0`) holding the identity blob (device
//!   secrets and prekeys) exactly as the engine encoded it.
//! - `contacts`: one row per contact, keyed by the contact's 32-byte root
//!   key, holding the contact blob (ratchet sessions and the like).
//! - `messages`: one row per message, keyed by its 32-byte [`MessageId`]:
//!   the [`MessageMeta`] fields as columns (the three [`MessageFlags`] as
//!   0/1 integers) and the exact encoded message. The index
//!   `messages_history (contact, held, height, id)` serves
//!   [`Store::history`]: equality on `contact` and `held = 0`, then a
//!   backwards walk over `(height, id)`, so a page costs `O(log n + limit)`
//!   and never sorts.
//!
//! SQLite integers are signed 64-bit. `counter` and `timestamp_ms` are
//! sender-chosen `u64`s that are never compared in SQL, so they are stored
//! as the `i64` with the same bits (a value above `i64::MAX` reads back
//! negative in the `sqlite3` shell but round-trips exactly). `height` is
//! ordered by SQL and is stored as itself; a height above `i64::MAX` (which
//! would need that many messages in a chain) is refused with a
//! [`StoreError`]. Ids and keys are compared as BLOBs, which SQLite does
//! with `memcmp`: for 32-byte ids that is exactly the `Ord` of
//! [`MessageId`].
//!
//! The blobs are stored as given: encrypting them at rest is the caller's
//! business.
//!
//! # Erasure
//!
//! What the engine erases (a rotated prekey, a used chain or message key, a
//! removed contact's history) must leave the files, not just the rows.
//! `PRAGMA secure_delete=ON` makes SQLite overwrite freed space with zeros,
//! and the WAL, whose old frames still hold earlier versions of the pages,
//! is truncated to nothing by a `TRUNCATE` checkpoint every
//! [`WAL_TRUNCATE_INTERVAL`]. So an erased secret is gone from
//! `messenger.db`, `-wal` and `-shm` within about that interval (what the
//! file system or the disk keeps of released blocks is beyond the store).
//!
//! # Durability
//!
//! The database runs in WAL mode (`PRAGMA journal_mode=WAL`, checked on
//! open) with `PRAGMA synchronous=NORMAL`. Every [`Store::commit`] is one
//! SQLite transaction: either all of a [`Changes`] lands or none of it.
//!
//! - A **process crash** (panic, abort, `kill -9`) loses nothing that
//!   `commit` returned `Ok` for: a committed transaction is in the WAL file,
//!   i.e. in the operating system's page cache, and the next open replays it.
//! - A **power loss or OS crash** can lose the most recent commits: with
//!   `synchronous=NORMAL` in WAL mode commits are not fsynced individually;
//!   the WAL is synced only when it is checkpointed into the database,
//!   which a background thread of the store does every
//!   [`CHECKPOINT_INTERVAL`] (and SQLite when the last connection closes),
//!   so about the last quarter second of commits is at risk. Should that
//!   thread fall behind (a process starved of CPU), the commit that takes
//!   the WAL past 4 MiB checkpoints it itself, so the WAL stays bounded.
//!   After such a crash the database comes back as of some earlier
//!   commit, i.e. recently committed transactions can be rolled back, but
//!   it is never corrupted and never holds half a transaction.
//!
//! This is the guarantee the [`Store`] trait asks for ("durable against a
//! process crash"); a caller that needs power-loss durability for every
//! commit would need `synchronous=FULL`, at the cost of one fsync per
//! message.
//!
//! Other connections to the same file (a second process, a debugging shell)
//! are tolerated: every connection waits up to [`BUSY_TIMEOUT`] for a lock,
//! and `commit` takes the write lock up front (`BEGIN IMMEDIATE`).
//!
//! # File permissions
//!
//! The database holds the user's secret keys, so on Unix it is made
//! readable and writable by its owner only:
//!
//! - if the file does not exist, [`SqliteStore::open`] creates it (empty,
//!   which SQLite treats as a new database) with mode `0o600` before SQLite
//!   opens it, so it is never visible with wider permissions;
//! - the main file is then `chmod`ed to exactly `0o600` whatever the umask
//!   (and an existing file with wider permissions is narrowed);
//! - SQLite creates the `-wal` and `-shm` siblings (and a `-journal` when one
//!   is needed) with the permissions of the main file, so they are `0o600`
//!   too (at most; the umask can only remove bits); after the schema is set
//!   up, `open` also `chmod`s whichever of them exist to `0o600`, to narrow
//!   siblings left over with wider permissions.
//!
//! The directory holding the file is the caller's business. On other
//! platforms the file gets the platform's default permissions.
//!
//! # Migrations
//!
//! The schema version is SQLite's `PRAGMA user_version` (0 for a new
//! database). [`MIGRATIONS`] lists the steps: step `i` (1-based) takes the
//! schema from version `i - 1` to `i`, step 1 creating the tables. On open,
//! every missing step runs in its own transaction together with the update
//! of `user_version`, so an interrupted migration leaves the database at the
//! previous version. A database whose `user_version` is newer than the
//! steps this code knows (written by a newer release) is refused with a
//! [`StoreError`] rather than misread. New steps are only ever appended.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use shoal_im::store::HistoryCursor;
use shoal_im::{
    Changes, MessageFlags, MessageId, MessageMeta, SealedRecord, Store, StoreError, StoredMessage,
};

/// How long a statement waits for a lock held by another connection before
/// failing with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the background thread of a file store checkpoints the WAL
/// into the database (which is also when the WAL is synced to disk).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

/// How long a checkpoint waits for the locks it needs before giving up
/// until the next tick.
const CHECKPOINT_BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// How often the background thread of a file store truncates the WAL
/// (a `TRUNCATE` checkpoint), removing the old page versions it holds.
pub const WAL_TRUNCATE_INTERVAL: Duration = Duration::from_secs(2);

/// WAL pages (of 4 KiB) past which a commit checkpoints the WAL itself,
/// when the checkpoint thread has fallen that far behind: 4 MiB.
const WAL_BACKSTOP_PAGES: i64 = 1024;

/// The size in bytes SQLite truncates the WAL file to when it starts
/// reusing it after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 1024 * 1024;

/// The schema migration steps: step `i` (index `i - 1`) takes the database
/// from `user_version` `i - 1` to `i`. Only ever append to this list.
pub const MIGRATIONS: &[&str] = &[
    // 1: the tables.
    "CREATE TABLE identity (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        blob BLOB NOT NULL
    ) STRICT;
    CREATE TABLE contacts (
        key BLOB PRIMARY KEY NOT NULL CHECK (length(key) = 32),
        blob BLOB NOT NULL
    ) STRICT;
    CREATE TABLE messages (
        id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 32),
        contact BLOB NOT NULL CHECK (length(contact) = 32),
        outgoing INTEGER NOT NULL CHECK (outgoing IN (0, 1)),
        counter INTEGER NOT NULL,
        height INTEGER NOT NULL CHECK (height >= 0),
        timestamp_ms INTEGER NOT NULL,
        held INTEGER NOT NULL CHECK (held IN (0, 1)),
        delivered INTEGER NOT NULL CHECK (delivered IN (0, 1)),
        read INTEGER NOT NULL CHECK (read IN (0, 1)),
        encoded BLOB NOT NULL
    ) STRICT;
    CREATE INDEX messages_history ON messages (contact, held, height, id);",
    // 2: envelopes sealed once, resent as they are (shoal-im SealedRecord),
    // and the envelopes received, to acknowledge a resent copy again.
    "CREATE TABLE sealed (
        id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 32),
        contact BLOB NOT NULL CHECK (length(contact) = 32),
        session BLOB NOT NULL CHECK (length(session) = 16),
        envelope BLOB NOT NULL,
        stored INTEGER NOT NULL CHECK (stored IN (0, 1)),
        sealed_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE received (
        key BLOB PRIMARY KEY NOT NULL CHECK (length(key) = 32),
        id BLOB NOT NULL CHECK (length(id) = 32),
        contact BLOB NOT NULL CHECK (length(contact) = 32)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX received_contact ON received (contact);",
];

/// The schema version this code writes: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

const META_COLUMNS: &str =
    "id, contact, outgoing, counter, height, timestamp_ms, held, delivered, read";

/// A [`Store`] in a SQLite database (see the [module docs](self) for the
/// layout, durability and permissions).
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: Option<PathBuf>,
    /// Dropping it stops the checkpoint thread and waits for it (after
    /// `conn` is closed, so the thread's connection closes last and
    /// checkpoints the WAL away).
    _checkpointer: Option<files::Checkpointer>,
    /// The lock file, locked while the store is open (dropped last).
    _lock: Option<std::fs::File>,
}

mod files;

pub use files::lock_path;
use files::{lock_database, restrict_permissions, spawn_checkpointer};

/// Column `i` of `row`, a blob of exactly `N` bytes.
fn fixed_blob<const N: usize>(row: &Row<'_>, i: usize) -> rusqlite::Result<[u8; N]> {
    let v: Vec<u8> = row.get(i)?;
    v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Blob,
            "wrong length".into(),
        )
    })
}

/// Wraps a rusqlite error with what was being done.
fn ctx(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError(format!("sqlite: {what}: {e}"))
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `path`, makes it
    /// owner-only, switches it to WAL mode and brings its schema up to
    /// [`SCHEMA_VERSION`].
    ///
    /// Holds an exclusive lock on [`lock_path`] while the store is open:
    /// a second store on the same file, in this process or another, fails
    /// at once; the lock goes with the process, also when it is killed.
    ///
    /// Fails if the file is in use by another store, cannot be created or
    /// opened, is not a SQLite database, cannot be put in WAL mode, or has a
    /// schema newer than this code knows.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let lock = lock_database(path)?;
        restrict_permissions(path, true)?;
        let conn = Connection::open(path)
            .map_err(|e| StoreError(format!("sqlite: opening {}: {e}", path.display())))?;
        let mut store = SqliteStore {
            conn,
            path: Some(path.to_path_buf()),
            _checkpointer: None,
            _lock: Some(lock),
        };
        store.configure(true)?;
        store.migrate()?;
        // Checkpoints (and the syncs they bring) happen on a thread of
        // their own instead of inside whichever commit crosses the
        // automatic threshold: that commit used to take 3-30 ms.
        //
        // The threshold stays as a backstop: when the thread falls behind
        // (its checkpoints cannot finish while the process is starved of
        // CPU), the commit that takes the WAL past WAL_BACKSTOP_PAGES
        // checkpoints it, so a flood of commits cannot grow the WAL
        // without bound; and a WAL reset after a checkpoint truncates the
        // file to WAL_SIZE_LIMIT instead of keeping its largest size.
        store
            .conn
            .pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)
            .map_err(ctx("setting the checkpoint backstop"))?;
        store
            .conn
            .pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(ctx("setting journal_size_limit"))?;
        store._checkpointer = Some(spawn_checkpointer(path)?);
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut sibling = path.as_os_str().to_owned();
            sibling.push(suffix);
            restrict_permissions(Path::new(&sibling), false)?;
        }
        Ok(store)
    }

    /// A fresh database in memory (nothing survives the store): for tests.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(ctx("opening in-memory database"))?;
        let mut store = SqliteStore {
            conn,
            path: None,
            _checkpointer: None,
            _lock: None,
        };
        store.configure(false)?;
        store.migrate()?;
        Ok(store)
    }

    /// The file this store was opened on (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn configure(&mut self, file: bool) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(ctx("setting busy_timeout"))?;
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(ctx("setting journal_mode=WAL"))?;
        // An in-memory database answers "memory": there is no WAL to have.
        if file && !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError(format!(
                "sqlite: journal_mode=WAL refused (still {mode:?}); \
                 the file system may not support WAL's shared memory"
            )));
        }
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(ctx("setting synchronous=NORMAL"))?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(ctx("setting foreign_keys=ON"))?;
        self.conn
            .pragma_update(None, "secure_delete", "ON")
            .map_err(ctx("setting secure_delete=ON"))?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(ctx("reading user_version"))?;
        let known = i64::from(SCHEMA_VERSION);
        if version > known {
            return Err(StoreError(format!(
                "sqlite: database schema version {version} is newer than this \
                 code knows ({known}); it was written by a newer release"
            )));
        }
        let Ok(done) = usize::try_from(version) else {
            return Err(StoreError(format!(
                "sqlite: invalid database schema version {version}"
            )));
        };
        for (step, sql) in (1..).zip(MIGRATIONS).skip(done) {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(ctx("starting a migration"))?;
            tx.execute_batch(sql)
                .map_err(|e| StoreError(format!("sqlite: migration step {step}: {e}")))?;
            tx.pragma_update(None, "user_version", step)
                .map_err(ctx("updating user_version"))?;
            tx.commit().map_err(|e| {
                StoreError(format!("sqlite: committing migration step {step}: {e}"))
            })?;
        }
        Ok(())
    }
}

fn height_to_sql(height: u64) -> Result<i64, StoreError> {
    i64::try_from(height)
        .map_err(|_| StoreError(format!("sqlite: height {height} does not fit in SQLite")))
}

/// Reads the [`META_COLUMNS`] starting at column 0.
fn meta_from_row(row: &Row<'_>) -> rusqlite::Result<MessageMeta> {
    Ok(MessageMeta {
        id: MessageId(row.get(0)?),
        contact: row.get(1)?,
        outgoing: row.get(2)?,
        counter: row.get::<_, i64>(3)? as u64,
        height: row.get(4)?,
        timestamp_ms: row.get::<_, i64>(5)? as u64,
        flags: MessageFlags {
            held: row.get(6)?,
            delivered: row.get(7)?,
            read: row.get(8)?,
        },
    })
}

/// Reads the [`META_COLUMNS`] and then `encoded`.
fn message_from_row(row: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        meta: meta_from_row(row)?,
        encoded: row.get(9)?,
    })
}

impl Store for SqliteStore {
    fn load_identity(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .prepare_cached("SELECT blob FROM identity WHERE id = 0")
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)).optional())
            .map_err(ctx("loading identity"))
    }

    fn load_contacts(&mut self) -> Result<Vec<([u8; 32], Vec<u8>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, blob FROM contacts ORDER BY key")
            .map_err(ctx("loading contacts"))?;
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(ctx("loading contacts"))
    }

    fn load_index(&mut self) -> Result<Vec<MessageMeta>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {META_COLUMNS} FROM messages ORDER BY id"))
            .map_err(ctx("loading message index"))?;
        stmt.query_map([], meta_from_row)
            .and_then(|rows| rows.collect())
            .map_err(ctx("loading message index"))
    }

    fn load_sealed(&mut self) -> Result<Vec<SealedRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, contact, session, envelope, stored, sealed_at FROM sealed ORDER BY id",
            )
            .map_err(ctx("loading sealed envelopes"))?;
        stmt.query_map([], |row| {
            Ok(SealedRecord {
                id: MessageId(fixed_blob(row, 0)?),
                contact: fixed_blob(row, 1)?,
                session: fixed_blob(row, 2)?,
                envelope: row.get(3)?,
                stored: row.get(4)?,
                sealed_at: row.get::<_, i64>(5)? as u64,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(ctx("loading sealed envelopes"))
    }

    fn received(&mut self, key: &[u8; 32]) -> Result<Option<MessageId>, StoreError> {
        self.conn
            .prepare_cached("SELECT id FROM received WHERE key = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([&key[..]], |row| fixed_blob(row, 0).map(MessageId))
                    .optional()
            })
            .map_err(ctx("looking up a received envelope"))
    }

    fn message(&mut self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {META_COLUMNS}, encoded FROM messages WHERE id = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row([&id.0], message_from_row).optional())
            .map_err(ctx("loading a message"))
    }

    fn history(
        &mut self,
        contact: &[u8; 32],
        before: Option<HistoryCursor>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match before {
            None => self
                .conn
                .prepare_cached(&format!(
                    "SELECT {META_COLUMNS}, encoded FROM messages
                     WHERE contact = ?1 AND held = 0
                     ORDER BY height DESC, id DESC LIMIT ?2"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![contact, limit], message_from_row)?
                        .collect()
                }),
            Some((height, id)) => {
                // Every stored height fits in an i64, so a larger cursor is
                // after all of them.
                let (height, id): (i64, &[u8]) = match i64::try_from(height) {
                    Ok(height) => (height, &id.0),
                    // 33 bytes of 0xff sort after every 32-byte id.
                    Err(_) => (i64::MAX, &[0xff; 33]),
                };
                self.conn
                    .prepare_cached(&format!(
                        "SELECT {META_COLUMNS}, encoded FROM messages
                         WHERE contact = ?1 AND held = 0 AND (height, id) < (?2, ?3)
                         ORDER BY height DESC, id DESC LIMIT ?4"
                    ))
                    .and_then(|mut stmt| {
                        stmt.query_map(params![contact, height, id, limit], message_from_row)?
                            .collect()
                    })
            }
        };
        rows.map_err(ctx("loading history"))
    }

    fn commit(&mut self, changes: &Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        // IMMEDIATE: take the write lock now (waiting up to BUSY_TIMEOUT)
        // rather than failing on upgrade if another connection writes.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx("beginning commit"))?;
        // Any early return drops `tx`, which rolls the whole commit back.
        if let Some(identity) = &changes.identity {
            tx.prepare_cached(
                "INSERT INTO identity (id, blob) VALUES (0, ?1)
                 ON CONFLICT (id) DO UPDATE SET blob = excluded.blob",
            )
            .and_then(|mut stmt| stmt.execute([identity]))
            .map_err(ctx("saving identity"))?;
        }
        if !changes.removed_contacts.is_empty() {
            let mut contact = tx
                .prepare_cached("DELETE FROM contacts WHERE key = ?1")
                .map_err(ctx("removing contacts"))?;
            let mut messages = tx
                .prepare_cached("DELETE FROM messages WHERE contact = ?1")
                .map_err(ctx("removing a contact's messages"))?;
            let mut sealed = tx
                .prepare_cached("DELETE FROM sealed WHERE contact = ?1")
                .map_err(ctx("removing a contact's envelopes"))?;
            let mut received = tx
                .prepare_cached("DELETE FROM received WHERE contact = ?1")
                .map_err(ctx("removing a contact's envelopes"))?;
            for key in &changes.removed_contacts {
                received
                    .execute([key])
                    .map_err(ctx("removing a contact's envelopes"))?;
                contact.execute([key]).map_err(ctx("removing a contact"))?;
                messages
                    .execute([key])
                    .map_err(ctx("removing a contact's messages"))?;
                sealed
                    .execute([key])
                    .map_err(ctx("removing a contact's envelopes"))?;
            }
        }
        if !changes.contacts.is_empty() {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO contacts (key, blob) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET blob = excluded.blob",
                )
                .map_err(ctx("saving contacts"))?;
            for (key, blob) in &changes.contacts {
                stmt.execute(params![key, blob])
                    .map_err(ctx("saving a contact"))?;
            }
        }
        if !changes.removed.is_empty() {
            let mut stmt = tx
                .prepare_cached("DELETE FROM messages WHERE id = ?1")
                .map_err(ctx("removing messages"))?;
            let mut sealed = tx
                .prepare_cached("DELETE FROM sealed WHERE id = ?1")
                .map_err(ctx("removing messages"))?;
            for id in &changes.removed {
                stmt.execute([id.0]).map_err(ctx("removing a message"))?;
                sealed.execute([id.0]).map_err(ctx("removing a message"))?;
            }
        }
        if !changes.messages.is_empty() {
            let mut stmt = tx
                .prepare_cached(
                    // Not INSERT OR IGNORE: that would also silently skip
                    // a row breaking a CHECK or NOT NULL constraint; only an
                    // existing id is to be left alone.
                    "INSERT INTO messages (id, contact, outgoing, counter, height,
                         timestamp_ms, held, delivered, read, encoded)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (id) DO NOTHING",
                )
                .map_err(ctx("saving messages"))?;
            for message in &changes.messages {
                let meta = &message.meta;
                stmt.execute(params![
                    meta.id.0,
                    meta.contact,
                    meta.outgoing,
                    meta.counter as i64,
                    height_to_sql(meta.height)?,
                    meta.timestamp_ms as i64,
                    meta.flags.held,
                    meta.flags.delivered,
                    meta.flags.read,
                    message.encoded,
                ])
                .map_err(ctx("saving a message"))?;
            }
        }
        if !changes.updates.is_empty() {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE messages SET height = ?2, held = ?3, delivered = ?4, read = ?5
                     WHERE id = ?1",
                )
                .map_err(ctx("updating messages"))?;
            for (id, height, flags) in &changes.updates {
                stmt.execute(params![
                    id.0,
                    height_to_sql(*height)?,
                    flags.held,
                    flags.delivered,
                    flags.read,
                ])
                .map_err(ctx("updating a message"))?;
            }
        }
        if !changes.unsealed.is_empty() {
            let mut stmt = tx
                .prepare_cached("DELETE FROM sealed WHERE id = ?1")
                .map_err(ctx("removing sealed envelopes"))?;
            for id in &changes.unsealed {
                stmt.execute([id.0])
                    .map_err(ctx("removing a sealed envelope"))?;
            }
        }
        if !changes.sealed.is_empty() {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO sealed (id, contact, session, envelope, stored, sealed_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO UPDATE SET contact = excluded.contact,
                         session = excluded.session, envelope = excluded.envelope,
                         stored = excluded.stored, sealed_at = excluded.sealed_at",
                )
                .map_err(ctx("saving sealed envelopes"))?;
            for r in &changes.sealed {
                stmt.execute(params![
                    r.id.0,
                    r.contact,
                    r.session,
                    r.envelope,
                    r.stored,
                    i64::try_from(r.sealed_at).unwrap_or(i64::MAX),
                ])
                .map_err(ctx("saving a sealed envelope"))?;
            }
        }
        if !changes.received.is_empty() {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO received (key, id, contact) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO NOTHING",
                )
                .map_err(ctx("saving received envelopes"))?;
            for r in &changes.received {
                stmt.execute(params![r.key, r.id.0, r.contact])
                    .map_err(ctx("saving a received envelope"))?;
            }
        }
        tx.commit().map_err(ctx("committing"))
    }
}
