//! Poison changes: a change that cannot be decoded, mapped or applied is set aside after a
//! bounded number of attempts, later changes to its key wait with it, and the rest go on.

use super::*;
use crate::config::sync::OnError;
use crate::store::Change;
use crate::sync::status::Quarantined;

/// Attempts a change gets before it is quarantined.
pub(super) const QUARANTINE_AFTER: u32 = 3;

impl<O: Origin> Link<O> {
    /// A round failed while writing. After a few such rounds, the search for the change at
    /// fault halves one side's batch at each failure down to a single change; a change that
    /// fails alone that often is quarantined. A transient failure costs a few smaller rounds.
    pub(super) fn write_failed(&mut self, e: &SyncError) {
        match self.isolate {
            Some((side, limit)) if limit > 1 => {
                self.isolate = Some((side, limit / 2));
                return;
            }
            _ => {}
        }
        self.write_failures += 1;
        if self.write_failures < QUARANTINE_AFTER {
            return;
        }
        self.write_failures = 0;
        if self.isolate.is_none() {
            tracing::warn!(link = %self.name, "writes keep failing: looking for the change at fault");
            let side = self.isolate_next;
            self.isolate_next = 1 - side;
            self.isolate = Some((side, (self.round_len[side] / 2).max(1)));
            return;
        }
        let changes = std::mem::take(&mut self.round_changes);
        // Found: the stream goes back to whole batches (and isolates again if need be).
        self.isolate = None;
        let Some((si, head)) = changes.first().cloned() else {
            return;
        };
        let ei = self.entity_of(si, &head.table);
        let reason = format!("the other side refused it: {e}");
        let id = match ei {
            Some(ei) => self.set_aside(si, ei, &head, reason, QUARANTINE_AFTER),
            None => return,
        };
        for (sj, c) in &changes[1..] {
            self.hold_with(id, *sj, c);
        }
    }

    /// The entity whose table on side `si` is `table`.
    pub(super) fn entity_of(&self, si: usize, table: &str) -> Option<usize> {
        let side = &self.sides[si].name;
        self.entities
            .iter()
            .position(|e| e.cfg.table(side).is_some_and(|t| t.table == table))
    }

    /// Quarantines change `c` of side `si`: it stays in the changelog, skipped with every
    /// later change to its key until retried. Returns its id.
    pub(super) fn set_aside(
        &mut self,
        si: usize,
        ei: usize,
        c: &Change,
        reason: String,
        attempts: u32,
    ) -> u64 {
        let side = self.sides[si].name.clone();
        let entity = self.entities[ei].cfg.name.clone();
        tracing::error!(link = %self.name, side = %side, entity = %entity, table = %c.table, key = %c.pk, seq = c.seq, reason = %reason,
            "change quarantined; later changes to its key wait with it");
        let id = self.status.quarantine(Quarantined {
            id: 0,
            link: self.name.clone(),
            side,
            entity,
            table: c.table.clone(),
            key: c.pk.clone(),
            seq: c.seq,
            reason,
            attempts,
            at_ms: (now_us() / 1000) as u64,
            held: Vec::new(),
        });
        self.held.insert((si, c.table.clone(), c.pk.clone()), id);
        self.quarantined.insert(id, (ei, si, c.ts_us));
        id
    }

    /// Makes change `c` of side `si`, and later ones to its key, wait with quarantined `id`.
    pub(super) fn hold_with(&mut self, id: u64, si: usize, c: &Change) {
        self.held
            .entry((si, c.table.clone(), c.pk.clone()))
            .or_insert(id);
        self.status.hold(id, c.seq);
    }

    /// Drops held and poisoned changes from a round's read; poisoned ones are quarantined
    /// (or pause their entity when it says so).
    pub(super) fn screen(&mut self, si: usize, changes: &mut Vec<Change>) -> usize {
        // The usual round: nothing held, nothing poisoned, nothing to allocate.
        if self.held.is_empty() && changes.iter().all(|c| c.poison.is_none()) {
            return 0;
        }
        let mut skipped = 0;
        let mut kept = Vec::with_capacity(changes.len());
        for c in changes.drain(..) {
            if let Some(&id) = self.held.get(&(si, c.table.clone(), c.pk.clone())) {
                self.status.hold(id, c.seq);
                skipped += 1;
                continue;
            }
            if let Some(reason) = &c.poison
                && let Some(ei) = self.entity_of(si, &c.table)
            {
                let reason = format!("cannot decode the change: {reason}");
                if self.entities[ei].cfg.on_error == OnError::Pause {
                    pause(&mut self.entities[ei], &self.status, reason);
                } else {
                    self.set_aside(si, ei, &c, reason, 1);
                }
                continue;
            }
            kept.push(c);
        }
        *changes = kept;
        skipped
    }

    /// Releases the quarantined changes an operator asked to retry.
    pub(super) fn take_retries(&mut self) {
        for id in self.status.take_retries(&self.name) {
            self.quarantined.remove(&id);
            self.held.retain(|_, v| *v != id);
            tracing::info!(link = %self.name, id, "quarantined change released for another try");
        }
    }
}
