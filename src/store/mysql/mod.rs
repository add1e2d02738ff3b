//! MariaDB / MySQL side: three triggers per table write `JSON_OBJECT` images; the engine's
//! session sets `@strangler_applying`, which the triggers read to stay silent. The source
//! transaction id comes from the binary log's GTIDs where MariaDB has them on (see
//! `MyStore::tx_expression`).

mod capture;
mod statement;

use std::collections::HashSet;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Params, Value as My};
use serde_json::Value;

use super::sql::{ChangeRow, bq, changes, hex_bytes, lit_backslash, raced, same_run};
use super::{
    ApplyBatch, Backend, Capture, CaptureSpec, Catalog, Change, Column, ForeignKey, Form, Index,
    Row, StoreError, TableInfo, Write, family,
};
use crate::family::TypeFamily;

/// A MariaDB / MySQL database.
pub struct MyStore {
    conn: Conn,
}

const SCHEMA: [&str; 5] = [
    "CREATE TABLE IF NOT EXISTS _strangler_changes (
        seq BIGINT AUTO_INCREMENT PRIMARY KEY,
        tbl VARCHAR(64) NOT NULL, op CHAR(1) NOT NULL, old LONGTEXT, new LONGTEXT, tx VARCHAR(40),
        ts BIGINT NOT NULL, pk VARCHAR(512) NOT NULL,
        KEY _strangler_changes_key (tbl, pk)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS _strangler_applied (src VARCHAR(64) NOT NULL, seq BIGINT NOT NULL,
        PRIMARY KEY (src, seq)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS _strangler_fence (unit VARCHAR(200) PRIMARY KEY, token BIGINT NOT NULL)
        ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS _strangler_backfill (entity VARCHAR(200) PRIMARY KEY, progress LONGTEXT NOT NULL)
        ENGINE=InnoDB",
    "INSERT IGNORE INTO _strangler_fence (unit, token) VALUES ('strangler:gate', 0)",
];

/// The `_strangler_fence` row that is the side's gate: engine transactions lock it shared, a
/// backfill's alone. Locking a row never writes it.
const GATE: &str = "strangler:gate";

/// Most placeholders put in one statement.
const MAX_PARAMS: usize = 30_000;

fn my(v: &Value) -> My {
    match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => My::Int(i),
            // Other numbers as their text, as captured: MariaDB reads it into a DECIMAL
            // exactly and into a DOUBLE correctly rounded.
            None => match n.as_u64() {
                Some(u) => My::UInt(u),
                None => My::Bytes(n.to_string().into_bytes()),
            },
        },
        Value::String(s) => My::Bytes(s.as_bytes().to_vec()),
        other => My::Bytes(other.to_string().into_bytes()),
    }
}

