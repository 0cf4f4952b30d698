//! [`SqliteStore`]: a replica's envelopes in one SQLite file.
//!
//! # Layout
//! - `envelopes`: one row per held envelope: `seq` (the fetch cursor,
//!   `AUTOINCREMENT` so a number is never given twice, even after
//!   deletions), `mailbox` and `hash` (unique together: the duplicate
//!   check), the exact `envelope` bytes, `expiry` (Unix seconds), `class`
//!   (0 normal, 1 control) and `grp`, the network group of the peer that
//!   stored it. Indexes: `(mailbox, seq)` for fetches, `expiry` for expiry.
//! - `tombstones`: `(mailbox, hash) -> expiry` of acked envelopes.
//! - Since version 2: each envelope's [`Origin`] (`head`, `tail`,
//!   `signature`: its signed store request around the envelope; `head`
//!   is null for rows stored before), and each tombstone's `ack`, a row of
//!   `acks` (the owner's signed ack request, shared by the tombstones it
//!   made; deleted with the last of them).
//!
//! That is all a replica learns and keeps: no sender, no recipient, no
//! plaintext; the mailbox id changes daily for 1:1 mailboxes.
//!
//! # Durability
//! WAL mode. With [`Durability::Process`] (`synchronous=NORMAL`) an insert
//! that returned survives a crash of the process (it is in the WAL, in the
//! operating system's cache); with [`Durability::Power`] (`synchronous=FULL`)
//! every commit is also synced to the disk, so it survives a power loss, at
//! the cost of one sync per envelope. Each insert and each ack is one
//! transaction (an insert of several envelopes too).
//!
//! # Migrations
//! `PRAGMA user_version` is the schema version; [`MIGRATIONS`] step `i`
//! takes it from `i - 1` to `i`, each in its own transaction; a newer
//! schema is refused.

use std::path::Path;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::id::{EnvelopeHash, MailboxId};
use crate::store::{
    AckProof, Existing, Handoff, Origin, Removed, ReplicaStore, StoreError, StoredEnvelope,
};
use crate::sync::{State, SyncItem, SyncKey};
use crate::wire::{Class, Item};

/// The schema steps. Only ever append.
pub const MIGRATIONS: &[&str] = &[
    "CREATE TABLE envelopes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        mailbox BLOB NOT NULL CHECK (length(mailbox) = 32),
        hash BLOB NOT NULL CHECK (length(hash) = 32),
        envelope BLOB NOT NULL,
        expiry INTEGER NOT NULL,
        class INTEGER NOT NULL CHECK (class IN (0, 1)),
        grp TEXT NOT NULL,
        UNIQUE (mailbox, hash)
    ) STRICT;
    CREATE INDEX envelopes_fetch ON envelopes (mailbox, seq);
    CREATE INDEX envelopes_expiry ON envelopes (expiry);
    CREATE TABLE tombstones (
        mailbox BLOB NOT NULL CHECK (length(mailbox) = 32),
        hash BLOB NOT NULL CHECK (length(hash) = 32),
        expiry INTEGER NOT NULL,
        PRIMARY KEY (mailbox, hash)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX tombstones_expiry ON tombstones (expiry);",
    "ALTER TABLE envelopes ADD COLUMN head BLOB;
    ALTER TABLE envelopes ADD COLUMN tail BLOB;
    ALTER TABLE envelopes ADD COLUMN signature BLOB;
    CREATE TABLE acks (
        id INTEGER PRIMARY KEY,
        body BLOB NOT NULL,
        signature BLOB NOT NULL CHECK (length(signature) = 64)
    ) STRICT;
    ALTER TABLE tombstones ADD COLUMN ack INTEGER;
    CREATE INDEX tombstones_ack ON tombstones (ack);",
];

/// How far a returned insert survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A crash of the process (`synchronous=NORMAL`).
    Process,
    /// A power loss (`synchronous=FULL`: one disk sync per commit).
    Power,
}

/// A [`ReplicaStore`] in a SQLite file. See the [module docs](self).
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
}

