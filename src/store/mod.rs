//! Database access for the engines, one backend per database kind behind the [`Backend`]
//! trait: schema introspection, installing capture (changelog table and triggers), reading
//! captured changes, and applying a batch of writes together with its checkpoint in one
//! transaction. [`Store`] is what the engines hold: a connected backend plus the logic every
//! backend shares (paging by transaction, race filtering, prepare/apply).

mod backend;
mod capture;
mod change;
mod error;
mod instant;
mod mysql;
mod postgres;
mod rowhash;
mod schema;
mod sql;
mod sqlite;
mod statement;

pub use backend::Backend;
pub use capture::Capture;
pub use change::{Absent, ApplyBatch, Change, KEY_SEPARATOR, Op, Row, Write, key_text};
pub use error::StoreError;
pub use instant::utc_naive;
pub use rowhash::{Field, RowHash, hash_sum_sql, row_hash, row_hash_sql};
pub use schema::{CaptureSpec, Catalog, Column, ForeignKey, Form, Index, TableInfo, family};
pub use sql::{hex_bytes, quote, quote_table};
pub use statement::{Fault, Param, Statements};

use std::collections::HashSet;

/// A side's database, connected.
pub struct Store {
    backend: Box<dyn Backend>,
}

impl Store {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let backend: Box<dyn Backend> = if let Some(path) = url.strip_prefix("sqlite://") {
            Box::new(sqlite::SqliteStore::open(path).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Box::new(postgres::PgStore::connect(url).await?)
        } else if url.starts_with("mysql://") {
            Box::new(mysql::MyStore::connect(url).await?)
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        Ok(Store { backend })
    }

    /// The backend's name.
    pub fn kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// The side's change capture.
    pub fn capture(&mut self) -> &mut dyn Capture {
        &mut *self.backend
    }

    /// The statements an application runs on this side.
    pub fn statements(&mut self) -> &mut dyn Statements {
        &mut *self.backend
    }

    /// Every user table with its description; the engine's own tables are left out.
    pub async fn catalog(&mut self) -> Result<Catalog, StoreError> {
        self.backend.catalog().await
    }

    /// A table's columns, keys, foreign keys and indexes; `None` when there is no such table.
    pub async fn table_info(&mut self, table: &str) -> Result<Option<TableInfo>, StoreError> {
        self.backend.table_info(table).await
    }

    /// Creates the changelog and the capture triggers (idempotent); `outbox` adds the
    /// published flag the broker relay needs.
    pub async fn install(&mut self, specs: &[CaptureSpec], outbox: bool) -> Result<(), StoreError> {
        self.capture().install(specs, outbox).await
    }

    /// Removes the triggers, the changelog and every other table the engine made.
    pub async fn uninstall(&mut self, tables: &[String]) -> Result<(), StoreError> {
        self.capture().uninstall(tables).await
    }

    /// Whether capture is installed.
    pub async fn installed(&mut self) -> Result<bool, StoreError> {
        self.capture().installed().await
    }

    /// Up to about `limit` committed changes in sequence order, never splitting a source
    /// transaction where the database names it.
    pub async fn read_changes(
        &mut self,
        limit: usize,
        tables: &[String],
    ) -> Result<Vec<Change>, StoreError> {
        self.read(limit, tables, false).await
    }

    /// Like [`Store::read_changes`], but only changes the broker relay has not published.
    pub async fn read_unpublished(
        &mut self,
        limit: usize,
        tables: &[String],
    ) -> Result<Vec<Change>, StoreError> {
        self.read(limit, tables, true).await
    }

