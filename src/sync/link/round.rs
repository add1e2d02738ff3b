//! One round of a link, as named steps: read both sides' changes, begin both transactions,
//! group the changes by key and lock the keys, settle each key, write both sides with their
//! checkpoints, and finish (dispose of consumed changes, record lag and conflicts).

use std::collections::{HashMap, HashSet};

use super::*;
use crate::store::StoreError;

/// What one round carries from step to step, by side index (first side, second side).
pub(super) struct Round {
    /// The two sides' names.
    pub(super) sides: [String; 2],
    /// The active entities' tables on each side, and the entity each belongs to.
    pub(super) tables: [HashMap<String, usize>; 2],
    /// Whether some entity of the link is paused.
    pub(super) any_paused: bool,
    /// Each side's changes, in changelog order.
    pub(super) changes: [Vec<Change>; 2],
    /// Each side's changes the other side's checkpoint says it applied already.
    pub(super) applied: [HashSet<i64>; 2],
}

impl<O: Origin> Link<O> {
    pub(super) async fn round(&mut self) -> Result<Step, SyncError> {
        let Some(mut r) = self.read().await? else {
            return Ok(Step::Idle);
        };
        self.begin(&mut r).await?;
        let Some(g) = self.group_and_lock(&mut r).await? else {
            return Ok(Step::Again);
        };
        let mut s = match self.settle(&r, &g.groups) {
            Ok(s) => s,
            Err((gi, msg)) => return self.unmappable(&r, &g.groups[gi], msg).await,
        };
        if !self.write(&r, &g, &mut s).await? {
            return Ok(Step::Again);
        }
        self.finish(r, g, s).await?;
        Ok(Step::Busy)
    }

    pub(super) async fn rollback(&mut self, a: &str, b: &str) -> Result<(), SyncError> {
        timed(b, "rollback", self.store(b).finish(false)).await?;
        timed(a, "rollback", self.store(a).finish(false)).await
    }

    pub(super) fn bad(&mut self, ent: usize, msg: String) -> SyncError {
        let e = &mut self.entities[ent];
        pause(e, &self.status, format!("cannot map a row: {msg}"));
        SyncError::Store {
            side: e.cfg.left.side.clone(),
            source: StoreError::Value(msg),
        }
    }
}

/// The sequence numbers of `changes`.
pub(super) fn seqs(changes: &[Change]) -> Vec<i64> {
    changes.iter().map(|c| c.seq).collect()
}
