//! Where a link's changes come from. Direct mode reads both changelogs every round; broker
//! mode (`sync::broker`) takes the changes the stream delivers. The round asks its origin for
//! what differs between the two and never asks which mode it runs in.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use crate::store::{ApplyBatch, Change, Store};
use crate::sync::error::{SyncError, timed};

/// What a round wants to read from one side.
#[derive(Clone, Copy)]
pub(in crate::sync) struct Want<'a> {
    /// The side's name.
    pub(in crate::sync) side: &'a str,
    /// The active entities' tables on that side (empty: read nothing).
    pub(in crate::sync) tables: &'a [String],
    /// At most this many changes.
    pub(in crate::sync) limit: usize,
}

/// A link's source of changes and what it does once they are applied.
pub(in crate::sync) trait Origin: Send + 'static {
    /// Checkpoint name for changes from `side` (several broker groups' rounds write
    /// checkpoints into the same database).
    fn checkpoint(&self, side: &str) -> String;

    /// The link's state, for the status page.
    fn state(&self) -> String;

    /// Whether reading already waits for changes, so an idle round need not sleep.
    fn waits(&self) -> bool;

    /// Whether changes may arrive out of order or more than once (then a round cannot prune
    /// checkpoints by position, and looks for unseen changes anywhere in the changelog).
    fn reordered(&self) -> bool;

    /// The round's changes of both sides (first, second), each in changelog order; `poll` is
    /// how long a waiting origin may wait for the first one.
    fn read(
        &mut self,
        stores: [&mut Store; 2],
        want: [Want<'_>; 2],
        poll: Duration,
    ) -> impl Future<Output = Result<[Vec<Change>; 2], SyncError>> + Send;

    /// Inside both open transactions: keeps only the changes this worker may apply.
    /// [`SyncError::Fenced`] when it no longer owns the work.
    fn admit(
        &mut self,
        stores: [&mut Store; 2],
        sides: [&str; 2],
        changes: &mut [Vec<Change>; 2],
    ) -> impl Future<Output = Result<(), SyncError>> + Send;

    /// The first side's changelog rows applied to the second side but not deleted yet: the
    /// next transaction on the first side deletes them.
    fn in_flight(&self) -> impl Iterator<Item = i64> + '_;

    /// Checkpoint entries the next transaction on each side can drop.
    fn unapply(&mut self) -> [Vec<i64>; 2];

    /// A round found nothing to do.
    fn idle(
        &mut self,
        stores: [&mut Store; 2],
        sides: [&str; 2],
    ) -> impl Future<Output = Result<(), SyncError>> + Send;

    /// Both sides committed; `consumed` are each side's changelog rows the other side now
    /// holds.
    fn committed(
        &mut self,
        stores: [&mut Store; 2],
        sides: [&str; 2],
        consumed: [Vec<i64>; 2],
    ) -> impl Future<Output = Result<(), SyncError>> + Send;
}

/// Direct mode: each round reads both changelogs.
#[derive(Default)]
pub(in crate::sync) struct Direct {
    /// The first side's changelog rows applied to the second side and not yet deleted.
    pending: HashSet<i64>,
}

impl Origin for Direct {
    fn checkpoint(&self, side: &str) -> String {
        side.to_string()
    }

    fn state(&self) -> String {
        "running".into()
    }

    fn waits(&self) -> bool {
        false
    }

    fn reordered(&self) -> bool {
        false
    }

    async fn read(
        &mut self,
        stores: [&mut Store; 2],
        want: [Want<'_>; 2],
        _poll: Duration,
    ) -> Result<[Vec<Change>; 2], SyncError> {
        let [mut ra, rb] = read_both(stores, want).await?;
        // Rows applied last round and deleted only in this round's transaction.
        if !self.pending.is_empty() {
            ra.retain(|c| !self.pending.contains(&c.seq));
        }
        Ok([ra, rb])
    }

    async fn admit(
        &mut self,
        _stores: [&mut Store; 2],
        _sides: [&str; 2],
        _changes: &mut [Vec<Change>; 2],
    ) -> Result<(), SyncError> {
        Ok(())
    }

    fn in_flight(&self) -> impl Iterator<Item = i64> + '_ {
        self.pending.iter().copied()
    }

    fn unapply(&mut self) -> [Vec<i64>; 2] {
        Default::default()
    }

    async fn idle(&mut self, stores: [&mut Store; 2], sides: [&str; 2]) -> Result<(), SyncError> {
        if !self.pending.is_empty() {
            let [a, _] = stores;
            let seqs = self.pending.drain().collect();
            delete_consumed(a, sides[0], self.checkpoint(sides[1]), seqs).await?;
        }
        Ok(())
    }

    async fn committed(
        &mut self,
        _stores: [&mut Store; 2],
        _sides: [&str; 2],
        [consumed_a, _]: [Vec<i64>; 2],
    ) -> Result<(), SyncError> {
        // The first side's consumed rows can go only now that the second side has committed:
        // the next round's transaction deletes them (a crash in between leaves them to be
        // recognised by the second side's checkpoint).
        self.pending = consumed_a.into_iter().collect();
        Ok(())
    }
}

/// Reads both changelogs side by side, each in changelog order.
pub(in crate::sync) async fn read_both(
    [sa, sb]: [&mut Store; 2],
    [wa, wb]: [Want<'_>; 2],
) -> Result<[Vec<Change>; 2], SyncError> {
    let (da, db) = tokio::join!(
        timed(
            wa.side,
            "read_changes",
            sa.read_changes(wa.limit, wa.tables)
        ),
        timed(
            wb.side,
            "read_changes",
            sb.read_changes(wb.limit, wb.tables)
        )
    );
    Ok([da?, db?])
}

/// Deletes `side`'s changelog rows `seqs`, applied under checkpoint `checkpoint` on the other
/// side, in a transaction of their own.
pub(in crate::sync) async fn delete_consumed(
    store: &mut Store,
    side: &str,
    checkpoint: String,
    seqs: Vec<i64>,
) -> Result<(), SyncError> {
    let cleanup = ApplyBatch {
        source: checkpoint,
        consumed: seqs,
        ..ApplyBatch::default()
    };
    timed(side, "cleanup", store.apply(&cleanup)).await?;
    Ok(())
}
