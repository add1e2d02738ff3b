//! A database backend's contract: everything the engines call on a side, behind one trait.
//! A new database is one implementation of [`Backend`] (with its [`Capture`]) plus one line in
//! [`super::Store::connect`].

use std::collections::HashSet;

use async_trait::async_trait;

use super::{ApplyBatch, Capture, Catalog, Row, Statements, StoreError, TableInfo};

/// The catalog of the named tables, each described by [`Backend::table_info`] (one that
/// vanished meanwhile is left out): for backends without a whole-schema query.
pub(super) async fn describe_each<B: Backend + ?Sized>(
    backend: &mut B,
    names: Vec<String>,
) -> Result<Catalog, StoreError> {
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        if let Some(info) = backend.table_info(&name).await? {
            tables.push((name, info));
        }
    }
    Ok(Catalog {
        tables,
        aliases: Vec::new(),
    })
}

/// One side's database: schema introspection, fencing, checkpoints and the engine's
/// transaction, on top of its change capture.
#[async_trait]
pub trait Backend: Capture + Statements + Sync {
    /// The database kind (`sqlite`, `postgres`, `mysql`).
    fn kind(&self) -> &'static str;

    /// A table's columns, keys, foreign keys and indexes; `None` when there is no such table.
    async fn table_info(&mut self, table: &str) -> Result<Option<TableInfo>, StoreError>;

    /// Every user table with its description; the engine's own `_strangler_` tables are left
    /// out.
    async fn catalog(&mut self) -> Result<Catalog, StoreError>;

    /// Inside the open transaction: records that the holder of `token` works on `unit`;
    /// false when a holder with a newer token already has.
    async fn fence(&mut self, unit: &str, token: i64) -> Result<bool, StoreError>;

    /// Which of `seqs` (never empty) from `source` this side has already applied.
    async fn applied(&mut self, source: &str, seqs: &[i64]) -> Result<HashSet<i64>, StoreError>;

    /// Opens the engine's transaction (its writes are not captured), sharing the side's gate
    /// with other engine transactions: it waits while a transaction holds the gate alone.
    async fn begin(&mut self) -> Result<(), StoreError>;

    /// Inside the open transaction: holds the side's gate alone, waiting for the engine
    /// transactions that share it to end and keeping new ones waiting until this one ends.
    async fn hold(&mut self) -> Result<(), StoreError>;

    /// Inside the open transaction: stores `progress` as the backfill progress of `entity`.
    async fn save_progress(&mut self, entity: &str, progress: &str) -> Result<(), StoreError>;

    /// Inside the open transaction: locks the rows with these keys (never empty) of `table`.
    async fn lock_keys(&mut self, table: &str, keys: &[Row]) -> Result<(), StoreError>;

    /// Inside the open transaction: runs a batch. `Ok(false)`: a written key has a change
    /// that was not seen.
    async fn write_batch(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError>;

    /// Commits or rolls back the open transaction.
    async fn finish(&mut self, commit: bool) -> Result<(), StoreError>;
}
