//! One round of a link: read both changelogs, group changes by key, lock and re-fetch,
//! settle conflicts, write both sides with their checkpoints, and clean up.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use super::plan::*;
use super::*;
use crate::config::sync::OnError;
use crate::metrics as m;
use crate::store::{ApplyBatch, Change, Row, Store, StoreError, Write, key_text};
use crate::sync::conflict::{self, ConflictRecord};

impl Link {
    pub(super) async fn round(&mut self) -> Result<Step, SyncError> {
        let (a, b) = (self.sides[0].name.clone(), self.sides[1].name.clone());
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
        let list = |m: &HashMap<String, usize>| m.keys().cloned().collect::<Vec<_>>();
        self.take_retries();
        let (mut ta, mut tb) = (list(&tables[0]), list(&tables[1]));
        // Held changes stay in the changelog: read past them. While isolating, part of one
        // side's batch.
        let (batch_a, batch_b) = match self.isolate {
            Some((0, limit)) => (limit + self.skipped[0], 0),
            Some((_, limit)) => (0, limit + self.skipped[1]),
            None => (
                self.settings.batch + self.skipped[0],
                self.settings.batch + self.skipped[1],
            ),
        };
        if batch_a == 0 {
            ta.clear();
        }
        if batch_b == 0 {
            tb.clear();
        }
        let (mut ra, mut rb) = match self.feed.as_mut() {
            Some(feed) => {
                let wait = if feed.sweep {
                    Duration::ZERO
                } else {
                    self.settings.poll
                };
                feed.receive(wait).await?;
                let [x, y] = &mut self.sides;
                for (conn, tabs) in [(x, &ta), (y, &tb)] {
                    let store = conn.store.as_mut().expect("connected before use");
                    feed.resolve(&conn.name, store, tabs).await?;
                }
                (feed.changes(&a), feed.changes(&b))
            }
            None => (Vec::new(), Vec::new()),
        };
        // Direct mode reads the changelogs every round; broker mode once after taking a group
        // over, because what the last owner had in flight is redelivered only after the ack wait.
        if self.feed.as_ref().is_none_or(|f| f.sweep) {
            let (sa, sb) = self.both();
            let (da, db) = tokio::join!(
                timed(&a, "read_changes", sa.read_changes(batch_a, &ta)),
                timed(&b, "read_changes", sb.read_changes(batch_b, &tb))
            );
            let (da, db) = (da?, db?);
            for (r, d) in [(&mut ra, da), (&mut rb, db)] {
                r.extend(d);
                r.sort_by_key(|c| c.seq);
                r.dedup_by_key(|c| c.seq);
            }
            if let Some(f) = self.feed.as_mut() {
                f.sweep = false;
            }
        }
        // Rows applied last round and deleted only in this round's transaction.
        ra.retain(|c| !self.pending.contains(&c.seq));
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
            if !self.pending.is_empty() {
                let pending: Vec<i64> = self.pending.iter().copied().collect();
                self.delete_consumed(&a, &b, pending).await?;
                self.pending.clear();
            }
            self.idle_lags(&a, &b);
            self.quarantine_lags();
            return Ok(Step::Idle);
        }
        let seqs = |r: &[Change]| r.iter().map(|c| c.seq).collect::<Vec<_>>();
        let (sa, sb) = self.both();
        let (ba, bb) = tokio::join!(
            timed(&a, "begin", sa.begin()),
            timed(&b, "begin", sb.begin())
        );
        ba.and(bb)?;
        // Broker mode: changes arrive through the stream, maybe more than once and out of
        // order. Only the lease holder gets past the fence; a change whose changelog row is
        // gone was consumed by an earlier round and is dropped.
        let mut gone: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
        if let Some((unit, token)) = self.feed.as_ref().map(|f| (f.unit.clone(), f.token)) {
            for side in [&b, &a] {
                if !timed(side, "fence", self.store(side).fence(&unit, token)).await? {
                    self.rollback(&a, &b).await?;
                    return Err(SyncError::Fenced { unit });
                }
            }
            for (si, side, r) in [(0usize, &a, &mut ra), (1, &b, &mut rb)] {
                let live = timed(side, "existing", self.store(side).existing(&seqs(r))).await?;
                gone[si] = r
                    .iter()
                    .filter(|c| !live.contains(&c.seq))
                    .map(|c| c.seq)
                    .collect();
                r.retain(|c| live.contains(&c.seq));
            }
        }
        let (src_a, src_b) = (self.source(&a), self.source(&b));
        let (qa, qb) = (seqs(&rb), seqs(&ra));
        let (sa, sb) = self.both();
        let (done_a, done_b) = tokio::join!(
            timed(&a, "applied", sa.applied(&src_b, &qa)),
            timed(&b, "applied", sb.applied(&src_a, &qb))
        );
        let (mut done_in_a, mut done_in_b) = (done_a?, done_b?);
        let anywhere = self.feed.is_some();
        let mut locked = false;
        let grouped = loop {
            let mut groups: Vec<Group> = Vec::new();
            let mut index: HashMap<(usize, String), usize> = HashMap::new();
            let mut processed: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
            let mut consumed: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
            let skew = self.settings.max_clock_skew.as_micros() as i64;
            let limit = now_us() + skew;
            for (si, changes, done) in [(0usize, &ra, &done_in_b), (1, &rb, &done_in_a)] {
                let side = &self.sides[si].name;
                for c in changes.iter() {
                    if done.contains(&c.seq) {
                        consumed[si].push(c.seq);
                        continue;
                    }
                    let Some(&ei) = tables[si].get(&c.table) else {
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
                            self.rollback(&a, &b).await?;
                            return Ok(Step::Again);
                        }
                    }
                }
            }

