//! PostgreSQL side: one generic trigger function capturing `to_jsonb` images; the engine's
//! own transactions set `strangler.applying` locally, which the trigger reads to stay silent.
//! Each capture also sends `NOTIFY strangler_changes` so an engine can wake at once.

mod bulk;
mod capture;
mod schema;
mod statement;

use std::collections::HashSet;

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage, Statement};

use super::sql::{decoded, dq, lit, raced, same_run};
use super::{
    ApplyBatch, Backend, Capture, CaptureSpec, Catalog, Change, Column, ForeignKey, Form, Index,
    Row, StoreError, TableInfo, Write, family,
};

/// A PostgreSQL database.
pub struct PgStore {
    client: Client,
    driver: tokio::task::JoinHandle<()>,
    notify: std::sync::Arc<tokio::sync::Notify>,
    /// Prepared statements by SQL text: a statement given as text costs a second round trip.
    statements: std::collections::HashMap<String, Statement>,
    /// Each written table's row type, schema-qualified: `NULL::money` alone would name the
    /// built-in type, not a table called `money`.
    row_types: std::collections::HashMap<String, String>,
    /// Each bulk-written table's JSON-typed columns.
    json_columns: std::collections::HashMap<String, HashSet<String>>,
    /// Changelog rows the open transaction deletes.
    deleting: usize,
    /// Changelog rows deleted since the last vacuum, and when that was.
    deleted: usize,
    vacuumed: std::time::Instant,
}

/// Deleted changelog rows after which the engine vacuums the changelog itself (at most once a
/// second): autovacuum wakes once a minute by default, and until then every read of the
/// changelog wades through the dead rows of a busy minute.
const VACUUM_AFTER: usize = 10_000;

