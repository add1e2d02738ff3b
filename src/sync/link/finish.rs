//! Round step 6, finish: once both sides committed, the origin disposes of the consumed
//! changes (deleted now or next round, acknowledged to the broker), and the round's lag and
//! conflicts are recorded.

use serde_json::Value;

use super::group::Grouped;
use super::round::Round;
use super::settle::Settled;
use super::*;
use crate::sync::conflict::ConflictRecord;

impl<O: Origin> Link<O> {
    /// Finishes a committed round.
    pub(super) async fn finish(
        &mut self,
        r: Round,
        g: Grouped,
        s: Settled,
    ) -> Result<(), SyncError> {
        let [a, b] = &r.sides;
        let [processed_a, processed_b] = g.processed;
        let [skipped_a, skipped_b] = g.consumed;
        let consumed = [
            processed_a.into_iter().chain(skipped_a).collect(),
            processed_b.into_iter().chain(skipped_b).collect(),
        ];
        self.origin
            .committed(stores(&mut self.sides), [a, b], consumed)
            .await?;
        if !s.trail.is_empty() {
            tracing::trace!(link = %self.name, keys = %s.trail.join("; "), "round committed");
        }
        for grp in &g.groups {
            self.status
                .touched
                .note(&self.entities[grp.ent].cfg.name, &grp.key);
        }
        let done = now_us();
        for (ei, ent) in self.entities.iter().enumerate() {
            for (si, from, to) in [(0usize, a, b), (1, b, a)] {
                let (n, oldest, pos) = s.per_dir.get(&(ei, si)).copied().unwrap_or((0, done, 0));
                let lag = ((done - oldest).max(0) as f64) / 1e6;
                self.record_dir(ent, from, to, lag, (n > 0).then_some(pos), n);
            }
        }
        self.quarantine_lags();
        let conflicts: Vec<Value> = s.conflicts.iter().map(ConflictRecord::to_json).collect();
        for c in &conflicts {
            self.status.conflict(c.clone());
        }
        if let (Some(control), false) = (&self.control, conflicts.is_empty()) {
            let records = conflicts.iter().map(Value::to_string).collect();
            if let Err(e) = control.record_conflicts(records).await {
                metrics::counter!(m::CONTROL_ERRORS).increment(1);
                tracing::warn!(error = %e, "could not store conflict records in the control database");
            }
        }
        Ok(())
    }
}
