//! Round steps 2 and 3, begin and group-and-lock: begin both transactions, keep what this
//! worker may apply, then group the changes by key in the entity's left form, lock every key
//! on both sides and pick up the changes to those keys that committed after the read.

use std::collections::{HashMap, HashSet};

use super::plan::*;
use super::round::{Round, seqs};
use super::*;
use crate::config::sync::OnError;
use crate::store::{Row, key_text};

/// A round's changes grouped by key.
pub(super) struct Grouped {
    /// One group per (entity, key) the round touches.
    pub(super) groups: Vec<Group>,
    /// Per side: the changes mapped into groups.
    pub(super) processed: [Vec<i64>; 2],
    /// Per side: changes the other side applied already; only their changelog rows go.
    pub(super) consumed: [Vec<i64>; 2],
}

impl<O: Origin> Link<O> {
    /// Begins both transactions, keeps the changes this worker may apply and finds which of
    /// them the other side applied already.
    pub(super) async fn begin(&mut self, r: &mut Round) -> Result<(), SyncError> {
        let [a, b] = &r.sides;
        let (sa, sb) = self.both();
        let (ba, bb) = tokio::join!(timed(a, "begin", sa.begin()), timed(b, "begin", sb.begin()));
        ba.and(bb)?;
        if let Err(e) = self
            .origin
            .admit(stores(&mut self.sides), [a, b], &mut r.changes)
            .await
        {
            if matches!(e, SyncError::Fenced { .. }) {
                self.rollback(a, b).await?;
            }
            return Err(e);
        }
        let [in_a, in_b] = self.applied_elsewhere(&r.sides, &r.changes).await?;
        r.applied = [in_b, in_a];
        Ok(())
    }

    /// Which of each side's `changes` the other side's checkpoint holds (first side's
    /// checkpoint of the second side's changes, second side's of the first's).
    async fn applied_elsewhere(
        &mut self,
        [a, b]: &[String; 2],
        [ra, rb]: &[Vec<Change>; 2],
    ) -> Result<[HashSet<i64>; 2], SyncError> {
        let (src_a, src_b) = (self.origin.checkpoint(a), self.origin.checkpoint(b));
        let (qa, qb) = (seqs(rb), seqs(ra));
        let (sa, sb) = self.both();
        let (in_a, in_b) = tokio::join!(
            timed(a, "applied", sa.applied(&src_b, &qa)),
            timed(b, "applied", sb.applied(&src_a, &qb))
        );
        Ok([in_a?, in_b?])
    }

