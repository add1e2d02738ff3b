//! Keys the sync engine (and the gateway's write tap) saw written, kept for the validator's
//! targeted re-checks: per watched entity, each key with when it was last written, oldest
//! first. Only watched entities keep keys, and at most [`LIMIT`] each; past that the entity
//! is marked overflowed, and its watcher runs a full pass instead.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::Row;

/// Keys kept per entity.
pub const LIMIT: usize = 100_000;

#[derive(Debug, Default)]
struct Keys {
    order: VecDeque<(Instant, String)>,
    rows: HashMap<String, (Instant, Row)>,
    overflowed: bool,
}

/// Written keys per watched entity.
#[derive(Debug, Default)]
pub struct Touched {
    inner: Mutex<BTreeMap<String, Keys>>,
}

/// What is due for a re-check.
#[derive(Debug, Default, PartialEq)]
pub struct Due {
    /// Keys (left-side column names) last written before the cut-off.
    pub keys: Vec<Row>,
    /// Keys were dropped past the limit since the last take: only a full pass is sure.
    pub overflowed: bool,
}

impl Touched {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Keys>) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Starts keeping the keys written to `entity`.
    pub fn watch(&self, entity: &str) {
        self.with(|m| {
            m.entry(entity.to_string()).or_default();
        });
    }

    /// Notes a write of `key` (left-side column names) to `entity`, if it is watched.
    pub fn note(&self, entity: &str, key: &Row) {
        self.with(|m| {
            let Some(k) = m.get_mut(entity) else { return };
            let id = serde_json::to_string(key).unwrap_or_default();
            let now = Instant::now();
            if k.rows.insert(id.clone(), (now, key.clone())).is_none() && k.rows.len() > LIMIT {
                k.rows.remove(&id);
                k.overflowed = true;
                return;
            }
            k.order.push_back((now, id));
        });
    }

    /// Takes the keys of `entity` last written at least `age` ago.
    pub fn take(&self, entity: &str, age: Duration) -> Due {
        self.with(|m| {
            let Some(k) = m.get_mut(entity) else {
                return Due::default();
            };
            let mut due = Due {
                keys: Vec::new(),
                overflowed: std::mem::take(&mut k.overflowed),
            };
            let now = Instant::now();
            while let Some((at, _)) = k.order.front() {
                if now.duration_since(*at) < age {
                    break;
                }
                let (at, id) = k.order.pop_front().expect("front");
                // A later write of the key has its own, younger entry.
                if k.rows.get(&id).is_some_and(|(last, _)| *last == at)
                    && let Some((_, row)) = k.rows.remove(&id)
                {
                    due.keys.push(row);
                }
            }
            due
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(id: i64) -> Row {
        [("id".to_string(), json!(id))].into_iter().collect()
    }

    #[test]
    fn keys_come_due_once_after_their_last_write() {
        let t = Touched::default();
        t.note("users", &key(1));
        assert_eq!(t.take("users", Duration::ZERO), Due::default(), "unwatched");
        t.watch("users");
        t.note("users", &key(1));
        t.note("users", &key(2));
        t.note("users", &key(1));
        assert!(t.take("users", Duration::from_secs(60)).keys.is_empty());
        let due = t.take("users", Duration::ZERO);
        assert_eq!(due.keys, vec![key(2), key(1)]);
        assert!(t.take("users", Duration::ZERO).keys.is_empty());
        for i in 0..=LIMIT as i64 {
            t.note("users", &key(i));
        }
        let due = t.take("users", Duration::ZERO);
        assert!(due.overflowed);
        assert_eq!(due.keys.len(), LIMIT);
        assert!(!t.take("users", Duration::ZERO).overflowed);
    }
}
