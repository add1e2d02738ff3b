//! Conflict resolution: a key changed on both sides since it last synced. Every policy is a
//! pure function of the two sides' changes, so re-running a round after a crash settles a
//! conflict the same way.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::config::sync::{EntityConfig, Policy, SyncConfig};
use crate::store::Row;
use crate::sync::error::SyncError;

/// One side's net change to a key, in the entity's left form.
#[derive(Debug, Clone, PartialEq)]
pub struct SideChange {
    /// Side name.
    pub side: String,
    /// Row before this side's first change (`None` for an insert).
    pub base: Option<Row>,
    /// Row after this side's last change (`None` when it ended deleted).
    pub row: Option<Row>,
    /// Capture stamp of the last change: (physical µs, sequence).
    pub stamp: (i64, i64),
    /// Per numeric column, the sum of each change's own delta (new − old). Differs from
    /// `row − base` when the engine wrote the row between two of this side's changes.
    pub deltas: std::collections::BTreeMap<String, f64>,
}

/// A custom column rule, registered in code under a name and chosen with `custom:NAME`.
pub trait ConflictRule: Send + Sync {
    /// The value a column takes, given the common base and both sides' values.
    fn resolve(&self, column: &str, base: Option<&Value>, left: &Value, right: &Value) -> Value;
}

/// Custom rules by name.
pub type Rules = HashMap<String, Arc<dyn ConflictRule>>;

/// One side's part of a recorded conflict.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SideImage {
    /// Side name.
    pub side: String,
    /// Row before the side's first change.
    pub base: Option<Row>,
    /// Row after the side's last change.
    pub row: Option<Row>,
    /// Capture time of the last change, Unix µs.
    pub stamp_us: i64,
    /// Changelog sequence number of the last change.
    pub seq: i64,
}

impl From<&SideChange> for SideImage {
    fn from(c: &SideChange) -> SideImage {
        SideImage {
            side: c.side.clone(),
            base: c.base.clone(),
            row: c.row.clone(),
            stamp_us: c.stamp.0,
            seq: c.stamp.1,
        }
    }
}

/// A settled conflict, as `GET /admin/conflicts` shows it and the control database keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConflictRecord {
    /// When it was settled, Unix ms.
    pub at_ms: i64,
    /// Entity.
    pub entity: String,
    /// The key, in the entity's left form.
    pub key: Row,
    /// The entity's row policy.
    pub policy: String,
    /// Column policies, by column.
    pub column_policies: std::collections::BTreeMap<String, String>,
    /// The left side's change.
    pub left: SideImage,
    /// The right side's change.
    pub right: SideImage,
    /// `left`, `right` or `merged`.
    pub outcome: &'static str,
    /// The row both sides end with (`None`: deleted on both).
    pub result: Option<Row>,
}

impl ConflictRecord {
    /// The record as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// How a conflict was settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The row both sides end with (`None`: deleted on both).
    pub row: Option<Row>,
    /// `left`, `right` or `merged`.
    pub outcome: &'static str,
}

/// Orders two changes for last-write-wins: later stamp; on a tie a delete; then the larger image.
fn later(a: &SideChange, b: &SideChange) -> Ordering {
    a.stamp
        .0
        .cmp(&b.stamp.0)
        .then_with(|| b.row.is_some().cmp(&a.row.is_some()))
        .then_with(|| {
            let ta = a.row.as_ref().map(|r| Value::Object(r.clone()).to_string());
            let tb = b.row.as_ref().map(|r| Value::Object(r.clone()).to_string());
            ta.cmp(&tb)
        })
        .then_with(|| a.side.cmp(&b.side))
}

fn pick(left: &SideChange, right: &SideChange, left_wins: bool) -> Resolution {
    if left_wins {
        Resolution {
            row: left.row.clone(),
            outcome: "left",
        }
    } else {
        Resolution {
            row: right.row.clone(),
            outcome: "right",
        }
    }
}

fn number(v: Option<&Value>) -> f64 {
    v.and_then(Value::as_f64).unwrap_or(0.0)
}