    /// Marks changes as published to the broker.
    pub async fn mark_published(&mut self, seqs: &[i64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.capture().mark_published(seqs).await
    }

    /// Which of `seqs` are still in this side's changelog (not yet consumed).
    pub async fn existing(&mut self, seqs: &[i64]) -> Result<HashSet<i64>, StoreError> {
        if seqs.is_empty() {
            return Ok(HashSet::new());
        }
        self.capture().existing(seqs).await
    }

    /// Inside the open transaction: records that the holder of `token` works on `unit`;
    /// false when a holder with a newer token already has (this one lost its lease).
    pub async fn fence(&mut self, unit: &str, token: i64) -> Result<bool, StoreError> {
        self.backend.fence(unit, token).await
    }

    async fn read(
        &mut self,
        limit: usize,
        tables: &[String],
        unpublished: bool,
    ) -> Result<Vec<Change>, StoreError> {
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = self
            .capture()
            .read_changes(limit + 1, tables, unpublished)
            .await?;
        if rows.len() > limit {
            let last_tx = rows[limit].tx.clone();
            rows.truncate(limit);
            if let Some(tx) = last_tx {
                // Drop the trailing part of a transaction that continues past the limit,
                // unless it is the only one: then read it whole.
                let keep = rows.iter().rposition(|c| c.tx.as_ref() != Some(&tx));
                match keep {
                    Some(i) => rows.truncate(i + 1),
                    None => {
                        rows = self.capture().read_tx(&tx).await?;
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Every change of source transaction `tx` still in the changelog, in order.
    pub async fn read_transaction(&mut self, tx: &str) -> Result<Vec<Change>, StoreError> {
        self.capture().read_tx(tx).await
    }

    /// Which of `seqs` from `source` this side has already applied.
    pub async fn applied(
        &mut self,
        source: &str,
        seqs: &[i64],
    ) -> Result<HashSet<i64>, StoreError> {
        if seqs.is_empty() {
            return Ok(HashSet::new());
        }
        self.backend.applied(source, seqs).await
    }

    /// Opens the engine's transaction on this side (its writes are not captured).
    pub async fn begin(&mut self) -> Result<(), StoreError> {
        self.backend.begin().await
    }

    /// Opens the engine's transaction on this side holding the side's gate alone: no other
    /// engine transaction here is open until this one ends (see [`Backend::hold`]).
    pub async fn begin_alone(&mut self) -> Result<(), StoreError> {
        self.backend.begin().await?;
        if let Err(e) = self.backend.hold().await {
            let _ = self.backend.finish(false).await;
            return Err(e);
        }
        Ok(())
    }

    /// Inside the open transaction: stores `progress` as the backfill progress of `entity`.
    pub async fn save_progress(&mut self, entity: &str, progress: &str) -> Result<(), StoreError> {
        self.backend.save_progress(entity, progress).await
    }

    /// Inside the open transaction: locks the rows with these keys of `table` so no other
    /// writer can change them until the transaction ends.
    pub async fn lock_keys(&mut self, table: &str, keys: &[Row]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.backend.lock_keys(table, keys).await
    }

    /// Inside the open transaction: changes on these (table, key text) pairs not in `seen`,
    /// looking only above `after` when given: the highest sequence of a read that took every
    /// change below it (`None` when changes may arrive out of order). Changes seen some other
    /// way (taken out of order, or applied and not yet deleted) must not raise it: a change
    /// between the read and them would be missed.
    pub async fn fetch_unseen(
        &mut self,
        keys: &HashSet<(String, String)>,
        seen: &HashSet<i64>,
        after: Option<i64>,
    ) -> Result<Vec<Change>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut found = self.capture().fetch_keys(keys, after).await?;
        found.retain(|c| !seen.contains(&c.seq) && keys.contains(&(c.table.clone(), c.pk.clone())));
        found.sort_by_key(|c| c.seq);
        Ok(found)
    }

    /// Inside the open transaction: runs a batch. `Ok(false)`: a written key has a change
    /// that was not seen (the caller rolls back).
    pub async fn write_batch(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError> {
        self.backend.write_batch(batch).await
    }

    /// Runs a batch inside a new transaction, uncaptured, and leaves it open for
    /// [`Store::finish`]. `Ok(false)`: rolled back already, because a written key has a
    /// change on this side that was not read this round.
    pub async fn prepare(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError> {
        self.begin().await?;
        let r = self.write_batch(batch).await;
        if !matches!(r, Ok(true)) {
            let _ = self.finish(false).await;
        }
        r
    }

    /// Commits (or rolls back) the transaction [`Store::prepare`] left open.
    pub async fn finish(&mut self, commit: bool) -> Result<(), StoreError> {
        self.backend.finish(commit).await
    }

    /// Applies a batch in one transaction; see [`Store::prepare`].
    pub async fn apply(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError> {
        if !self.prepare(batch).await? {
            return Ok(false);
        }
        self.finish(true).await?;
        Ok(true)
    }

    /// Woken when the database signals a new capture (PostgreSQL `NOTIFY`; on SQLite, a
    /// thread watching the file's data version).
    pub fn notified(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.backend.notified()
    }

    /// Changes waiting in this side's changelog.
    pub async fn backlog(&mut self) -> Result<i64, StoreError> {
        self.capture().backlog().await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::family::TypeFamily;

    #[test]
    fn families_and_key_text() {
        assert_eq!(family("BIGINT"), TypeFamily::Integer);
        assert_eq!(family("character varying(20)"), TypeFamily::Text);
        assert_eq!(family("timestamp with time zone"), TypeFamily::Time);
        assert_eq!(family("numeric(10,2)"), TypeFamily::Real);
        assert_eq!(family("jsonb"), TypeFamily::Json);
        let a = Value::from(7);
        let b = Value::from("x");
        assert_eq!(key_text([Some(&a), Some(&b)].into_iter()), "7\u{1f}x");
    }
}
