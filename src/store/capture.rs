//! Change capture, behind one trait: where a side's changes come from and how they are read.
//!
//! Every backend implements [`Capture`] with triggers that write a changelog row in the data's
//! own transaction. A log-based source (PostgreSQL logical decoding, MySQL binlog) is another
//! implementation of the same trait, returned by [`super::Store::capture`] for its side; the
//! engine and the broker relay read changes only through this trait.
//!
//! The contract a source keeps:
//! * sequence numbers are unique on the side and increase in commit order, so reading by
//!   sequence replays the side's commits in order;
//! * a change stays readable until the engine consumes it: trigger capture deletes the rows
//!   named in [`super::ApplyBatch::consumed`] inside the side's next engine transaction, which
//!   is where a log-based source confirms its position instead;
//! * changes the engine itself writes are never returned (no echo): the engine marks its own
//!   transactions through [`super::Store::begin`], and the source must skip what they did.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{CaptureSpec, Change, StoreError};

/// A side's source of captured changes.
#[async_trait]
pub trait Capture: Send {
    /// The capture method, for logs and `strangler check`.
    fn method(&self) -> &'static str;

    /// Sets capture up for these tables (idempotent); `outbox` adds the published flag the
    /// broker relay needs.
    async fn install(&mut self, specs: &[CaptureSpec], outbox: bool) -> Result<(), StoreError>;

    /// Removes every trace of capture (and of the engine's bookkeeping) from the database.
    async fn uninstall(&mut self, tables: &[String]) -> Result<(), StoreError>;

    /// Whether capture is set up.
    async fn installed(&mut self) -> Result<bool, StoreError>;

    /// Up to `limit` unconsumed changes of these tables in sequence order; `unpublished`: only
    /// those the broker relay has not published yet.
    async fn read_changes(
        &mut self,
        limit: usize,
        tables: &[String],
        unpublished: bool,
    ) -> Result<Vec<Change>, StoreError>;

    /// Every unconsumed change of source transaction `tx`, in order (empty where the database
    /// names no transactions).
    async fn read_tx(&mut self, tx: &str) -> Result<Vec<Change>, StoreError>;

    /// Inside the side's open engine transaction: unconsumed changes on these (table, key text)
    /// pairs, only those after sequence `after` when given (a superset is allowed).
    async fn fetch_keys(
        &mut self,
        keys: &HashSet<(String, String)>,
        after: Option<i64>,
    ) -> Result<Vec<Change>, StoreError>;

    /// Which of `seqs` are still unconsumed.
    async fn existing(&mut self, seqs: &[i64]) -> Result<HashSet<i64>, StoreError>;

    /// Marks changes as published to the broker.
    async fn mark_published(&mut self, seqs: &[i64]) -> Result<(), StoreError>;

    /// How many changes wait unconsumed.
    async fn backlog(&mut self) -> Result<i64, StoreError>;

    /// The backfill progress last stored for `entity`.
    async fn backfill_progress(&mut self, entity: &str) -> Result<Option<String>, StoreError>;

    /// Woken when the database signals a new change; `None`: the engine polls.
    fn notified(&self) -> Option<Arc<Notify>> {
        None
    }
}
