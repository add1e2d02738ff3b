//! SQLite side: capture by triggers guarded by a one-row flag table (SQLite has one writer at a
//! time, so the flag the engine sets inside its own transaction is seen only by its writes).

mod capture;
mod statement;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde_json::Value;

use super::sql::{ChangeRow, dq, hex_bytes, to_change};
use super::{
    ApplyBatch, Backend, Capture, CaptureSpec, Catalog, Change, Column, ForeignKey, Form, Index,
    Row, StoreError, TableInfo, Write, family,
};
use crate::family::TypeFamily;

/// An SQLite database.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: String,
    watch: std::sync::OnceLock<Watch>,
}

/// A thread that wakes the engine when another connection commits to the file.
struct Watch {
    notify: Arc<tokio::sync::Notify>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(w) = self.watch.get() {
            w.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// How often the watch thread reads `PRAGMA data_version` (a read of the shared WAL index,
/// a few microseconds): SQLite has no cross-process notification.
const WATCH_EVERY: Duration = Duration::from_millis(1);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _strangler_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl TEXT NOT NULL, op TEXT NOT NULL, old TEXT, new TEXT, tx TEXT,
    ts INTEGER NOT NULL, pk TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS _strangler_changes_key ON _strangler_changes (tbl, pk);
CREATE TABLE IF NOT EXISTS _strangler_applied (src TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (src, seq));
CREATE TABLE IF NOT EXISTS _strangler_guard (applying INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS _strangler_fence (unit TEXT PRIMARY KEY, token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS _strangler_backfill (entity TEXT PRIMARY KEY, progress TEXT NOT NULL);
INSERT INTO _strangler_guard SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM _strangler_guard);";

/// Waits for another connection's write lock in 250 µs steps, for up to 10 s. SQLite's own
/// busy timeout sleeps in growing steps of up to 100 ms, and each such sleep is added to the
/// round and to the lag of every change in it.
fn busy(attempt: i32) -> bool {
    const STEP: Duration = Duration::from_micros(250);
    if attempt >= (10_000_000 / STEP.as_micros()) as i32 {
        return false;
    }
    std::thread::sleep(STEP);
    true
}

const NOW_US: &str = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)";

impl SqliteStore {
    /// Opens the file (created if missing).
    pub async fn open(path: &str) -> Result<SqliteStore, StoreError> {
        let path = path.to_string();
        let file = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut conn = Connection::open(&file)?;
            conn.busy_handler(Some(busy))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            super::rowhash::register(&conn)?;
            Ok(conn)
        })
        .await??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
            watch: std::sync::OnceLock::new(),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StoreError::Poisoned)?;
            f(&mut guard)
        })
        .await?
    }
}