            if !locked {
                // Lock every key of the round on both sides, then pick up changes to those keys
                // that committed after the read: from here on none can slip in unseen.
                locked = true;
                let mut work: [LockWork; 2] = Default::default();
                for (si, side) in [(0usize, &a), (1, &b)] {
                    let mut by_table: HashMap<String, Vec<Row>> = HashMap::new();
                    let mut pks: HashSet<(String, String)> = HashSet::new();
                    for g in &groups {
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
                    let mut seen: HashSet<i64> = [&ra, &rb][si].iter().map(|c| c.seq).collect();
                    if si == 0 {
                        seen.extend(&self.pending);
                    }
                    work[si] = LockWork {
                        by_table,
                        pks,
                        seen,
                    };
                }
                let [wa, wb] = work;
                let (sa, sb) = self.both();
                let (fa, fb) = tokio::join!(
                    lock_and_fetch(&a, sa, wa, anywhere),
                    lock_and_fetch(&b, sb, wb, anywhere)
                );
                let (mut fa, mut fb) = (fa?, fb?);
                // A held key's later changes stay held, however they were found.
                self.screen(0, &mut fa);
                self.screen(1, &mut fb);
                if !(fa.is_empty() && fb.is_empty()) {
                    // Out-of-order delivery (broker mode) can find old changes here that an
                    // interrupted round applied but did not get to delete.
                    let (qa, qb) = (seqs(&fb), seqs(&fa));
                    let (sa, sb) = self.both();
                    let (more_a, more_b) = tokio::join!(
                        timed(&a, "applied", sa.applied(&src_b, &qa)),
                        timed(&b, "applied", sb.applied(&src_a, &qb))
                    );
                    done_in_a.extend(more_a?);
                    done_in_b.extend(more_b?);
                    // Pieces of a key must stay in changelog order: the first one's old image is
                    // the base a counter's deltas are added to.
                    ra.extend(fa);
                    rb.extend(fb);
                    ra.sort_by_key(|c| c.seq);
                    rb.sort_by_key(|c| c.seq);
                    continue;
                }
            }
            break (groups, processed, consumed);
        };
        let (groups, processed, consumed) = grouped;