impl Drop for PgStore {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl PgStore {
    /// Connects (3 s timeout) and listens for capture notifications.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let mut cfg: tokio_postgres::Config = url.parse()?;
        cfg.connect_timeout(std::time::Duration::from_secs(3));
        let (client, mut conn) = cfg.connect(NoTls).await?;
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let n = notify.clone();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => n.notify_one(),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        n.notify_one();
                        break;
                    }
                }
            }
        });
        // Literals in the engine's batched statements double quotes and nothing else. Prepared
        // statements are planned for each execution's values: a generic plan made while a table
        // was small (a sequential scan) would otherwise stay cached as it grows.
        client
            .batch_execute(
                "SET standard_conforming_strings = on; SET plan_cache_mode = force_custom_plan; \
                 SET TIME ZONE 'UTC'; LISTEN strangler_changes",
            )
            .await?;
        Ok(PgStore {
            client,
            driver,
            notify,
            statements: std::collections::HashMap::new(),
            row_types: std::collections::HashMap::new(),
            json_columns: std::collections::HashMap::new(),
            deleting: 0,
            deleted: 0,
            vacuumed: std::time::Instant::now(),
        })
    }

    /// The prepared statement for `sql`, prepared once per connection.
    async fn prepared(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql).await?;
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let st = self.prepared(sql).await?;
        Ok(self.client.query(&st, params).await?)
    }

    async fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let st = self.prepared(sql).await?;
        Ok(self.client.execute(&st, params).await?)
    }

    fn changes(rows: Vec<tokio_postgres::Row>) -> Result<Vec<Change>, StoreError> {
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(decoded((
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
            )));
        }
        Ok(out)
    }

    /// `table`'s row type, schema-qualified as the search path resolves the table.
    async fn row_type(&mut self, table: &str) -> Result<String, StoreError> {
        if let Some(t) = self.row_types.get(table) {
            return Ok(t.clone());
        }
        let found = self
            .client
            .query_opt(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = to_regclass($1)",
                &[&dq(table)],
            )
            .await?
            .map(|r| r.get::<_, String>(0));
        let name = found.unwrap_or_else(|| dq(table));
        self.row_types.insert(table.to_string(), name.clone());
        Ok(name)
    }

    /// The whole batch goes to the server as one multi-statement simple query, values inlined
    /// as literals: one round trip, where a statement per step (each prepared, then run) took
    /// a dozen. The server runs the statements in order and stops at the first error.
    async fn prepare_in_tx(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError> {
        let expanded;
        let batch = match &batch.absent {
            // Alone in the batch, many absent rows go as COPY (they come after the writes).
            Some(a)
                if batch.writes.is_empty()
                    && a.rows.len() >= bulk::BULK_MIN
                    && self.copy_absent(a).await? =>
            {
                batch
            }
            Some(_) => {
                expanded = batch.expanded();
                &*expanded
            }
            None => batch,
        };
        for w in &batch.writes {
            self.row_type(w.table()).await?;
        }
        let mut sql = String::new();
        let mut i = 0;
        while i < batch.writes.len() {
            // Consecutive writes of the same kind to the same table go in one statement.
            let first = &batch.writes[i];
            let mut j = i + 1;
            while j < batch.writes.len() && same_run(first, &batch.writes[j]) {
                j += 1;
            }
            let run = &batch.writes[i..j];
            let rows: Vec<Value> = run
                .iter()
                .map(|w| match w {
                    Write::Upsert {
                        row, insert_only, ..
                    } => {
                        let mut m = row.clone();
                        m.extend(insert_only.iter().map(|(k, v)| (k.clone(), v.clone())));
                        Value::Object(m)
                    }
                    Write::Delete { key, .. } => Value::Object(key.clone()),
                })
                .collect();
            let json = format!("{}::jsonb", lit(&Value::Array(rows).to_string()));
            let row_type = self
                .row_types
                .get(first.table())
                .cloned()
                .unwrap_or_else(|| dq(first.table()));
            sql.push_str(&statement(first, &json, &row_type));
            sql.push_str(";\n");
            i = j;
        }
        let src = lit(&batch.source);
        // The checkpoint is one row per batch: the source sequence numbers it covers.
        if let Some(hi) = batch.applied.iter().max() {
            sql.push_str(&format!(
                "INSERT INTO _strangler_checkpoint (src, hi, seqs) VALUES ({src}, {hi}, {});\n",
                int_array(&batch.applied)
            ));
        }
        if let Some(below) = batch.prune_below {
            sql.push_str(&format!(
                "DELETE FROM _strangler_checkpoint WHERE src = {src} AND hi < {below};\n"
            ));
        }
        if !batch.unapply.is_empty() {
            let gone = int_array(&batch.unapply);
            sql.push_str(&format!(
                "UPDATE _strangler_checkpoint SET seqs = ARRAY(SELECT s FROM unnest(seqs) s WHERE s <> ALL({gone})) \
                 WHERE src = {src} AND seqs && {gone};\n\
                 DELETE FROM _strangler_checkpoint WHERE src = {src} AND cardinality(seqs) = 0;\n"
            ));
        }
        if !batch.consumed.is_empty() {
            sql.push_str(&format!(
                "DELETE FROM _strangler_changes WHERE seq = ANY({});\n",
                int_array(&batch.consumed)
            ));
        }
        // Last: changes on the written keys this round did not see (a race).
        let written = batch.written_keys();
        if !written.is_empty() {
            let tables: HashSet<&str> = written.iter().map(|(t, _)| t.as_str()).collect();
            // One array literal each, and the keys as a set the changelog's rows are looked up
            // in: a copy's 5,000 keys as `ARRAY[…]` of literals took the server 4–6 ms to parse
            // and plan, as this 0.7 ms.
            sql.push_str(&format!(
                "SELECT seq, tbl, pk FROM _strangler_changes c WHERE tbl = ANY({}) \
                 AND EXISTS (SELECT 1 FROM unnest({}) w(pk) WHERE w.pk = c.pk)",
                text_array(tables.into_iter()),
                text_array(written.iter().map(|(_, p)| p.as_str()))
            ));
        }
        if sql.is_empty() {
            return Ok(true);
        }
        let mut found = Vec::new();
        for m in self.client.simple_query(&sql).await? {
            if let SimpleQueryMessage::Row(r) = m {
                let seq = r
                    .get(0)
                    .and_then(|v| v.parse::<i64>().ok())
                    .ok_or_else(|| {
                        StoreError::Value(format!("race check: bad sequence number {:?}", r.get(0)))
                    })?;
                found.push((
                    seq,
                    r.get(1).unwrap_or_default().to_string(),
                    r.get(2).unwrap_or_default().to_string(),
                ));
            }
        }
        Ok(!raced(&written, found, &batch.seen))
    }
}