fn ctx(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError(format!("sqlite: {what}: {e}"))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn class_of(v: i64) -> Class {
    if v == 1 {
        Class::Control
    } else {
        Class::Normal
    }
}

fn class_code(c: Class) -> i64 {
    match c {
        Class::Normal => 0,
        Class::Control => 1,
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the store at `path`, owner-only on
    /// Unix, in WAL mode, with its schema brought up to date.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let conn = Connection::open(path)
            .map_err(|e| StoreError(format!("sqlite: opening {}: {e}", path.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| StoreError(format!("permissions of {}: {e}", path.display())))?;
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(ctx("journal mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError(format!("sqlite: WAL mode refused ({mode})")));
        }
        Self::configure(conn, durability)
    }

    /// A store in memory (benchmarks and tests of the SQL itself).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(ctx("opening in memory"))?;
        Self::configure(conn, Durability::Process)
    }

    fn configure(mut conn: Connection, durability: Durability) -> Result<SqliteStore, StoreError> {
        let sync = match durability {
            Durability::Process => "NORMAL",
            Durability::Power => "FULL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000;"
        ))
        .map_err(ctx("pragmas"))?;
        let version: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(ctx("schema version"))?;
        let known = MIGRATIONS.len() as u32;
        if version > known {
            return Err(StoreError(format!(
                "schema version {version} is newer than this code's {known}"
            )));
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(ctx("migration"))?;
            tx.execute_batch(step).map_err(ctx("migration step"))?;
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(ctx("migration version"))?;
            tx.commit().map_err(ctx("migration commit"))?;
        }
        Ok(SqliteStore { conn })
    }

    /// Every row of `envelopes`, as (mailbox, hash, envelope, expiry,
    /// class, group): what the replica knows (tests inspect it).
    pub fn rows(&self) -> Result<Vec<StoredEnvelope>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT mailbox, hash, envelope, expiry, class, grp, head, tail, signature
                 FROM envelopes ORDER BY seq",
            )
            .map_err(ctx("rows"))?;
        let rows = stmt
            .query_map([], |r| {
                let mailbox: Vec<u8> = r.get(0)?;
                let hash: Vec<u8> = r.get(1)?;
                let envelope: Vec<u8> = r.get(2)?;
                Ok(StoredEnvelope {
                    mailbox: MailboxId::try_from_slice(&mailbox)
                        .unwrap_or(MailboxId::from_bytes([0; 32])),
                    hash: EnvelopeHash::try_from_slice(&hash)
                        .unwrap_or(EnvelopeHash::from_bytes([0; 32])),
                    envelope: Bytes::from(envelope),
                    expiry: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    class: class_of(r.get(4)?),
                    group: r.get(5)?,
                    origin: origin_of(r.get(6)?, r.get(7)?, r.get(8)?),
                })
            })
            .map_err(ctx("rows"))?;
        rows.collect::<Result<_, _>>().map_err(ctx("rows"))
    }
}

fn origin_of(
    head: Option<Vec<u8>>,
    tail: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
) -> Option<Origin> {
    Some(Origin {
        head: Bytes::from(head?),
        tail: Bytes::from(tail?),
        signature: match signature {
            None => None,
            Some(s) => Some(s.as_slice().try_into().ok()?),
        },
    })
}

fn hash_of(bytes: &[u8]) -> EnvelopeHash {
    EnvelopeHash::try_from_slice(bytes).unwrap_or(EnvelopeHash::from_bytes([0; 32]))
}