        let mut to_a: Vec<(i64, Write)> = Vec::new();
        let mut to_b: Vec<(i64, Write)> = Vec::new();
        let mut conflicted_b: HashSet<i64> = HashSet::new();
        let mut conflicts = Vec::new();
        let mut per_dir: HashMap<(usize, usize), (u64, i64, i64)> = HashMap::new();
        let now = now_us();
        let mut trail: Vec<String> = Vec::new();
        let built = (|| -> Result<(), (usize, String)> {
            for (gi, g) in groups.iter().enumerate() {
                let ent = &self.entities[g.ent];
                let mapping = ent.mapping.as_ref().expect("active entity");
                let (na, nb) = (net(&a, &g.a), net(&b, &g.b));
                if tracing::enabled!(tracing::Level::TRACE) {
                    trail.push(format!(
                        "{} {} a={:?} b={:?}",
                        ent.cfg.name,
                        Value::Object(g.key.clone()),
                        g.a.iter().map(|p| p.seq).collect::<Vec<_>>(),
                        g.b.iter().map(|p| p.seq).collect::<Vec<_>>()
                    ));
                }
                for (si, ps) in [(0usize, &g.a), (1, &g.b)] {
                    for p in ps {
                        let e = per_dir.entry((g.ent, si)).or_insert((0, i64::MAX, 0));
                        e.0 += 1;
                        e.1 = e.1.min(p.ts);
                        e.2 = e.2.max(p.seq);
                    }
                }
                let w = |side: &str, row: &Option<Row>| write(mapping, side, row, &g.key);
                match (&na, &nb) {
                    (Some(x), None) => to_b.push((g.a[0].seq, w(&b, &x.row).map_err(|m| (gi, m))?)),
                    (None, Some(y)) => to_a.push((g.b[0].seq, w(&a, &y.row).map_err(|m| (gi, m))?)),
                    (Some(x), Some(y)) => {
                        let (left, right) = if mapping.is_left(&a) { (x, y) } else { (y, x) };
                        let res = conflict::resolve(&ent.cfg, &self.rules, left, right);
                        to_a.push((g.b[0].seq, w(&a, &res.row).map_err(|m| (gi, m))?));
                        to_b.push((g.a[0].seq, w(&b, &res.row).map_err(|m| (gi, m))?));
                        conflicted_b.extend(g.b.iter().map(|p| p.seq));
                        let policy = ent.cfg.conflict.name();
                        metrics::counter!(m::SYNC_CONFLICTS, "entity" => ent.cfg.name.clone(), "policy" => policy.clone()).increment(1);
                        conflicts.push(ConflictRecord {
                            at_ms: now / 1000,
                            entity: ent.cfg.name.clone(),
                            key: g.key.clone(),
                            policy,
                            column_policies: ent
                                .cfg
                                .column_conflict
                                .iter()
                                .map(|(c, p)| (c.clone(), p.name()))
                                .collect(),
                            left: left.into(),
                            right: right.into(),
                            outcome: res.outcome,
                            result: res.row,
                        });
                    }
                    (None, None) => {}
                }
            }
            Ok(())
        })();
        if let Err((gi, msg)) = built {
            self.rollback(&a, &b).await?;
            let g = &groups[gi];
            if self.entities[g.ent].cfg.on_error == OnError::Pause {
                return Err(self.bad(g.ent, msg));
            }
            // The key's changes on both sides wait together; the first is the one listed.
            let find = |r: &[Change], seq: i64| r.iter().find(|c| c.seq == seq).cloned();
            let members: Vec<(usize, Change)> =
                g.a.iter()
                    .filter_map(|p| find(&ra, p.seq).map(|c| (0, c)))
                    .chain(g.b.iter().filter_map(|p| find(&rb, p.seq).map(|c| (1, c))))
                    .collect();
            if let Some((si, head)) = members.first() {
                let id =
                    self.set_aside(*si, g.ent, head, format!("cannot map the change: {msg}"), 1);
                for (sj, c) in &members[1..] {
                    self.hold_with(id, *sj, c);
                }
            }
            return Ok(Step::Again);
        }
        to_a.sort_by_key(|(s, _)| *s);
        to_b.sort_by_key(|(s, _)| *s);