#[async_trait::async_trait]
impl Backend for SqliteStore {
    async fn catalog(&mut self) -> Result<Catalog, StoreError> {
        let names: Vec<String> = self
            .with(|c| {
                let mut st = c.prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                     AND name NOT LIKE '\\_strangler\\_%' ESCAPE '\\' ORDER BY name",
                )?;
                let names = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(names)
            })
            .await?;
        super::backend::describe_each(self, names).await
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn table_info(&mut self, table: &str) -> Result<Option<TableInfo>, StoreError> {
        let table = table.to_string();
        self.with(move |c| {
            let mut columns = Vec::new();
            let mut pk: Vec<(i64, String)> = Vec::new();
            let mut stmt = c.prepare(
                "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)",
            )?;
            let mut rows = stmt.query([&table])?;
            while let Some(r) = rows.next()? {
                let name: String = r.get(0)?;
                let declared: String = r.get(1)?;
                let notnull: i64 = r.get(2)?;
                let dflt: Option<String> = r.get(3)?;
                let pkpos: i64 = r.get(4)?;
                if pkpos > 0 {
                    pk.push((pkpos, name.clone()));
                }
                let family = family(&declared);
                columns.push(Column {
                    form: if family == TypeFamily::Json {
                        Form::JsonText
                    } else {
                        Form::Plain
                    },
                    family,
                    declared,
                    nullable: notnull == 0 && pkpos == 0,
                    has_default: dflt.is_some() || (pkpos > 0 && notnull == 0),
                    name,
                });
            }
            if columns.is_empty() {
                return Ok(None);
            }
            pk.sort();
            let pk: Vec<String> = pk.into_iter().map(|(_, n)| n).collect();
            let mut unique_keys = vec![pk.clone()];
            let pk: Vec<String> = pk;
            let mut idx = c.prepare("SELECT name, \"unique\" FROM pragma_index_list(?1)")?;
            let names: Vec<(String, bool)> = idx
                .query_map([&table], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let mut indexes = Vec::new();
            for (n, unique) in names {
                let mut cols =
                    c.prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?;
                let key: Vec<String> = cols
                    .query_map([&n], |r| r.get::<_, Option<String>>(0))?
                    .filter_map(|r| r.transpose())
                    .collect::<Result<_, _>>()?;
                if unique {
                    unique_keys.push(key.clone());
                }
                indexes.push(Index {
                    name: n,
                    columns: key,
                    unique,
                });
            }
            unique_keys.retain(|k| !k.is_empty());
            // A foreign key that names no columns refers to the parent's primary key.
            let mut fk = c.prepare(
                "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
            )?;
            let rows: Vec<(i64, String, String, Option<String>)> = fk
                .query_map([&table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            let mut foreign_keys: Vec<(i64, ForeignKey)> = Vec::new();
            for (id, parent, from, to) in rows {
                match foreign_keys.last_mut() {
                    Some((i, f)) if *i == id => {
                        f.columns.push(from);
                        f.references.extend(to);
                    }
                    _ => foreign_keys.push((
                        id,
                        ForeignKey {
                            columns: vec![from],
                            table: parent,
                            references: to.into_iter().collect(),
                        },
                    )),
                }
            }
            let mut parent_pk = c.prepare(
                "SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk",
            )?;
            let mut out = Vec::new();
            for (_, mut f) in foreign_keys {
                if f.references.is_empty() {
                    f.references = parent_pk
                        .query_map([&f.table], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                }
                out.push(f);
            }
            let create: Option<String> = c
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
                    [&table],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            Ok(Some(TableInfo {
                columns,
                unique_keys,
                primary_key: pk,
                checks: create.as_deref().map(check_clauses).unwrap_or_default(),
                foreign_keys: out,
                indexes,
            }))
        })
        .await
    }

    async fn fence(&mut self, unit: &str, token: i64) -> Result<bool, StoreError> {
        let unit = unit.to_string();
        self.with(move |c| {
            let n = c.execute(
                "INSERT INTO _strangler_fence (unit, token) VALUES (?1, ?2) \
                 ON CONFLICT (unit) DO UPDATE SET token = excluded.token WHERE token <= excluded.token",
                rusqlite::params![unit, token],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn applied(&mut self, source: &str, seqs: &[i64]) -> Result<HashSet<i64>, StoreError> {
        let (source, seqs) = (source.to_string(), seqs.to_vec());
        let seqs = Value::from(seqs).to_string();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq FROM _strangler_applied WHERE src = ?1 AND seq IN (SELECT value FROM json_each(?2))",
            )?;
            let out = stmt
                .query_map(rusqlite::params![source, seqs], |r| r.get(0))?
                .collect::<Result<HashSet<i64>, _>>()?;
            Ok(out)
        })
        .await
    }

    async fn begin(&mut self) -> Result<(), StoreError> {
        self.with(|c| Ok(c.execute_batch("BEGIN IMMEDIATE")?)).await
    }

    async fn hold(&mut self) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE already holds the database's single write lock.
        Ok(())
    }

    async fn save_progress(&mut self, entity: &str, progress: &str) -> Result<(), StoreError> {
        self.store_progress(entity, progress).await
    }

    async fn lock_keys(&mut self, _table: &str, _keys: &[Row]) -> Result<(), StoreError> {
        // BEGIN IMMEDIATE already holds the database's single write lock.
        Ok(())
    }

    async fn write_batch(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError> {
        let batch = batch.expanded().into_owned();
        self.with(move |c| prepare(c, &batch)).await
    }

    async fn finish(&mut self, commit: bool) -> Result<(), StoreError> {
        self.with(move |c| {
            if commit {
                c.execute("UPDATE _strangler_guard SET applying = 0", [])?;
                c.execute_batch("COMMIT")?;
            } else if !c.is_autocommit() {
                c.execute_batch("ROLLBACK")?;
            }
            Ok(())
        })
        .await
    }
}

/// One `"name":value` member of a row image, as SQL text the trigger evaluates. The image is
/// built as text instead of with `json_object()`, which refuses BLOBs (failing the
/// application's write) and keeps only 15 significant digits of a REAL on SQLite 3.40, the
/// library of Debian 12 and Python 3.11, in which the *writer's* trigger runs. Integers go as
/// their text; REALs as 18 significant digits (`%!.18g`: every finite double tried comes back
/// bit-identical, where 17 digits of SQLite's own printf were off by one unit in the last
/// place near the largest double), infinities as a string; TEXT through `json_quote`; BLOBs
/// as `\x` and hex, the text form of PostgreSQL's bytea. A REAL's -0.0 arrives as 0.0: no
/// SQL function of SQLite tells the sign of a zero.
fn image_member(row: &str, column: &str, json: bool) -> String {
    let key = serde_json::to_string(column).unwrap_or_default();
    let c = format!("{row}.{}", dq(column));
    // A column declared JSON holds its document as text: a valid one travels as the document
    // (json() keeps every number's digits), anything else as a string.
    let text = if json {
        format!("CASE WHEN json_valid({c}) THEN json({c}) ELSE json_quote({c}) END")
    } else {
        format!("json_quote({c})")
    };
    format!(
        "'{key}:' || CASE typeof({c}) \
         WHEN 'null' THEN 'null' \
         WHEN 'integer' THEN CAST({c} AS TEXT) \
         WHEN 'real' THEN CASE WHEN abs({c}) <= 1.7976931348623157e308 \
              THEN printf('%!.18g', {c}) ELSE json_quote(printf('%!.18g', {c})) END \
         WHEN 'text' THEN {text} \
         ELSE '\"\\\\x' || hex({c}) || '\"' END",
        key = key.replace('\'', "''")
    )
}

fn sql(v: &Value) -> Sql {
    match v {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Sql::Integer(i),
            None => Sql::Real(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => Sql::Text(s.clone()),
        other => Sql::Text(other.to_string()),
    }
}

fn write(tx: &Connection, w: &Write) -> Result<(), StoreError> {
    match w {
        Write::Upsert {
            table,
            key,
            row,
            insert_only,
            bytes,
        } => {
            let cols: Vec<&String> = row.keys().chain(insert_only.keys()).collect();
            let names: Vec<String> = cols.iter().map(|c| dq(c)).collect();
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            let updates: Vec<String> = row
                .keys()
                .filter(|c| !key.contains(c))
                .map(|c| format!("{0} = excluded.{0}", dq(c)))
                .collect();
            let conflict = key.iter().map(|k| dq(k)).collect::<Vec<_>>().join(", ");
            let action = if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            let stmt = format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({conflict}) DO {action}",
                dq(table),
                names.join(", "),
                marks.join(", ")
            );
            let values: Vec<Sql> = row
                .iter()
                .chain(insert_only)
                .map(
                    |(c, v)| match bytes.contains(c).then(|| hex_bytes(v)).flatten() {
                        Some(b) => Sql::Blob(b),
                        None => sql(v),
                    },
                )
                .collect();
            tx.prepare_cached(&stmt)?
                .execute(params_from_iter(values))?;
        }
        Write::Delete { table, key } => {
            let cond: Vec<String> = key
                .keys()
                .enumerate()
                .map(|(i, k)| format!("{} = ?{}", dq(k), i + 1))
                .collect();
            let stmt = format!("DELETE FROM {} WHERE {}", dq(table), cond.join(" AND "));
            let values: Vec<Sql> = key.values().map(sql).collect();
            tx.prepare_cached(&stmt)?
                .execute(params_from_iter(values))?;
        }
    }
    Ok(())
}

/// Everything of an apply inside the open transaction; `Ok(false)` on a race.
fn prepare(tx: &Connection, batch: &ApplyBatch) -> Result<bool, StoreError> {
    tx.execute("UPDATE _strangler_guard SET applying = 1", [])?;
    for w in &batch.writes {
        write(tx, w)?;
    }
    let mut ins =
        tx.prepare_cached("INSERT OR IGNORE INTO _strangler_applied (src, seq) VALUES (?1, ?2)")?;
    for s in &batch.applied {
        ins.execute(rusqlite::params![batch.source, s])?;
    }
    if let Some(below) = batch.prune_below {
        tx.execute(
            "DELETE FROM _strangler_applied WHERE src = ?1 AND seq < ?2",
            rusqlite::params![batch.source, below],
        )?;
    }
    let mut unapply =
        tx.prepare_cached("DELETE FROM _strangler_applied WHERE src = ?1 AND seq = ?2")?;
    for s in &batch.unapply {
        unapply.execute(rusqlite::params![batch.source, s])?;
    }
    let mut del = tx.prepare_cached("DELETE FROM _strangler_changes WHERE seq = ?1")?;
    for s in &batch.consumed {
        del.execute([s])?;
    }
    // No race check: the engine's transaction began with BEGIN IMMEDIATE and then fetched
    // every change committed since its read; no other writer has committed since.
    Ok(true)
}

fn change_row(r: &rusqlite::Row) -> rusqlite::Result<ChangeRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}
/// The conditions of the `CHECK (...)` clauses of a `CREATE TABLE` statement.
fn check_clauses(sql: &str) -> Vec<String> {
    let upper = sql.to_ascii_uppercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = upper[from..].find("CHECK") {
        let start = from + at + 5;
        from = start;
        let before = upper[..start - 5].chars().last().unwrap_or(' ');
        if before.is_ascii_alphanumeric() || before == '_' {
            continue;
        }
        let rest = &sql[start..];
        let Some(open) = rest.find(|c: char| !c.is_whitespace()) else {
            break;
        };
        if !rest[open..].starts_with('(') {
            continue;
        }
        let (mut depth, mut quote) = (0i32, None::<char>);
        for (i, ch) in rest[open..].char_indices() {
            match (quote, ch) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"' | '`') => quote = Some(ch),
                (None, '(') => depth += 1,
                (None, ')') => {
                    depth -= 1;
                    if depth == 0 {
                        out.push(rest[open..open + i + 1].to_string());
                        from = start + open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}
