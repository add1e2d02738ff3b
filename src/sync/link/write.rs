//! Round step 5, plan and write: each side's batch (the writes, the checkpoint entries that
//! make them recognisable after a crash, the changelog rows the side can delete) goes into
//! its open transaction; then both commit, first side first.

use std::collections::HashSet;

use super::group::Grouped;
use super::round::Round;
use super::settle::Settled;
use super::*;
use crate::store::ApplyBatch;

impl<O: Origin> Link<O> {
    /// Writes both batches and commits; `false` when a race still got through (a brand-new
    /// key inserted on both sides at once) and both transactions rolled back.
    pub(super) async fn write(
        &mut self,
        r: &Round,
        g: &Grouped,
        s: &mut Settled,
    ) -> Result<bool, SyncError> {
        let [a, b] = &r.sides;
        let [ra, rb] = &r.changes;
        let seen = |r: &[Change]| r.iter().map(|c| c.seq).collect::<HashSet<_>>();
        // Checkpoints below the first change read can go, unless earlier changes may still
        // arrive or wait (held keys, paused entities).
        let by_position = !(r.any_paused || self.origin.reordered() || !self.held.is_empty());
        let first = |r: &[Change]| r.first().map(|c| c.seq).filter(|_| by_position);
        let [unapply_a, unapply_b] = self.origin.unapply();
        let [writes_a, writes_b] = std::mem::take(&mut s.writes);
        let batch_a = ApplyBatch {
            writes: writes_a,
            source: self.origin.checkpoint(b),
            applied: g.processed[1]
                .iter()
                .copied()
                .filter(|q| !s.conflicted.contains(q))
                .collect(),
            prune_below: first(rb),
            consumed: self.origin.in_flight().collect(),
            seen: ra
                .iter()
                .map(|c| c.seq)
                .chain(self.origin.in_flight())
                .collect(),
            unapply: unapply_b,
            absent: None,
        };
        let mut consumed_b = g.processed[1].clone();
        consumed_b.extend(&g.consumed[1]);
        let batch_b = ApplyBatch {
            writes: writes_b,
            source: self.origin.checkpoint(a),
            applied: g.processed[0].clone(),
            prune_below: first(ra),
            consumed: consumed_b,
            seen: seen(rb),
            unapply: unapply_a,
            absent: None,
        };
        // Both transactions are open and hold their locks.
        self.writing = true;
        self.round_len = [ra.len(), rb.len()];
        if self.isolate.is_some() {
            self.round_changes = ra
                .iter()
                .map(|c| (0, c.clone()))
                .chain(rb.iter().map(|c| (1, c.clone())))
                .collect();
            // The isolated side's change first: it is the one read, the rest joined its key.
            if let Some((1, _)) = self.isolate {
                self.round_changes
                    .sort_by_key(|(si, _)| usize::from(*si == 0));
            }
        }
        let (sa, sb) = self.both();
        let (wa, wb) = tokio::join!(
            timed(a, "apply", sa.write_batch(&batch_a)),
            timed(b, "apply", sb.write_batch(&batch_b))
        );
        if !(wa? & wb?) {
            self.rollback(a, b).await?;
            return Ok(false);
        }
        timed(a, "commit", self.store(a).finish(true)).await?;
        timed(b, "commit", self.store(b).finish(true)).await?;
        self.writing = false;
        Ok(true)
    }
}
