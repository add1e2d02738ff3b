//! What the engine is doing, for `GET /admin/sync` and `GET /admin/conflicts`: per entity and
//! direction the lag, the last applied position and the state; the most recent conflicts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};

/// Conflicts kept in memory for the admin API (all are also in the control database).
const RECENT_CONFLICTS: usize = 1000;

/// One direction of one entity.
#[derive(Debug, Clone, Default)]
struct Direction {
    lag_seconds: f64,
    last_position: Option<i64>,
    applied: u64,
}

/// A change set aside because it could not be decoded, mapped or applied. It stays in its
/// side's changelog; later changes to its key wait with it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Quarantined {
    /// Id for `POST /admin/sync/quarantine/{id}/retry`.
    pub id: u64,
    /// The link that set it aside.
    pub link: String,
    /// Side whose changelog holds it.
    pub side: String,
    /// Entity.
    pub entity: String,
    /// Table on that side.
    pub table: String,
    /// Key values joined as the changelog stores them.
    pub key: String,
    /// Changelog sequence number.
    pub seq: i64,
    /// Why it was set aside.
    pub reason: String,
    /// Attempts made before it was.
    pub attempts: u32,
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// Later changes to the same key waiting with it.
    pub held: Vec<i64>,
}

#[derive(Debug, Default)]
struct Inner {
    directions: BTreeMap<(String, String, String), Direction>,
    paused: BTreeMap<String, String>,
    links: BTreeMap<String, String>,
    conflicts: VecDeque<Value>,
    quarantine: BTreeMap<u64, Quarantined>,
    retries: Vec<u64>,
    next_id: u64,
    /// Per link and side, the highest changelog sequence counted into `cowrites`.
    counted: BTreeMap<(String, String), i64>,
    /// Per side, how many captured source transactions wrote exactly these tables.
    cowrites: BTreeMap<(String, Vec<String>), u64>,
}

/// Most distinct table sets kept per process for the analyzer; further ones are not counted.
const MAX_COWRITE_SHAPES: usize = 10_000;

/// Shared engine status.
#[derive(Debug, Default)]
pub struct SyncStatus {
    inner: Mutex<Inner>,
    /// Keys written to watched entities, for the validator's re-checks.
    pub touched: super::touched::Touched,
}

impl SyncStatus {
    /// Counts the tables each captured source transaction in `changes` wrote (a change
    /// without a transaction id counts alone), each change once however often it is read.
    pub fn record_transactions(&self, link: &str, side: &str, changes: &[crate::store::Change]) {
        if changes.is_empty() {
            return;
        }
        self.with(|i| {
            let mark = i
                .counted
                .entry((link.to_string(), side.to_string()))
                .or_insert(i64::MIN);
            let from = *mark;
            let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for c in changes.iter().filter(|c| c.seq > from) {
                *mark = (*mark).max(c.seq);
                let key = c.tx.clone().unwrap_or_else(|| format!("seq{}", c.seq));
                groups.entry(key).or_default().push(c.table.clone());
            }
            for (_, mut tables) in groups {
                tables.sort();
                tables.dedup();
                let key = (side.to_string(), tables);
                if i.cowrites.len() < MAX_COWRITE_SHAPES || i.cowrites.contains_key(&key) {
                    *i.cowrites.entry(key).or_default() += 1;
                }
            }
        })
    }

