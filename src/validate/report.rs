//! The validation report: a fixed JSON shape (documented in the README) and its text form.

use std::collections::BTreeMap;

use serde::Serialize;

use super::compare::{Example, Kind};
use super::drift::Drift;

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No entity differs.
    pub consistent: bool,
    /// One report per entity, in config order.
    pub entities: Vec<EntityReport>,
}

/// One entity's findings.
#[derive(Debug, Clone, Serialize)]
pub struct EntityReport {
    /// Entity name.
    pub entity: String,
    /// Nothing differs on this entity.
    pub consistent: bool,
    /// `strict`, `eventual` or `sampled`.
    pub level: String,
    /// Rows read, by side.
    pub rows: BTreeMap<String, u64>,
    /// Keys found on one side only, by the side that has them.
    pub only_in: BTreeMap<String, u64>,
    /// Keys on both sides with different values.
    pub changed: u64,
    /// Per compared column (left names): rows where it differs.
    pub changed_columns: BTreeMap<String, u64>,
    /// Extra rows sharing a key, by side.
    pub duplicate_keys: BTreeMap<String, u64>,
    /// Rows the mapping cannot carry to the other side, by side.
    pub invalid: BTreeMap<String, u64>,
    /// Mapped columns whose types can hold different values, once per column.
    pub drift: Vec<Drift>,
    /// The first examples of each kind (`missing`, `extra`, `changed`, `duplicate_key`,
    /// `invalid`), keys in left-side column names.
    pub examples: BTreeMap<String, Vec<Example>>,
    /// Eventual level: keys that differed in the pass and were compared again after the lag
    /// tolerance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rechecked: Option<u64>,
    /// Sampled level: what the sample covered and the bound it gives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<SampleBound>,
    /// What a repair did or would do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairReport>,
    /// How the rows were compared.
    pub method: Method,
    /// Wall time of the entity's run.
    pub duration_ms: u64,
}

/// How an entity's rows were compared.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Method {
    /// `checksum` (segment checksums in SQL, then only what differs), `merge` (every row
    /// read and compared) or `keys` (a re-check of given keys only).
    pub by: String,
    /// Why a checksum run fell back to the merge, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Keys whose row hashes were compared one by one.
    pub hashes_compared: u64,
    /// Keys whose rows were read in full and compared value by value.
    pub rows_compared: u64,
}

/// A sampled run's coverage and confidence bound.
#[derive(Debug, Clone, Serialize)]
pub struct SampleBound {
    /// The share of keys drawn.
    pub share: f64,
    /// Keys compared.
    pub compared: u64,
    /// Of those, keys that differ.
    pub differing: u64,
    /// Upper bound of the share of differing keys in the whole table, at 95 % confidence
    /// (Wilson score interval; 3/n when none differ and n is large).
    pub upper_bound_95: f64,
}

/// A repair's plan and outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Only planned (`--dry-run`).
    pub dry_run: bool,
    /// The side whose rows were written (the authority's opposite).
    pub target: String,
    /// Rows written (inserted or updated) or planned to be.
    pub upserts: u64,
    /// Rows deleted or planned to be.
    pub deletes: u64,
    /// Keys left to the sync engine: a write on the target raced the repair.
    pub deferred: u64,
    /// After the repair: keys that still differ (a fresh comparison of the repaired keys).
    pub still_different: u64,
    /// The planned actions, in key order (the first 1,000).
    pub actions: Vec<Action>,
}

/// One planned repair action.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// Key values by left key column.
    pub key: serde_json::Map<String, serde_json::Value>,
    /// `upsert` or `delete`.
    pub action: &'static str,
    /// The side written.
    pub to: String,
    /// Why: the discrepancy kind.
    pub why: &'static str,
}

/// The Wilson upper bound at 95 % of a proportion seen `k` times in `n`.
pub fn wilson_upper(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let (k, n) = (k as f64, n as f64);
    let z = 1.959_963_984_540_054_f64;
    let p = k / n;
    let centre = p + z * z / (2.0 * n);
    let margin = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt();
    ((centre + margin) / (1.0 + z * z / n)).min(1.0)
}

/// The examples map keyed by kind name.
pub fn examples(by_kind: &BTreeMap<Kind, Vec<Example>>) -> BTreeMap<String, Vec<Example>> {
    by_kind
        .iter()
        .map(|(k, v)| (k.name().to_string(), v.clone()))
        .collect()
}

impl Report {
    /// The report as text for a terminal.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for e in &self.entities {
            let rows = e
                .rows
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "entity {}: {} ({} level; rows {rows}; {} ms)\n",
                e.entity,
                if e.consistent {
                    "consistent"
                } else {
                    "DIFFERENT"
                },
                e.level,
                e.duration_ms
            ));
            for (side, n) in e.only_in.iter().filter(|(_, n)| **n > 0) {
                out.push_str(&format!("  {n} keys only in {side}\n"));
            }
            if e.changed > 0 {
                let cols = e
                    .changed_columns
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                out.push_str(&format!("  {} keys changed ({cols})\n", e.changed));
            }
            for (side, n) in e.duplicate_keys.iter().filter(|(_, n)| **n > 0) {
                out.push_str(&format!("  {n} duplicate key rows in {side}\n"));
            }
            for (side, n) in e.invalid.iter().filter(|(_, n)| **n > 0) {
                out.push_str(&format!("  {n} rows in {side} the mapping cannot carry\n"));
            }
            for d in &e.drift {
                out.push_str(&format!(
                    "  drift: column {} is {} on the left, {} on the right ({})\n",
                    d.column, d.left, d.right, d.why
                ));
            }
            for (kind, list) in &e.examples {
                for ex in list {
                    out.push_str(&format!(
                        "  {kind}: key {} {}\n",
                        serde_json::Value::Object(ex.key.clone()),
                        ex.error
                            .clone()
                            .unwrap_or_else(
                                || serde_json::Value::Object(ex.columns.clone()).to_string()
                            )
                    ));
                }
            }
            if let Some(s) = &e.sample {
                out.push_str(&format!(
                    "  sampled {} keys ({:.1} %): {} differ; at 95 % confidence at most {:.3} % of the table differs\n",
                    s.compared,
                    s.share * 100.0,
                    s.differing,
                    s.upper_bound_95 * 100.0
                ));
            }
            if let Some(r) = &e.repair {
                if r.dry_run {
                    out.push_str(&format!(
                        "  repair plan: {} upserts and {} deletes on {}\n",
                        r.upserts, r.deletes, r.target
                    ));
                    for a in &r.actions {
                        out.push_str(&format!(
                            "    {} {} on {} ({})\n",
                            a.action,
                            serde_json::Value::Object(a.key.clone()),
                            a.to,
                            a.why
                        ));
                    }
                } else {
                    out.push_str(&format!(
                        "  repaired on {}: {} upserts, {} deletes, {} deferred to the sync engine; {} still different\n",
                        r.target, r.upserts, r.deletes, r.deferred, r.still_different
                    ));
                }
            }
        }
        out.push_str(if self.consistent {
            "consistent\n"
        } else {
            "discrepancies found\n"
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_bound() {
        assert!((wilson_upper(0, 1000) - 0.00383).abs() < 0.0002);
        assert!(wilson_upper(10, 100) > 0.1 && wilson_upper(10, 100) < 0.18);
        assert_eq!(wilson_upper(0, 0), 1.0);
    }
}
