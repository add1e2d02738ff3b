//! Round step 4, settle: each key's net change on each side becomes a write to the other
//! side; a key changed on both sides is settled by the entity's conflict policy, written to
//! both, and recorded as a [`ConflictRecord`].

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::plan::*;
use super::round::Round;
use super::*;
use crate::config::sync::OnError;
use crate::store::{Row, Write};
use crate::sync::conflict::{self, ConflictRecord};

/// The writes a round settled on.
pub(super) struct Settled {
    /// Writes to each side, in the changelog order of the changes behind them.
    pub(super) writes: [Vec<Write>; 2],
    /// Second-side changes settled against a first-side change: the first side receives the
    /// settled row, not their own, so its checkpoint does not list them.
    pub(super) conflicted: HashSet<i64>,
    /// The conflicts settled.
    pub(super) conflicts: Vec<ConflictRecord>,
    /// Per (entity, source side): changes carried, oldest capture time, newest sequence.
    pub(super) per_dir: HashMap<(usize, usize), (u64, i64, i64)>,
    /// With trace logging on: each key and the changes behind it.
    pub(super) trail: Vec<String>,
}

impl<O: Origin> Link<O> {
    /// Settles every group; `Err((group index, message))` for a key that cannot be mapped.
    pub(super) fn settle(&self, r: &Round, groups: &[Group]) -> Result<Settled, (usize, String)> {
        let [a, b] = &r.sides;
        let mut to_a: Vec<(i64, Write)> = Vec::new();
        let mut to_b: Vec<(i64, Write)> = Vec::new();
        let mut out = Settled {
            writes: Default::default(),
            conflicted: HashSet::new(),
            conflicts: Vec::new(),
            per_dir: HashMap::new(),
            trail: Vec::new(),
        };
        let now = now_us();
        for (gi, g) in groups.iter().enumerate() {
            let ent = &self.entities[g.ent];
            let mapping = ent.mapping.as_ref().expect("active entity");
            let (na, nb) = (net(a, &g.a), net(b, &g.b));
            if tracing::enabled!(tracing::Level::TRACE) {
                out.trail.push(format!(
                    "{} {} a={:?} b={:?}",
                    ent.cfg.name,
                    Value::Object(g.key.clone()),
                    g.a.iter().map(|p| p.seq).collect::<Vec<_>>(),
                    g.b.iter().map(|p| p.seq).collect::<Vec<_>>()
                ));
            }
            for (si, ps) in [(0usize, &g.a), (1, &g.b)] {
                for p in ps {
                    let e = out.per_dir.entry((g.ent, si)).or_insert((0, i64::MAX, 0));
                    e.0 += 1;
                    e.1 = e.1.min(p.ts);
                    e.2 = e.2.max(p.seq);
                }
            }
            let w = |side: &str, row: &Option<Row>| {
                write(mapping, side, row, &g.key).map_err(|m| (gi, m))
            };
            match (&na, &nb) {
                (Some(x), None) => to_b.push((g.a[0].seq, w(b, &x.row)?)),
                (None, Some(y)) => to_a.push((g.b[0].seq, w(a, &y.row)?)),
                (Some(x), Some(y)) => {
                    let (left, right) = if mapping.is_left(a) { (x, y) } else { (y, x) };
                    let res = conflict::resolve(&ent.cfg, &self.rules, left, right);
                    to_a.push((g.b[0].seq, w(a, &res.row)?));
                    to_b.push((g.a[0].seq, w(b, &res.row)?));
                    out.conflicted.extend(g.b.iter().map(|p| p.seq));
                    let policy = ent.cfg.conflict.name();
                    metrics::counter!(m::SYNC_CONFLICTS, "entity" => ent.cfg.name.clone(), "policy" => policy.clone()).increment(1);
                    out.conflicts.push(ConflictRecord {
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
        to_a.sort_by_key(|(s, _)| *s);
        to_b.sort_by_key(|(s, _)| *s);
        out.writes = [to_a, to_b].map(|ws| ws.into_iter().map(|(_, w)| w).collect());
        Ok(out)
    }

    /// A key whose change cannot be mapped: both transactions roll back, and its entity
    /// pauses or the key's changes on both sides are set aside together.
    pub(super) async fn unmappable(
        &mut self,
        r: &Round,
        g: &Group,
        msg: String,
    ) -> Result<Step, SyncError> {
        let [a, b] = &r.sides;
        self.rollback(a, b).await?;
        if self.entities[g.ent].cfg.on_error == OnError::Pause {
            return Err(self.bad(g.ent, msg));
        }
        // The key's changes on both sides wait together; the first is the one listed.
        let [ra, rb] = &r.changes;
        let find = |r: &[Change], seq: i64| r.iter().find(|c| c.seq == seq).cloned();
        let members: Vec<(usize, Change)> =
            g.a.iter()
                .filter_map(|p| find(ra, p.seq).map(|c| (0, c)))
                .chain(g.b.iter().filter_map(|p| find(rb, p.seq).map(|c| (1, c))))
                .collect();
        if let Some((si, head)) = members.first() {
            let id = self.set_aside(*si, g.ent, head, format!("cannot map the change: {msg}"), 1);
            for (sj, c) in &members[1..] {
                self.hold_with(id, *sj, c);
            }
        }
        Ok(Step::Again)
    }
}
