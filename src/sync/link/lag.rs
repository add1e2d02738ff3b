//! Lag: the age of the oldest change not yet applied, measured whether the link runs,
//! retries, is paused or holds quarantined changes.

use std::collections::HashMap;

use super::*;
use crate::metrics as m;

impl<O: Origin> Link<O> {
    /// Notes the oldest change waiting in side `si`'s changelog for each entity (all of them,
    /// or only the paused ones), for the lag of a link that cannot apply it.
    pub(super) async fn peek(&mut self, si: usize, paused_only: bool) -> Result<(), SyncError> {
        let side = self.sides[si].name.clone();
        for ei in 0..self.entities.len() {
            let e = &self.entities[ei];
            if paused_only && e.paused.is_none() {
                continue;
            }
            let Some(t) = e.cfg.table(&side) else {
                continue;
            };
            let tables = [t.table.clone()];
            let oldest = timed(&side, "peek", self.store(&side).read_changes(1, &tables))
                .await?
                .first()
                .map(|c| c.ts_us);
            match oldest {
                Some(ts) => {
                    let w = self.waiting.entry((ei, si)).or_insert(ts);
                    *w = (*w).min(ts);
                }
                None => {
                    if self.waiting.remove(&(ei, si)).is_some() || paused_only {
                        let to = self.sides[1 - si].name.clone();
                        self.record_dir(&self.entities[ei], &side, &to, 0.0, None, 0);
                    }
                }
            }
        }
        Ok(())
    }

    /// Records the lag of every direction holding a quarantined change: not applied yet, it
    /// is the oldest change waiting there.
    pub(super) fn quarantine_lags(&self) {
        let mut oldest: HashMap<(usize, usize), i64> = HashMap::new();
        for &(ei, si, ts) in self.quarantined.values() {
            let o = oldest.entry((ei, si)).or_insert(ts);
            *o = (*o).min(ts);
        }
        self.record_ages(oldest);
    }

    /// Records the lag of every direction with a change known to be waiting.
    pub(super) fn stuck_lags(&self) {
        self.record_ages(self.waiting.iter().map(|(k, ts)| (*k, *ts)));
        self.quarantine_lags();
    }

    /// Records, per (entity, side it comes from), the lag of a change captured at `ts` µs.
    pub(super) fn record_ages(&self, oldest: impl IntoIterator<Item = ((usize, usize), i64)>) {
        let now = now_us();
        for ((ei, si), ts) in oldest {
            let (from, to) = (&self.sides[si].name, &self.sides[1 - si].name);
            let lag = ((now - ts).max(0) as f64) / 1e6;
            self.record_dir(&self.entities[ei], from, to, lag, None, 0);
        }
    }

    pub(super) fn record_dir(
        &self,
        ent: &Ent,
        from: &str,
        to: &str,
        lag: f64,
        pos: Option<i64>,
        n: u64,
    ) {
        let e = &ent.cfg;
        let dir = format!("{from}_to_{to}");
        metrics::gauge!(m::SYNC_LAG, "entity" => e.name.clone(), "direction" => dir.clone())
            .set(lag);
        metrics::gauge!(m::SYNC_LAG_EXCEEDED, "entity" => e.name.clone(), "direction" => dir.clone())
            .set(if lag > e.lag_tolerance.as_secs_f64() { 1.0 } else { 0.0 });
        if n > 0 {
            metrics::counter!(m::SYNC_APPLIED, "entity" => e.name.clone(), "direction" => dir)
                .increment(n);
        }
        self.status.applied(&e.name, from, to, lag, pos, n);
    }

    pub(super) fn idle_lags(&self, a: &str, b: &str) {
        for ent in &self.entities {
            if ent.paused.is_none() {
                self.record_dir(ent, a, b, 0.0, None, 0);
                self.record_dir(ent, b, a, 0.0, None, 0);
            }
        }
    }
}
