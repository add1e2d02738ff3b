//! Round step 1, read: the active entities' changes on both sides from the link's origin,
//! minus those waiting behind a quarantined change of their key.

use std::collections::HashMap;

use super::origin::Want;
use super::round::Round;
use super::*;

impl<O: Origin> Link<O> {
    /// Reads the round's changes; `None` when there is nothing to do (the link is idle).
    pub(super) async fn read(&mut self) -> Result<Option<Round>, SyncError> {
        let sides = [self.sides[0].name.clone(), self.sides[1].name.clone()];
        let active: Vec<usize> = (0..self.entities.len())
            .filter(|i| self.entities[*i].paused.is_none() && self.entities[*i].mapping.is_some())
            .collect();
        let any_paused = active.len() < self.entities.len();
        let mut tables: [HashMap<String, usize>; 2] = [HashMap::new(), HashMap::new()];
        for &i in &active {
            let e = &self.entities[i].cfg;
            for t in [&e.left, &e.right] {
                tables[self.side_index(&t.side)]
                    .entry(t.table.clone())
                    .or_insert(i);
            }
        }
        self.take_retries();
        // Held changes stay in the changelog: read past them. While isolating, part of one
        // side's batch.
        let limits = match self.isolate {
            Some((0, limit)) => [limit + self.skipped[0], 0],
            Some((_, limit)) => [0, limit + self.skipped[1]],
            None => [
                self.settings.batch + self.skipped[0],
                self.settings.batch + self.skipped[1],
            ],
        };
        let lists: [Vec<String>; 2] = [0, 1].map(|si| {
            if limits[si] == 0 {
                Vec::new()
            } else {
                tables[si].keys().cloned().collect()
            }
        });
        let want = [0, 1].map(|si| Want {
            side: &sides[si],
            tables: &lists[si],
            limit: limits[si],
        });
        let [mut ra, mut rb] = self
            .origin
            .read(stores(&mut self.sides), want, self.settings.poll)
            .await?;
        self.status.record_transactions(&self.name, &sides[0], &ra);
        self.status.record_transactions(&self.name, &sides[1], &rb);
        self.skipped = [self.screen(0, &mut ra), self.screen(1, &mut rb)];
        if let Some((_, limit)) = self.isolate {
            // The isolating batch, whatever the read past held rows brought.
            ra.truncate(limit);
            rb.truncate(limit);
        }
        self.waiting
            .retain(|(ei, _), _| self.entities[*ei].paused.is_some());
        for (si, r) in [(0usize, &ra), (1, &rb)] {
            for c in r {
                if let Some(&ei) = tables[si].get(&c.table) {
                    let w = self.waiting.entry((ei, si)).or_insert(c.ts_us);
                    *w = (*w).min(c.ts_us);
                }
            }
        }
        if any_paused {
            // A paused entity's changes wait in the changelogs: its lag keeps growing.
            self.peek(0, true).await?;
            self.peek(1, true).await?;
            self.stuck_lags();
        }
        if ra.is_empty() && rb.is_empty() {
            let [a, b] = &sides;
            self.origin.idle(stores(&mut self.sides), [a, b]).await?;
            self.idle_lags(a, b);
            self.quarantine_lags();
            return Ok(None);
        }
        Ok(Some(Round {
            sides,
            tables,
            any_paused,
            changes: [ra, rb],
            applied: Default::default(),
        }))
    }
}
