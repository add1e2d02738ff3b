//! Control state in an SQLite file (the embedded default). Several processes may share the
//! file: WAL mode and a busy timeout make concurrent gateways safe.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{AuditEntry, AuditRecord, ControlError, VersionRecord};

/// An SQLite control database.
pub struct SqliteControl {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS strangler_route_versions (
    version INTEGER PRIMARY KEY,
    created_at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS strangler_rollouts (
    route TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS strangler_conflicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS strangler_audit (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    entity TEXT NOT NULL,
    body TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);";

impl SqliteControl {
    /// Opens or creates the file (`:memory:` for a private in-memory database).
    pub async fn open(path: &str) -> Result<SqliteControl, ControlError> {
        let path = path.to_string();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, ControlError> {
            let conn = if path == ":memory:" {
                Connection::open_in_memory()?
            } else {
                Connection::open(&path)?
            };
            conn.busy_timeout(Duration::from_secs(5))?;
            // Switching to WAL while another process opens the same new file answers
            // "database is locked" without waiting on the busy handler: try again briefly.
            let mut tries = 0;
            loop {
                let setup = conn
                    .pragma_update(None, "journal_mode", "WAL")
                    .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
                    .and_then(|()| conn.execute_batch(SCHEMA));
                match setup {
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if tries < 50
                            && matches!(
                                e.code,
                                rusqlite::ErrorCode::DatabaseBusy
                                    | rusqlite::ErrorCode::DatabaseLocked
                            ) =>
                    {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    other => {
                        other?;
                        break;
                    }
                }
            }
            Ok(conn)
        })
        .await??;
        Ok(SqliteControl {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, ControlError> + Send + 'static,
    ) -> Result<T, ControlError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let guard = conn.lock().map_err(|_| ControlError::Poisoned)?;
            f(&guard)
        })
        .await?
    }

    pub(super) async fn insert_version<S: serde::Serialize>(
        &self,
        rec: &VersionRecord<S>,
    ) -> Result<bool, ControlError> {
        let spec = serde_json::to_string(&rec.spec)?;
        let (v, t, r) = (
            rec.version as i64,
            rec.created_at_ms as i64,
            rec.reason.clone(),
        );
        self.with(move |c| {
            let n = c.execute(
                "INSERT INTO strangler_route_versions (version, created_at_ms, reason, spec) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (version) DO NOTHING",
                params![v, t, r, spec],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub(super) async fn versions<S: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        limit: usize,
    ) -> Result<Vec<VersionRecord<S>>, ControlError> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT version, created_at_ms, reason, spec FROM strangler_route_versions ORDER BY version DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map(params![limit as i64], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?, row.get::<_, String>(3)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (version, created, reason, spec) = row?;
                out.push(VersionRecord {
                    version: version as u64,
                    created_at_ms: created as u64,
                    reason,
                    spec: serde_json::from_str(&spec)?,
                });
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn latest_version(&self) -> Result<u64, ControlError> {
        self.with(|c| {
            let v: Option<i64> = c
                .query_row(
                    "SELECT max(version) FROM strangler_route_versions",
                    [],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            Ok(v.unwrap_or(0) as u64)
        })
        .await
    }

    pub(super) async fn save_rollout(&self, route: &str, state: &str) -> Result<(), ControlError> {
        let (route, state) = (route.to_string(), state.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO strangler_rollouts (route, state) VALUES (?1, ?2) ON CONFLICT (route) DO UPDATE SET state = excluded.state",
                params![route, state],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn rollouts(&self) -> Result<Vec<(String, String)>, ControlError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT route, state FROM strangler_rollouts ORDER BY route")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub(super) async fn record_conflicts(&self, records: Vec<String>) -> Result<(), ControlError> {
        self.with(move |c| {
            let tx = c.unchecked_transaction()?;
            {
                let mut stmt =
                    tx.prepare_cached("INSERT INTO strangler_conflicts (record) VALUES (?1)")?;
                for r in &records {
                    stmt.execute([r])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    pub(super) async fn conflicts(&self, limit: usize) -> Result<Vec<String>, ControlError> {
        self.with(move |c| {
            let mut stmt =
                c.prepare("SELECT record FROM strangler_conflicts ORDER BY id DESC LIMIT ?1")?;
            let rows = stmt.query_map([limit as i64], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub(super) async fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
        now: i64,
    ) -> Result<Vec<AuditRecord>, ControlError> {
        self.with(move |c| {
            // IMMEDIATE: the write lock is taken before the last record is read, so two
            // processes appending at once cannot both chain to it.
            c.execute_batch("BEGIN IMMEDIATE")?;
            let run = || -> Result<Vec<AuditRecord>, ControlError> {
                let mut last: Option<(i64, String)> = c
                    .query_row(
                        "SELECT seq, hash FROM strangler_audit ORDER BY seq DESC LIMIT 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let mut out = Vec::with_capacity(entries.len());
                let mut stmt = c.prepare_cached(
                    "INSERT INTO strangler_audit (seq, at_ms, kind, entity, body, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for e in entries {
                    let rec = AuditRecord::next(
                        last.as_ref().map(|(s, h)| (*s, h.as_str())),
                        now,
                        &e.kind,
                        &e.entity,
                        e.body,
                    );
                    stmt.execute(params![rec.seq, rec.at_ms, rec.kind, rec.entity, rec.body, rec.prev, rec.hash])?;
                    last = Some((rec.seq, rec.hash.clone()));
                    out.push(rec);
                }
                Ok(out)
            };
            match run() {
                Ok(out) => {
                    c.execute_batch("COMMIT")?;
                    Ok(out)
                }
                Err(e) => {
                    let _ = c.execute_batch("ROLLBACK");
                    Err(e)
                }
            }
        })
        .await
    }

    pub(super) async fn audit(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, ControlError> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, at_ms, kind, entity, body, prev, hash FROM strangler_audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], |r| {
                Ok(AuditRecord {
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    kind: r.get(2)?,
                    entity: r.get(3)?,
                    body: r.get(4)?,
                    prev: r.get(5)?,
                    hash: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}