#[async_trait::async_trait]
impl Backend for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn table_info(&mut self, table: &str) -> Result<Option<TableInfo>, StoreError> {
        self.describe(table).await
    }

    async fn catalog(&mut self) -> Result<Catalog, StoreError> {
        self.describe_all().await
    }

    async fn fence(&mut self, unit: &str, token: i64) -> Result<bool, StoreError> {
        let rows = self
            .query(
                "INSERT INTO _strangler_fence (unit, token) VALUES ($1, $2) \
                 ON CONFLICT (unit) DO UPDATE SET token = EXCLUDED.token \
                 WHERE _strangler_fence.token <= EXCLUDED.token RETURNING 1",
                &[&unit, &token],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    async fn applied(&mut self, source: &str, seqs: &[i64]) -> Result<HashSet<i64>, StoreError> {
        let rows = self
            .query(
                "SELECT s FROM _strangler_checkpoint c, unnest(c.seqs) s \
                 WHERE c.src = $1 AND c.seqs && $2 AND s = ANY($2)",
                &[&source, &seqs],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn begin(&mut self) -> Result<(), StoreError> {
        self.client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL strangler.applying = 'on'; SELECT pg_advisory_xact_lock_shared({GATE})"
            ))
            .await?;
        Ok(())
    }

    async fn hold(&mut self) -> Result<(), StoreError> {
        self.client
            .batch_execute(&format!("SELECT pg_advisory_xact_lock({GATE})"))
            .await?;
        Ok(())
    }

    async fn save_progress(&mut self, entity: &str, progress: &str) -> Result<(), StoreError> {
        self.client
            .execute(
                "INSERT INTO _strangler_backfill (entity, progress) VALUES ($1, $2) \
                 ON CONFLICT (entity) DO UPDATE SET progress = excluded.progress",
                &[&entity, &progress],
            )
            .await?;
        Ok(())
    }

    async fn lock_keys(&mut self, table: &str, keys: &[Row]) -> Result<(), StoreError> {
        let cols: Vec<String> = keys[0].keys().cloned().collect();
        let row_type = self.row_type(table).await?;
        let json = Value::Array(keys.iter().cloned().map(Value::Object).collect()).to_string();
        self.execute(
            &format!(
                "SELECT 1 FROM {t} WHERE {m} ORDER BY {k} FOR UPDATE",
                t = dq(table),
                m = key_match(&row_type, &cols, "$1::text::jsonb"),
                k = cols.iter().map(|c| dq(c)).collect::<Vec<_>>().join(", ")
            ),
            &[&json],
        )
        .await?;
        Ok(())
    }

    async fn write_batch(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError> {
        self.deleting += batch.consumed.len();
        self.prepare_in_tx(batch).await
    }

    async fn finish(&mut self, commit: bool) -> Result<(), StoreError> {
        let deleting = std::mem::take(&mut self.deleting);
        self.client
            .batch_execute(if commit { "COMMIT" } else { "ROLLBACK" })
            .await?;
        if commit {
            self.deleted += deleting;
        }
        if self.deleted >= VACUUM_AFTER
            && self.vacuumed.elapsed() >= std::time::Duration::from_secs(1)
        {
            self.deleted = 0;
            self.vacuumed = std::time::Instant::now();
            if let Err(e) = self
                .client
                .batch_execute("VACUUM _strangler_changes, _strangler_checkpoint")
                .await
            {
                tracing::warn!(error = %e, "could not vacuum the changelog; autovacuum will");
            }
        }
        Ok(())
    }
}

/// The transaction-level advisory lock that is the side's gate: engine transactions take it
/// shared, a backfill's alone. No row is written to take it.
const GATE: i64 = 7_305_613;

/// The statement applying a run of writes like `w`, their rows read from the JSON array `rows`.
fn statement(w: &Write, rows: &str, row_type: &str) -> String {
    match w {
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
                .map(|c| dq(c))
                .collect();
            let updates: Vec<String> = row
                .keys()
                .filter(|c| !key.contains(c))
                .map(|c| format!("{0} = EXCLUDED.{0}", dq(c)))
                .collect();
            let action = if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {}", updates.join(", "))
            };
            format!(
                "INSERT INTO {t} ({c}) SELECT {c} FROM jsonb_populate_recordset(NULL::{row_type}, {rows}) \
                 ON CONFLICT ({k}) DO {action}",
                t = dq(table),
                c = cols.join(", "),
                k = key.iter().map(|k| dq(k)).collect::<Vec<_>>().join(", ")
            )
        }
        Write::Delete { table, key } => {
            let cols: Vec<String> = key.keys().cloned().collect();
            format!(
                "DELETE FROM {t} WHERE {m}",
                t = dq(table),
                m = key_match(row_type, &cols, rows)
            )
        }
    }
}

/// The condition "the row's key is one of the keys in `json`" (a JSON array of key objects).
/// Each key column is matched with `= ANY(array)`, which the planner always serves from the
/// key's index; a plain `IN (SELECT … FROM jsonb_populate_recordset(…))` is estimated at 100
/// rows and hash-joined against a scan of the whole table.
fn key_match(row_type: &str, cols: &[String], json: &str) -> String {
    let rows = format!("jsonb_populate_recordset(NULL::{row_type}, {json})");
    let mut parts: Vec<String> = cols
        .iter()
        .map(|c| format!("{0} = ANY(ARRAY(SELECT {0} FROM {rows}))", dq(c)))
        .collect();
    if cols.len() > 1 {
        let k = cols.iter().map(|c| dq(c)).collect::<Vec<_>>().join(", ");
        parts.push(format!("({k}) IN (SELECT {k} FROM {rows})"));
    }
    parts.join(" AND ")
}

/// Strings as one `text[]` literal.
fn text_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("{");
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for ch in s.chars() {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    }
    out.push('}');
    format!("{}::text[]", lit(&out))
}

/// A `bigint[]` literal.
fn int_array(v: &[i64]) -> String {
    let items: Vec<String> = v.iter().map(i64::to_string).collect();
    format!("ARRAY[{}]::bigint[]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_as_one_text_array_literal() {
        let v = ["a", "b\"c", "d\\e", "x'y", "{,}", "k\u{1f}2", ""];
        assert_eq!(
            text_array(v.into_iter()),
            r#"'{"a","b\"c","d\\e","x''y","{,}","k\u{1f}2",""}'::text[]"#
                .replace("\\u{1f}", "\u{1f}")
        );
        assert_eq!(text_array(std::iter::empty()), "'{}'::text[]");
    }
}