impl MyStore {
    /// What the triggers record as the source transaction id. MariaDB with the binary log on:
    /// the session (a random id drawn on its first capture) and the GTID of the session's last
    /// committed transaction, which changes at every commit, implicit ones included. Without
    /// the binary log, and on MySQL, a trigger has no reliable name for its transaction
    /// (`information_schema.innodb_trx` is a snapshot refreshed at most every 100 ms, so it
    /// answers with nothing or with an earlier transaction's id), and changes carry none.
    async fn tx_expression(&mut self) -> Result<&'static str, StoreError> {
        let (version, binlog): (String, i64) = self
            .conn
            .query_first("SELECT VERSION(), @@log_bin")
            .await?
            .unwrap_or_default();
        Ok(if version.contains("MariaDB") && binlog == 1 {
            "CONCAT(@strangler_session, '/', @@last_gtid)"
        } else {
            "NULL"
        })
    }

    /// Connects (3 s timeout); the session reads committed data, marks its writes as the engine's
    /// and takes zone-less date-times as UTC.
    pub async fn connect(url: &str) -> Result<MyStore, StoreError> {
        let opts = Opts::from_url(url)?;
        let mut conn = tokio::time::timeout(std::time::Duration::from_secs(3), Conn::new(opts))
            .await
            .map_err(|_| StoreError::Value("mysql: connect timed out after 3s".into()))??;
        conn.query_drop(
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; SET @strangler_applying = 1; \
             SET time_zone = '+00:00'",
        )
        .await?;
        Ok(MyStore { conn })
    }

    async fn prepare_in_tx(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError> {
        let tx = &mut self.conn;
        let mut i = 0;
        while i < batch.writes.len() {
            let first = &batch.writes[i];
            let width = match first {
                Write::Upsert {
                    row, insert_only, ..
                } => row.len() + insert_only.len(),
                Write::Delete { key, .. } => key.len(),
            }
            .max(1);
            let mut j = i + 1;
            while j < batch.writes.len()
                && same_run(first, &batch.writes[j])
                && (j - i + 1) * width <= MAX_PARAMS
            {
                j += 1;
            }
            let (sql, params) = statement(&batch.writes[i..j]);
            tx.exec_drop(sql, Params::Positional(params)).await?;
            i = j;
        }
        for chunk in batch.applied.chunks(MAX_PARAMS / 2) {
            let marks = vec!["(?, ?)"; chunk.len()].join(",");
            let params: Vec<My> = chunk
                .iter()
                .flat_map(|s| [My::from(batch.source.as_str()), My::Int(*s)])
                .collect();
            tx.exec_drop(
                format!("INSERT IGNORE INTO _strangler_applied (src, seq) VALUES {marks}"),
                Params::Positional(params),
            )
            .await?;
        }
        if let Some(below) = batch.prune_below {
            tx.exec_drop(
                "DELETE FROM _strangler_applied WHERE src = ? AND seq < ?",
                (batch.source.as_str(), below),
            )
            .await?;
        }
        for chunk in batch.unapply.chunks(MAX_PARAMS - 1) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut params = vec![My::from(batch.source.as_str())];
            params.extend(chunk.iter().map(|s| My::Int(*s)));
            tx.exec_drop(
                format!("DELETE FROM _strangler_applied WHERE src = ? AND seq IN ({marks})"),
                Params::Positional(params),
            )
            .await?;
        }
        for chunk in batch.consumed.chunks(MAX_PARAMS) {
            let marks = vec!["?"; chunk.len()].join(",");
            tx.exec_drop(
                format!("DELETE FROM _strangler_changes WHERE seq IN ({marks})"),
                Params::Positional(chunk.iter().map(|s| My::Int(*s)).collect()),
            )
            .await?;
        }
        let written: Vec<(String, String)> = batch.written_keys().into_iter().collect();
        let set: HashSet<(String, String)> = written.iter().cloned().collect();
        for chunk in written.chunks(MAX_PARAMS / 2) {
            let marks = vec!["(?, ?)"; chunk.len()].join(",");
            let params: Vec<My> = chunk
                .iter()
                .flat_map(|(t, p)| [My::from(t.as_str()), My::from(p.as_str())])
                .collect();
            let found: Vec<(i64, String, String)> = tx
                .exec(
                    format!(
                        "SELECT seq, tbl, pk FROM _strangler_changes WHERE (tbl, pk) IN ({marks})"
                    ),
                    Params::Positional(params),
                )
                .await?;
            if raced(&set, found, &batch.seen) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[async_trait::async_trait]
impl Backend for MyStore {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    async fn catalog(&mut self) -> Result<Catalog, StoreError> {
        let names: Vec<String> = self
            .conn
            .query(
                "SELECT table_name FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' \
                   AND table_name NOT LIKE '\\\\_strangler\\\\_%' ORDER BY table_name",
            )
            .await?;
        super::backend::describe_each(self, names).await
    }

    async fn table_info(&mut self, table: &str) -> Result<Option<TableInfo>, StoreError> {
        let rows: Vec<(String, String, String, Option<String>, String)> = self
            .conn
            .exec(
                "SELECT column_name, column_type, is_nullable, column_default, extra \
                 FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? \
                 ORDER BY ordinal_position",
                (table,),
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        // MariaDB's JSON is a LONGTEXT checked by json_valid(); JSON_OBJECT embeds it as JSON.
        let json: Vec<String> = self
            .conn
            .exec(
                "SELECT c.column_name FROM information_schema.columns c \
                 JOIN information_schema.check_constraints k \
                   ON k.constraint_schema = c.table_schema AND k.table_name = c.table_name \
                 WHERE c.table_schema = DATABASE() AND c.table_name = ? \
                   AND k.check_clause = CONCAT('json_valid(`', c.column_name, '`)')",
                (table,),
            )
            .await
            .unwrap_or_default();
        let columns = rows
            .into_iter()
            .map(|(name, declared, nullable, dflt, extra)| Column {
                family: if declared.starts_with("tinyint(1)") {
                    TypeFamily::Boolean
                } else if json.contains(&name) {
                    TypeFamily::Json
                } else {
                    family(&declared)
                },
                form: if json.contains(&name) {
                    Form::JsonText
                } else if declared.starts_with("datetime") || declared.starts_with("timestamp") {
                    Form::UtcNaive
                } else {
                    Form::Plain
                },
                nullable: nullable == "YES",
                has_default: dflt.is_some_and(|d| d != "NULL")
                    || extra.contains("auto_increment")
                    || extra.contains("GENERATED"),
                declared,
                name,
            })
            .collect();
        let keys: Vec<(String, i64, String)> = self
            .conn
            .exec(
                "SELECT index_name, non_unique, column_name FROM information_schema.statistics \
                 WHERE table_schema = DATABASE() AND table_name = ? \
                 ORDER BY index_name, seq_in_index",
                (table,),
            )
            .await?;
        let mut indexes: Vec<Index> = Vec::new();
        for (name, non_unique, col) in keys {
            match indexes.last_mut() {
                Some(i) if i.name == name => i.columns.push(col),
                _ => indexes.push(Index {
                    name,
                    columns: vec![col],
                    unique: non_unique == 0,
                }),
            }
        }
        let refs: Vec<(String, String, String, String)> = self
            .conn
            .exec(
                "SELECT constraint_name, column_name, referenced_table_name, referenced_column_name \
                 FROM information_schema.key_column_usage \
                 WHERE table_schema = DATABASE() AND table_name = ? \
                   AND referenced_table_name IS NOT NULL \
                 ORDER BY constraint_name, ordinal_position",
                (table,),
            )
            .await?;
        let mut foreign_keys: Vec<(String, ForeignKey)> = Vec::new();
        for (name, col, parent, to) in refs {
            match foreign_keys.last_mut() {
                Some((n, f)) if *n == name => {
                    f.columns.push(col);
                    f.references.push(to);
                }
                _ => foreign_keys.push((
                    name,
                    ForeignKey {
                        columns: vec![col],
                        table: parent,
                        references: vec![to],
                    },
                )),
            }
        }
        let checks: Vec<String> = self
            .conn
            .exec(
                "SELECT check_clause FROM information_schema.check_constraints \
                 WHERE constraint_schema = DATABASE() AND table_name = ? ORDER BY constraint_name",
                (table,),
            )
            .await
            .unwrap_or_default();
        Ok(Some(TableInfo {
            columns,
            checks,
            primary_key: indexes
                .iter()
                .find(|i| i.name == "PRIMARY")
                .map(|i| i.columns.clone())
                .unwrap_or_default(),
            unique_keys: indexes
                .iter()
                .filter(|i| i.unique)
                .map(|i| i.columns.clone())
                .collect(),
            foreign_keys: foreign_keys.into_iter().map(|(_, f)| f).collect(),
            indexes,
        }))
    }

    async fn fence(&mut self, unit: &str, token: i64) -> Result<bool, StoreError> {
        self.conn
            .exec_drop(
                "INSERT INTO _strangler_fence (unit, token) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE token = GREATEST(token, VALUES(token))",
                (unit, token),
            )
            .await?;
        let now: Option<i64> = self
            .conn
            .exec_first("SELECT token FROM _strangler_fence WHERE unit = ?", (unit,))
            .await?;
        Ok(now == Some(token))
    }

    async fn applied(&mut self, source: &str, seqs: &[i64]) -> Result<HashSet<i64>, StoreError> {
        let mut out = HashSet::new();
        for chunk in seqs.chunks(MAX_PARAMS) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut params = vec![My::from(source)];
            params.extend(chunk.iter().map(|s| My::Int(*s)));
            let rows: Vec<i64> = self
                .conn
                .exec(
                    format!(
                        "SELECT seq FROM _strangler_applied WHERE src = ? AND seq IN ({marks})"
                    ),
                    Params::Positional(params),
                )
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    async fn begin(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_drop(format!(
                "START TRANSACTION; SELECT token FROM _strangler_fence WHERE unit = '{GATE}' LOCK IN SHARE MODE"
            ))
            .await?;
        Ok(())
    }

    async fn hold(&mut self) -> Result<(), StoreError> {
        let gate: Option<i64> = self
            .conn
            .query_first(format!(
                "SELECT token FROM _strangler_fence WHERE unit = '{GATE}' FOR UPDATE"
            ))
            .await?;
        match gate {
            Some(_) => Ok(()),
            None => Err(StoreError::Value(
                "mysql: the engine's gate row is missing (installed by an older version): run `strangler sync install` again".into(),
            )),
        }
    }

    async fn save_progress(&mut self, entity: &str, progress: &str) -> Result<(), StoreError> {
        self.store_progress(entity, progress).await
    }

    async fn lock_keys(&mut self, table: &str, keys: &[Row]) -> Result<(), StoreError> {
        let cols: Vec<String> = keys[0].keys().map(|c| bq(c)).collect();
        let one = format!("({})", vec!["?"; cols.len()].join(","));
        for chunk in keys.chunks(MAX_PARAMS / cols.len().max(1)) {
            let params: Vec<My> = chunk.iter().flat_map(|k| k.values().map(my)).collect();
            self.conn
                .exec_drop(
                    format!(
                        "SELECT 1 FROM {} WHERE ({}) IN ({}) FOR UPDATE",
                        bq(table),
                        cols.join(", "),
                        vec![one.clone(); chunk.len()].join(",")
                    ),
                    Params::Positional(params),
                )
                .await?;
        }
        Ok(())
    }

    async fn write_batch(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError> {
        self.prepare_in_tx(&batch.expanded()).await
    }

    async fn finish(&mut self, commit: bool) -> Result<(), StoreError> {
        self.conn
            .query_drop(if commit { "COMMIT" } else { "ROLLBACK" })
            .await?;
        Ok(())
    }
}

fn statement(run: &[Write]) -> (String, Vec<My>) {
    let mut params = Vec::new();
    match &run[0] {
        Write::Upsert {
            table,
            key,
            row,
            insert_only,
            ..
        } => {
            let cols: Vec<String> = row
                .keys()
                .chain(insert_only.keys())
                .map(|c| bq(c))
                .collect();
            let one = format!("({})", vec!["?"; cols.len()].join(","));
            for w in run {
                if let Write::Upsert {
                    row,
                    insert_only,
                    bytes,
                    ..
                } = w
                {
                    params.extend(row.iter().chain(insert_only).map(|(c, v)| {
                        match bytes.contains(c).then(|| hex_bytes(v)).flatten() {
                            Some(b) => My::Bytes(b),
                            None => my(v),
                        }
                    }));
                }
            }
            let mut updates: Vec<String> = row
                .keys()
                .filter(|c| !key.contains(c))
                .map(|c| format!("{0} = VALUES({0})", bq(c)))
                .collect();
            if updates.is_empty() {
                updates.push(format!("{0} = {0}", bq(&key[0])));
            }
            (
                format!(
                    "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
                    bq(table),
                    cols.join(", "),
                    vec![one; run.len()].join(","),
                    updates.join(", ")
                ),
                params,
            )
        }
        Write::Delete { table, key } => {
            let cols: Vec<String> = key.keys().map(|c| bq(c)).collect();
            let one = format!("({})", vec!["?"; cols.len()].join(","));
            for w in run {
                if let Write::Delete { key, .. } = w {
                    params.extend(key.values().map(my));
                }
            }
            (
                format!(
                    "DELETE FROM {} WHERE ({}) IN ({})",
                    bq(table),
                    cols.join(", "),
                    vec![one; run.len()].join(",")
                ),
                params,
            )
        }
    }
}