fn num_value(x: f64, like: &Value) -> Value {
    if like.is_i64() || like.is_u64() || (like.is_null() && x.fract() == 0.0) {
        Value::from(x.round() as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Settles a conflict on one key under the entity's policies.
pub fn resolve(
    entity: &EntityConfig,
    rules: &Rules,
    left: &SideChange,
    right: &SideChange,
) -> Resolution {
    let lww_left = later(left, right) == Ordering::Greater;
    let mut res = match entity.conflict {
        Policy::Priority => pick(left, right, entity.priority == left.side),
        Policy::Custom(ref name) => match (&left.row, &right.row, rules.get(name)) {
            (Some(l), Some(r), Some(rule)) => {
                let base = left.base.as_ref().or(right.base.as_ref());
                let mut out = l.clone();
                for (c, lv) in l {
                    let rv = r.get(c).unwrap_or(&Value::Null);
                    out.insert(
                        c.clone(),
                        rule.resolve(c, base.and_then(|b| b.get(c)), lv, rv),
                    );
                }
                return Resolution {
                    row: Some(out),
                    outcome: "merged",
                };
            }
            _ => pick(left, right, lww_left),
        },
        Policy::FieldMerge => match (&left.row, &right.row) {
            (Some(l), Some(r)) => {
                let base = left.base.as_ref().or(right.base.as_ref());
                let mut out = Row::new();
                for (c, lv) in l {
                    let rv = r.get(c).unwrap_or(&Value::Null);
                    let bv = base.and_then(|b| b.get(c));
                    let lch = bv != Some(lv);
                    let rch = bv != Some(rv);
                    let v = match (lch, rch) {
                        (true, false) => lv.clone(),
                        (false, true) => rv.clone(),
                        _ if lww_left => lv.clone(),
                        _ => rv.clone(),
                    };
                    out.insert(c.clone(), v);
                }
                Resolution {
                    row: Some(out),
                    outcome: "merged",
                }
            }
            _ => pick(left, right, lww_left),
        },
        // Counter, max, min and prefer-non-null settle a column; for a whole row the config
        // check refuses them, and they would mean last-write-wins.
        Policy::LastWriteWins
        | Policy::Counter
        | Policy::Max
        | Policy::Min
        | Policy::PreferNonNull => pick(left, right, lww_left),
    };
    // Column policies refine a surviving row when both sides still have one.
    if let (Some(row), Some(l), Some(r)) = (res.row.as_mut(), &left.row, &right.row) {
        let base = left.base.as_ref().or(right.base.as_ref());
        let mut touched = false;
        for (c, p) in &entity.column_conflict {
            let lv = l.get(c).unwrap_or(&Value::Null);
            let rv = r.get(c).unwrap_or(&Value::Null);
            let bv = base.and_then(|b| b.get(c));
            let v = match p {
                Policy::Counter => {
                    let b = number(bv);
                    // A side whose change began with an insert (an initial copy, or a row
                    // created on both sides) states a value, not an increment: it adds what
                    // it holds beyond the common base, never its whole value on top of it.
                    let delta = |ch: &SideChange, v: &Value| match ch.base {
                        None => number(Some(v)) - b,
                        Some(_) => ch.deltas.get(c).copied().unwrap_or(number(Some(v)) - b),
                    };
                    num_value(b + delta(left, lv) + delta(right, rv), lv)
                }
                Policy::Max => std::cmp::max_by(lv, rv, |a, b| compare(a, b)).clone(),
                Policy::Min => std::cmp::min_by(lv, rv, |a, b| compare(a, b)).clone(),
                Policy::PreferNonNull => match (lv.is_null(), rv.is_null()) {
                    (false, true) => lv.clone(),
                    (true, false) => rv.clone(),
                    _ if lww_left => lv.clone(),
                    _ => rv.clone(),
                },
                Policy::Priority => {
                    if entity.priority == left.side {
                        lv.clone()
                    } else {
                        rv.clone()
                    }
                }
                // An unregistered rule is refused before the engine starts (`rules_known`).
                Policy::Custom(name) => match rules.get(name) {
                    Some(rule) => rule.resolve(c, bv, lv, rv),
                    None => continue,
                },
                Policy::LastWriteWins | Policy::FieldMerge => {
                    if lww_left {
                        lv.clone()
                    } else {
                        rv.clone()
                    }
                }
            };
            if row.get(c) != Some(&v) {
                touched = true;
            }
            row.insert(c.clone(), v);
        }
        if touched {
            res.outcome = "merged";
        }
    }
    res
}

/// Refuses a config whose `custom:NAME` policies name rules not in `rules`.
pub fn rules_known(cfg: &SyncConfig, rules: &Rules) -> Result<(), SyncError> {
    for e in &cfg.entities {
        let named = std::iter::once(&e.conflict).chain(e.column_conflict.values());
        for p in named {
            if let Policy::Custom(rule) = p
                && !rules.contains_key(rule)
            {
                let mut names: Vec<&str> = rules.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(SyncError::UnknownRule {
                    entity: e.name.clone(),
                    rule: rule.clone(),
                    registered: if names.is_empty() {
                        "none are".into()
                    } else {
                        format!("registered: {}", names.join(", "))
                    },
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sync::{EntityTable, SyncSettings};
    use serde_json::json;

    fn entity(conflict: Policy, columns: &[(&str, Policy)]) -> EntityConfig {
        let _ = SyncSettings::default();
        let t = |s: &str| EntityTable {
            side: s.into(),
            table: "t".into(),
            key: vec!["id".into()],
        };
        EntityConfig {
            group: "e".into(),
            on_error: crate::config::sync::OnError::Quarantine,
            validation: Default::default(),
            backfill: false,
            name: "e".into(),
            left: t("a"),
            right: t("b"),
            columns: vec![],
            transforms: vec![],
            authority: "a".into(),
            priority: "a".into(),
            conflict,
            column_conflict: columns
                .iter()
                .map(|(c, p)| (c.to_string(), p.clone()))
                .collect(),
            lag_tolerance: std::time::Duration::from_secs(1),
        }
    }

    fn ch(side: &str, base: Value, row: Value, ts: i64) -> SideChange {
        let obj = |v: Value| v.as_object().cloned();
        SideChange {
            side: side.into(),
            base: obj(base),
            row: obj(row),
            stamp: (ts, 1),
            deltas: Default::default(),
        }
    }

    #[test]
    fn policies() {
        let base = json!({"id": 1, "name": "x", "email": "e", "stock": 10});
        let l = ch(
            "a",
            base.clone(),
            json!({"id": 1, "name": "L", "email": "e", "stock": 7}),
            100,
        );
        let r = ch(
            "b",
            base.clone(),
            json!({"id": 1, "name": "x", "email": "R", "stock": 12}),
            200,
        );
        let rules = Rules::new();
        let lww = resolve(&entity(Policy::LastWriteWins, &[]), &rules, &l, &r);
        assert_eq!(lww.row.unwrap()["name"], "x");
        let pr = resolve(&entity(Policy::Priority, &[]), &rules, &l, &r);
        assert_eq!(pr.row.unwrap()["name"], "L");
        let fm = resolve(
            &entity(Policy::FieldMerge, &[("stock", Policy::Counter)]),
            &rules,
            &l,
            &r,
        );
        let row = fm.row.unwrap();
        assert_eq!(
            (
                row["name"].clone(),
                row["email"].clone(),
                row["stock"].clone()
            ),
            (json!("L"), json!("R"), json!(9))
        );
        // An initial copy (an insert, no base) meeting an increment of the row it copies:
        // the increment counts once, the copied value is not added on top of the base.
        let mut copy = ch(
            "a",
            Value::Null,
            json!({"id": 1, "name": "x", "stock": 6}),
            100,
        );
        copy.deltas.insert("stock".into(), 6.0);
        let mut inc = ch(
            "b",
            json!({"id": 1, "name": "x", "stock": 6}),
            json!({"id": 1, "name": "x", "stock": 7}),
            200,
        );
        inc.deltas.insert("stock".into(), 1.0);
        let counter = entity(Policy::FieldMerge, &[("stock", Policy::Counter)]);
        for (a, b) in [(&copy, &inc), (&inc, &copy)] {
            let row = resolve(&counter, &rules, a, b).row.unwrap();
            assert_eq!(row["stock"], json!(7));
        }
        // Both sides inserted the key: their values add up, as before.
        let mut other = ch(
            "b",
            Value::Null,
            json!({"id": 1, "name": "x", "stock": 4}),
            200,
        );
        other.deltas.insert("stock".into(), 4.0);
        assert_eq!(
            resolve(&counter, &rules, &copy, &other).row.unwrap()["stock"],
            json!(10)
        );
        // Tie: the delete wins.
        let d = ch("b", base.clone(), Value::Null, 100);
        assert_eq!(
            resolve(&entity(Policy::LastWriteWins, &[]), &rules, &l, &d).row,
            None
        );
    }
}