    /// The table sets written by captured transactions on `side`, with how many did.
    pub fn transactions(&self, side: &str) -> Vec<(Vec<String>, u64)> {
        self.with(|i| {
            i.cowrites
                .iter()
                .filter(|((s, _), _)| s == side)
                .map(|((_, t), n)| (t.clone(), *n))
                .collect()
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Records a round's outcome for one entity and direction.
    pub fn applied(
        &self,
        entity: &str,
        from: &str,
        to: &str,
        lag: f64,
        position: Option<i64>,
        n: u64,
    ) {
        self.with(|i| {
            let d = i
                .directions
                .entry((entity.into(), from.into(), to.into()))
                .or_default();
            d.lag_seconds = lag;
            if position.is_some() {
                d.last_position = position;
            }
            d.applied += n;
        });
    }

    /// Sets an entity's pause reason (`None` resumes it).
    pub fn set_paused(&self, entity: &str, reason: Option<String>) {
        self.with(|i| match reason {
            Some(r) => {
                i.paused.insert(entity.into(), r);
            }
            None => {
                i.paused.remove(entity);
            }
        });
    }

    /// Sets a link's state (`running`, or the error it is retrying after).
    pub fn set_link(&self, link: &str, state: String) {
        self.with(|i| {
            i.links.insert(link.into(), state);
        });
    }

    /// Remembers a conflict record.
    pub fn conflict(&self, record: Value) {
        self.with(|i| {
            if i.conflicts.len() == RECENT_CONFLICTS {
                i.conflicts.pop_front();
            }
            i.conflicts.push_back(record);
        });
    }

    /// Lists a quarantined change; returns its id.
    pub fn quarantine(&self, mut q: Quarantined) -> u64 {
        self.with(|i| {
            i.next_id += 1;
            q.id = i.next_id;
            let gauge =
                metrics::gauge!(crate::metrics::SYNC_QUARANTINED, "entity" => q.entity.clone());
            i.quarantine.insert(q.id, q);
            gauge.increment(1.0);
            i.next_id
        })
    }

    /// Notes a later change to a quarantined change's key, waiting with it.
    pub fn hold(&self, id: u64, seq: i64) {
        self.with(|i| {
            if let Some(q) = i.quarantine.get_mut(&id)
                && q.seq != seq
                && !q.held.contains(&seq)
            {
                q.held.push(seq);
            }
        });
    }

    /// Asks for a quarantined change to be tried again; false when there is no such id.
    pub fn request_retry(&self, id: u64) -> bool {
        self.with(|i| {
            let known = i.quarantine.contains_key(&id);
            if known && !i.retries.contains(&id) {
                i.retries.push(id);
            }
            known
        })
    }

    /// Takes the retry requests for `link`'s quarantined changes, dropping them from the list.
    pub fn take_retries(&self, link: &str) -> Vec<u64> {
        self.with(|i| {
            let mine: Vec<u64> = i
                .retries
                .iter()
                .copied()
                .filter(|id| i.quarantine.get(id).is_some_and(|q| q.link == link))
                .collect();
            i.retries.retain(|id| !mine.contains(id));
            for id in &mine {
                if let Some(q) = i.quarantine.remove(id) {
                    metrics::gauge!(crate::metrics::SYNC_QUARANTINED, "entity" => q.entity)
                        .decrement(1.0);
                }
            }
            mine
        })
    }

    /// Quarantined changes, oldest first.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.with(|i| i.quarantine.values().cloned().collect())
    }

    /// Most recent conflicts, newest first.
    pub fn conflicts(&self, limit: usize) -> Vec<Value> {
        self.with(|i| i.conflicts.iter().rev().take(limit).cloned().collect())
    }

    /// The `GET /admin/sync` document.
    pub fn snapshot(&self) -> Value {
        self.with(|i| {
            let directions: Vec<Value> = i
                .directions
                .iter()
                .map(|((e, from, to), d)| {
                    let state = match (i.paused.get(e), i.links.get(&link_name(from, to))) {
                        (Some(r), _) => format!("paused: {r}"),
                        (None, Some(s)) => s.clone(),
                        (None, None) => "starting".into(),
                    };
                    json!({
                        "entity": e, "from": from, "to": to,
                        "lag_seconds": d.lag_seconds,
                        "last_applied_position": d.last_position,
                        "applied": d.applied,
                        "state": state,
                    })
                })
                .collect();
            json!({
                "directions": directions,
                "paused": i.paused,
                "links": i.links,
                "quarantine": i.quarantine.values().collect::<Vec<_>>(),
            })
        })
    }
}

/// A link's name: its two sides in name order.
pub fn link_name(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a}<->{b}")
    } else {
        format!("{b}<->{a}")
    }
}