    /// Groups the round's changes by key and locks the keys; `None` when a change cannot be
    /// mapped (it was set aside or its entity paused, and both transactions rolled back).
    pub(super) async fn group_and_lock(
        &mut self,
        r: &mut Round,
    ) -> Result<Option<Grouped>, SyncError> {
        let anywhere = self.origin.reordered();
        let mut locked = false;
        loop {
            let mut groups: Vec<Group> = Vec::new();
            let mut index: HashMap<(usize, String), usize> = HashMap::new();
            let mut processed: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
            let mut consumed: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
            let skew = self.settings.max_clock_skew.as_micros() as i64;
            let limit = now_us() + skew;
            for si in 0..2 {
                let side = &self.sides[si].name;
                for c in r.changes[si].iter() {
                    if r.applied[si].contains(&c.seq) {
                        consumed[si].push(c.seq);
                        continue;
                    }
                    let Some(&ei) = r.tables[si].get(&c.table) else {
                        continue;
                    };
                    let Some(mapping) = self.entities[ei].mapping.as_ref() else {
                        continue;
                    };
                    let mut ts = c.ts_us;
                    if ts > limit {
                        metrics::counter!(m::SYNC_CLOCK_CLAMPED).increment(1);
                        ts = limit;
                    }
                    match pieces(mapping, side, c, ts) {
                        Ok(ps) => {
                            for (key, keyrow, p) in ps {
                                let gi = *index.entry((ei, key)).or_insert_with(|| {
                                    groups.push(Group {
                                        ent: ei,
                                        key: keyrow,
                                        a: Vec::new(),
                                        b: Vec::new(),
                                    });
                                    groups.len() - 1
                                });
                                if si == 0 {
                                    groups[gi].a.push(p)
                                } else {
                                    groups[gi].b.push(p)
                                }
                            }
                            processed[si].push(c.seq);
                        }
                        Err(msg) => {
                            let reason = format!(
                                "changelog row {} on side {side:?} (table {:?}): {msg}",
                                c.seq, c.table
                            );
                            if self.entities[ei].cfg.on_error == OnError::Pause {
                                pause(&mut self.entities[ei], &self.status, reason);
                            } else {
                                let c = c.clone();
                                self.set_aside(si, ei, &c, reason, 1);
                            }
                            let [a, b] = &r.sides;
                            self.rollback(a, b).await?;
                            return Ok(None);
                        }
                    }
                }
            }
            if !locked {
                // Lock every key of the round on both sides, then pick up changes to those keys
                // that committed after the read: from here on none can slip in unseen.
                locked = true;
                let [wa, wb] = [0, 1].map(|si| self.lock_work(si, r, &groups));
                let [a, b] = &r.sides;
                let (sa, sb) = self.both();
                let (fa, fb) = tokio::join!(
                    lock_and_fetch(a, sa, wa, anywhere),
                    lock_and_fetch(b, sb, wb, anywhere)
                );
                let (mut fa, mut fb) = (fa?, fb?);
                // A held key's later changes stay held, however they were found.
                self.screen(0, &mut fa);
                self.screen(1, &mut fb);
                if !(fa.is_empty() && fb.is_empty()) {
                    // Out-of-order delivery (broker mode) can find old changes here that an
                    // interrupted round applied but did not get to delete.
                    let found = [fa, fb];
                    let [in_a, in_b] = self.applied_elsewhere(&r.sides, &found).await?;
                    r.applied[0].extend(in_b);
                    r.applied[1].extend(in_a);
                    // Pieces of a key must stay in changelog order: the first one's old image is
                    // the base a counter's deltas are added to.
                    for (mine, more) in r.changes.iter_mut().zip(found) {
                        mine.extend(more);
                        mine.sort_by_key(|c| c.seq);
                    }
                    continue;
                }
            }
            return Ok(Some(Grouped {
                groups,
                processed,
                consumed,
            }));
        }
    }

    /// Side `si`'s part of locking the round's keys.
    fn lock_work(&self, si: usize, r: &Round, groups: &[Group]) -> LockWork {
        let side = &self.sides[si].name;
        let mut by_table: HashMap<String, Vec<Row>> = HashMap::new();
        let mut pks: HashSet<(String, String)> = HashSet::new();
        for g in groups {
            let Some(m) = self.entities[g.ent].mapping.as_ref() else {
                continue;
            };
            let Some(t) = m.entity.table(side) else {
                continue;
            };
            if let Ok(k) = m.side_key(side, &g.key) {
                pks.insert((t.table.clone(), key_text(t.key.iter().map(|c| k.get(c)))));
                by_table.entry(t.table.clone()).or_default().push(k);
            }
        }
        let mut seen: HashSet<i64> = r.changes[si].iter().map(|c| c.seq).collect();
        // The read took every change below its last one (in changelog order); the changes in
        // flight from the last round may lie far above it, so they do not count.
        let read_to = r.changes[si].iter().map(|c| c.seq).max().unwrap_or(0);
        if si == 0 {
            seen.extend(self.origin.in_flight());
        }
        LockWork {
            by_table,
            pks,
            seen,
            read_to,
        }
    }
}

/// Inside the open transaction on one side: locks the round's keys, then reads the changes to
/// them that were not seen this round.
async fn lock_and_fetch(
    side: &str,
    store: &mut Store,
    work: LockWork,
    anywhere: bool,
) -> Result<Vec<Change>, SyncError> {
    for (table, keys) in work.by_table {
        timed(side, "lock", store.lock_keys(&table, &keys)).await?;
    }
    timed(
        side,
        "fetch",
        store.fetch_unseen(&work.pks, &work.seen, (!anywhere).then_some(work.read_to)),
    )
    .await
}

/// One side's part of locking a round's keys.
#[derive(Default)]
struct LockWork {
    /// Keys to lock, by table.
    by_table: HashMap<String, Vec<Row>>,
    /// The same keys as (table, key text).
    pks: HashSet<(String, String)>,
    /// Changelog rows of this side already read this round, or in flight from the last.
    seen: HashSet<i64>,
    /// The highest sequence this round's read took: every change below it was read.
    read_to: i64,
}