        let seen = |r: &[Change]| r.iter().map(|c| c.seq).collect::<HashSet<_>>();
        let broker = self.feed.is_some();
        let first = |r: &[Change]| {
            if any_paused || broker || !self.held.is_empty() {
                None
            } else {
                r.first().map(|c| c.seq)
            }
        };
        let [unapply_a, unapply_b] = self
            .feed
            .as_mut()
            .map(|f| std::mem::take(&mut f.prune))
            .unwrap_or_default();
        let batch_a = ApplyBatch {
            writes: to_a.into_iter().map(|(_, w)| w).collect(),
            source: src_b.clone(),
            applied: processed[1]
                .iter()
                .copied()
                .filter(|s| !conflicted_b.contains(s))
                .collect(),
            prune_below: first(&rb),
            consumed: self.pending.iter().copied().collect(),
            seen: seen(&ra).union(&self.pending).copied().collect(),
            unapply: unapply_b,
        };
        let mut consumed_b = processed[1].clone();
        consumed_b.extend(&consumed[1]);
        let batch_b = ApplyBatch {
            writes: to_b.into_iter().map(|(_, w)| w).collect(),
            source: src_a.clone(),
            applied: processed[0].clone(),
            prune_below: first(&ra),
            consumed: consumed_b.clone(),
            seen: seen(&rb),
            unapply: unapply_a,
        };
        // Both transactions are open and hold their locks; a race that still got through
        // (a brand-new key inserted on both sides at once) rolls both back.
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
            timed(&a, "apply", sa.write_batch(&batch_a)),
            timed(&b, "apply", sb.write_batch(&batch_b))
        );
        if !(wa? & wb?) {
            self.rollback(&a, &b).await?;
            return Ok(Step::Again);
        }
        timed(&a, "commit", self.store(&a).finish(true)).await?;
        timed(&b, "commit", self.store(&b).finish(true)).await?;
        self.writing = false;
        let mut consumed_a = processed[0].clone();
        consumed_a.extend(&consumed[0]);
        // The first side's consumed rows can go only now that the second side has committed.
        // Direct mode defers that to the next round's transaction (a crash in between leaves
        // them to be recognised by the second side's checkpoint); broker mode acknowledges
        // messages only once their rows are gone, so it deletes them at once.
        self.pending = if self.feed.is_none() {
            consumed_a.iter().copied().collect()
        } else {
            self.delete_consumed(&a, &b, consumed_a.clone()).await?;
            HashSet::new()
        };
        if let Some(feed) = self.feed.as_mut() {
            // Both sides' consumed rows are gone now: acknowledge their messages, and let the
            // next round drop the checkpoint entries that guarded them.
            let mut done_a: HashSet<i64> = consumed_a.iter().copied().collect();
            done_a.extend(&gone[0]);
            let mut done_b: HashSet<i64> = consumed_b.iter().copied().collect();
            done_b.extend(&gone[1]);
            feed.settle(&a, &done_a, &b, &done_b).await;
            feed.prune = [consumed_a, consumed_b];
        }

        if !trail.is_empty() {
            tracing::trace!(link = %self.name, keys = %trail.join("; "), "round committed");
        }
        let done = now_us();
        for (ei, ent) in self.entities.iter().enumerate() {
            for (si, from, to) in [(0usize, &a, &b), (1, &b, &a)] {
                let (n, oldest, pos) = per_dir.get(&(ei, si)).copied().unwrap_or((0, done, 0));
                let lag = ((done - oldest).max(0) as f64) / 1e6;
                self.record_dir(ent, from, to, lag, (n > 0).then_some(pos), n);
            }
        }
        self.quarantine_lags();
        let conflicts: Vec<Value> = conflicts.iter().map(ConflictRecord::to_json).collect();
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
        Ok(Step::Busy)
    }

    /// Deletes the first side's changelog rows `seqs` (applied to the second side) in a
    /// transaction of their own.
    pub(super) async fn delete_consumed(
        &mut self,
        a: &str,
        b: &str,
        seqs: Vec<i64>,
    ) -> Result<(), SyncError> {
        let cleanup = ApplyBatch {
            source: self.source(b),
            consumed: seqs,
            ..ApplyBatch::default()
        };
        timed(a, "cleanup", self.store(a).apply(&cleanup)).await?;
        Ok(())
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

/// Inside the open transaction on one side: locks the round's keys, then reads the changes to
/// them that were not seen this round.
pub(super) async fn lock_and_fetch(
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
        store.fetch_unseen(&work.pks, &work.seen, anywhere),
    )
    .await
}

/// One side's part of locking a round's keys.
#[derive(Default)]
pub(super) struct LockWork {
    /// Keys to lock, by table.
    pub(super) by_table: HashMap<String, Vec<Row>>,
    /// The same keys as (table, key text).
    pub(super) pks: HashSet<(String, String)>,
    /// Changelog rows of this side already read this round.
    pub(super) seen: HashSet<i64>,
}