fn secs(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Stores `proof` in `acks`; returns its row id.
fn insert_ack(tx: &rusqlite::Transaction<'_>, proof: &AckProof) -> Result<i64, StoreError> {
    tx.prepare_cached("INSERT INTO acks (body, signature) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![&proof.body[..], &proof.signature[..]]))
        .map_err(ctx("ack proof"))?;
    Ok(tx.last_insert_rowid())
}

fn removed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Removed> {
    let mailbox: Vec<u8> = r.get(0)?;
    Ok(Removed {
        mailbox: MailboxId::try_from_slice(&mailbox).unwrap_or(MailboxId::from_bytes([0; 32])),
        class: class_of(r.get(1)?),
        len: usize::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        group: r.get(3)?,
    })
}

impl ReplicaStore for SqliteStore {
    fn scan(&mut self) -> Result<Vec<Removed>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT mailbox, class, length(envelope), grp FROM envelopes")
            .map_err(ctx("scan"))?;
        let rows = stmt.query_map([], removed_row).map_err(ctx("scan"))?;
        rows.collect::<Result<_, _>>().map_err(ctx("scan"))
    }

    fn find(
        &mut self,
        mailbox: &MailboxId,
        hash: &EnvelopeHash,
    ) -> Result<Option<Existing>, StoreError> {
        let (m, h) = (&mailbox.as_bytes()[..], &hash.as_bytes()[..]);
        let held: Option<i64> = self
            .conn
            .prepare_cached("SELECT expiry FROM envelopes WHERE mailbox = ?1 AND hash = ?2")
            .and_then(|mut s| s.query_row(params![m, h], |r| r.get(0)).optional())
            .map_err(ctx("find"))?;
        if let Some(expiry) = held {
            return Ok(Some(Existing::Held {
                expiry: u64::try_from(expiry).unwrap_or(0),
            }));
        }
        let tomb: Option<i64> = self
            .conn
            .prepare_cached("SELECT expiry FROM tombstones WHERE mailbox = ?1 AND hash = ?2")
            .and_then(|mut s| s.query_row(params![m, h], |r| r.get(0)).optional())
            .map_err(ctx("find"))?;
        Ok(tomb.map(|expiry| Existing::Tombstone {
            expiry: u64::try_from(expiry).unwrap_or(0),
        }))
    }

    fn insert(&mut self, envelopes: &[StoredEnvelope]) -> Result<Vec<u64>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx("insert"))?;
        let mut seqs = Vec::with_capacity(envelopes.len());
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO envelopes
                     (mailbox, hash, envelope, expiry, class, grp, head, tail, signature)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(ctx("insert"))?;
            for e in envelopes {
                stmt.execute(params![
                    &e.mailbox.as_bytes()[..],
                    &e.hash.as_bytes()[..],
                    &e.envelope[..],
                    to_i64(e.expiry),
                    class_code(e.class),
                    e.group,
                    e.origin.as_ref().map(|o| &o.head[..]),
                    e.origin.as_ref().map(|o| &o.tail[..]),
                    e.origin
                        .as_ref()
                        .and_then(|o| o.signature.as_ref())
                        .map(|s| &s[..]),
                ])
                .map_err(ctx("insert"))?;
                seqs.push(u64::try_from(tx.last_insert_rowid()).unwrap_or(0));
            }
        }
        tx.commit().map_err(ctx("insert commit"))?;
        Ok(seqs)
    }

    fn fetch(
        &mut self,
        mailbox: &MailboxId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Item>, bool), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, envelope, expiry FROM envelopes
                 WHERE mailbox = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(ctx("fetch"))?;
        let want = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let mut rows = stmt
            .query(params![&mailbox.as_bytes()[..], to_i64(after), want])
            .map_err(ctx("fetch"))?;
        let mut items = Vec::new();
        let mut bytes = 0;
        while let Some(r) = rows.next().map_err(ctx("fetch"))? {
            if items.len() >= limit || bytes >= max_bytes {
                return Ok((items, true));
            }
            let envelope: Vec<u8> = r.get(1).map_err(ctx("fetch"))?;
            bytes += envelope.len();
            items.push(Item {
                seq: u64::try_from(r.get::<_, i64>(0).map_err(ctx("fetch"))?).unwrap_or(0),
                envelope: Bytes::from(envelope),
                expiry: u64::try_from(r.get::<_, i64>(2).map_err(ctx("fetch"))?).unwrap_or(0),
            });
        }
        Ok((items, false))
    }

    fn ack(
        &mut self,
        mailbox: &MailboxId,
        hashes: &[EnvelopeHash],
        proof: Option<&AckProof>,
    ) -> Result<Vec<Removed>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx("ack"))?;
        let ack = proof.map(|p| insert_ack(&tx, p)).transpose()?;
        let mut out = Vec::new();
        {
            let mut select = tx
                .prepare_cached(
                    "SELECT mailbox, class, length(envelope), grp, expiry FROM envelopes
                     WHERE mailbox = ?1 AND hash = ?2",
                )
                .map_err(ctx("ack"))?;
            let mut delete = tx
                .prepare_cached("DELETE FROM envelopes WHERE mailbox = ?1 AND hash = ?2")
                .map_err(ctx("ack"))?;
            let mut tomb = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO tombstones (mailbox, hash, expiry, ack)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(ctx("ack"))?;
            let m = &mailbox.as_bytes()[..];
            for hash in hashes {
                let h = &hash.as_bytes()[..];
                let row = select
                    .query_row(params![m, h], |r| {
                        Ok((removed_row(r)?, r.get::<_, i64>(4)?))
                    })
                    .optional()
                    .map_err(ctx("ack"))?;
                if let Some((removed, expiry)) = row {
                    delete.execute(params![m, h]).map_err(ctx("ack"))?;
                    tomb.execute(params![m, h, expiry, ack])
                        .map_err(ctx("ack"))?;
                    out.push(removed);
                }
            }
        }
        tx.commit().map_err(ctx("ack commit"))?;
        Ok(out)
    }

    fn expire(&mut self, unix_secs: u64) -> Result<Vec<Removed>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx("expire"))?;
        let now = to_i64(unix_secs);
        let out = {
            let mut stmt = tx
                .prepare_cached(
                    "DELETE FROM envelopes WHERE expiry <= ?1
                     RETURNING mailbox, class, length(envelope), grp",
                )
                .map_err(ctx("expire"))?;
            let rows = stmt
                .query_map(params![now], removed_row)
                .map_err(ctx("expire"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(ctx("expire"))?
        };
        tx.execute("DELETE FROM tombstones WHERE expiry <= ?1", params![now])
            .map_err(ctx("expire"))?;
        tx.execute(
            "DELETE FROM acks WHERE NOT EXISTS (SELECT 1 FROM tombstones WHERE ack = acks.id)",
            [],
        )
        .map_err(ctx("expire"))?;
        tx.commit().map_err(ctx("expire commit"))?;
        Ok(out)
    }

    fn tombstone(
        &mut self,
        mailbox: &MailboxId,
        entries: &[(EnvelopeHash, u64)],
        proof: &AckProof,
    ) -> Result<Vec<Removed>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx("tombstone"))?;
        let ack = insert_ack(&tx, proof)?;
        let mut out = Vec::new();
        {
            let mut delete = tx
                .prepare_cached(
                    "DELETE FROM envelopes WHERE mailbox = ?1 AND hash = ?2
                     RETURNING mailbox, class, length(envelope), grp",
                )
                .map_err(ctx("tombstone"))?;
            let mut tomb = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO tombstones (mailbox, hash, expiry, ack)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(ctx("tombstone"))?;
            let m = &mailbox.as_bytes()[..];
            for (hash, expiry) in entries {
                let h = &hash.as_bytes()[..];
                let gone = delete
                    .query_row(params![m, h], removed_row)
                    .optional()
                    .map_err(ctx("tombstone"))?;
                out.extend(gone);
                tomb.execute(params![m, h, to_i64(*expiry), ack])
                    .map_err(ctx("tombstone"))?;
            }
        }
        tx.commit().map_err(ctx("tombstone commit"))?;
        Ok(out)
    }

    fn sync_items(&mut self, mailbox: &MailboxId) -> Result<Vec<SyncItem>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT expiry, hash, 0 FROM envelopes WHERE mailbox = ?1 AND head IS NOT NULL
                 UNION ALL
                 SELECT expiry, hash, 1 FROM tombstones WHERE mailbox = ?1 AND ack IS NOT NULL",
            )
            .map_err(ctx("sync items"))?;
        let rows = stmt
            .query_map(params![&mailbox.as_bytes()[..]], |r| {
                let hash: Vec<u8> = r.get(1)?;
                Ok(SyncItem {
                    key: SyncKey {
                        expiry: secs(r.get(0)?),
                        hash: hash_of(&hash),
                    },
                    state: match r.get::<_, i64>(2)? {
                        0 => State::Held,
                        _ => State::Tombstone,
                    },
                })
            })
            .map_err(ctx("sync items"))?;
        rows.collect::<Result<_, _>>().map_err(ctx("sync items"))
    }

    fn handoffs(
        &mut self,
        mailbox: &MailboxId,
        hashes: &[EnvelopeHash],
    ) -> Result<Vec<Handoff>, StoreError> {
        let m = &mailbox.as_bytes()[..];
        let mut out = Vec::new();
        let mut acks: Vec<(i64, Vec<(EnvelopeHash, u64)>)> = Vec::new();
        for hash in hashes {
            let h = &hash.as_bytes()[..];
            let tomb: Option<(i64, i64)> = self
                .conn
                .prepare_cached(
                    "SELECT expiry, ack FROM tombstones
                     WHERE mailbox = ?1 AND hash = ?2 AND ack IS NOT NULL",
                )
                .and_then(|mut s| {
                    s.query_row(params![m, h], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(ctx("handoffs"))?;
            if let Some((expiry, ack)) = tomb {
                match acks.iter_mut().find(|(id, _)| *id == ack) {
                    Some((_, entries)) => entries.push((*hash, secs(expiry))),
                    None => acks.push((ack, vec![(*hash, secs(expiry))])),
                }
                continue;
            }
            let held = self
                .conn
                .prepare_cached(
                    "SELECT envelope, expiry, head, tail, signature FROM envelopes
                     WHERE mailbox = ?1 AND hash = ?2 AND head IS NOT NULL",
                )
                .and_then(|mut s| {
                    s.query_row(params![m, h], |r| {
                        let envelope: Vec<u8> = r.get(0)?;
                        Ok((
                            envelope,
                            secs(r.get(1)?),
                            origin_of(r.get(2)?, r.get(3)?, r.get(4)?),
                        ))
                    })
                    .optional()
                })
                .map_err(ctx("handoffs"))?;
            if let Some((envelope, expiry, Some(origin))) = held {
                out.push(Handoff::Envelope {
                    body: origin.body(&envelope),
                    signature: origin.signature,
                    expiry,
                });
            }
        }
        for (id, entries) in acks {
            let proof: Option<(Vec<u8>, Vec<u8>)> = self
                .conn
                .prepare_cached("SELECT body, signature FROM acks WHERE id = ?1")
                .and_then(|mut s| {
                    s.query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(ctx("handoffs"))?;
            if let Some((body, signature)) = proof
                && let Ok(signature) = signature.as_slice().try_into()
            {
                out.push(Handoff::Tombstones {
                    ack: AckProof {
                        body: Bytes::from(body),
                        signature,
                    },
                    entries,
                });
            }
        }
        Ok(out)
    }

    fn mailboxes(&mut self) -> Result<Vec<MailboxId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT mailbox FROM envelopes UNION SELECT DISTINCT mailbox FROM tombstones",
            )
            .map_err(ctx("mailboxes"))?;
        let rows = stmt
            .query_map([], |r| {
                let m: Vec<u8> = r.get(0)?;
                Ok(MailboxId::try_from_slice(&m))
            })
            .map_err(ctx("mailboxes"))?;
        let mut out = Vec::new();
        for row in rows {
            out.extend(row.map_err(ctx("mailboxes"))?);
        }
        Ok(out)
    }

    fn drop_mailbox(&mut self, mailbox: &MailboxId) -> Result<Vec<Removed>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ctx("drop mailbox"))?;
        let m = &mailbox.as_bytes()[..];
        let out = {
            let mut stmt = tx
                .prepare_cached(
                    "DELETE FROM envelopes WHERE mailbox = ?1
                     RETURNING mailbox, class, length(envelope), grp",
                )
                .map_err(ctx("drop mailbox"))?;
            let rows = stmt
                .query_map(params![m], removed_row)
                .map_err(ctx("drop mailbox"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(ctx("drop mailbox"))?
        };
        tx.execute("DELETE FROM tombstones WHERE mailbox = ?1", params![m])
            .map_err(ctx("drop mailbox"))?;
        tx.commit().map_err(ctx("drop mailbox commit"))?;
        Ok(out)
    }
}
