//! The analyzer's report: proposed services and why, what the split would cut, cycles and
//! how to break them, quality metrics and an extraction order. Its JSON shape is fixed and
//! documented in the README.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Proposed services, by name.
    pub services: Vec<Service>,
    /// What would cross services.
    pub cut: Cut,
    /// Dependency cycles between services and how to break each.
    pub cycles: Vec<Cycle>,
    /// Quality of the split.
    pub metrics: Metrics,
    /// How many foreign keys were inferred from names and types.
    pub inferred_fks: usize,
    /// Tables named by evidence that the schema does not have, with how often.
    pub unknown_tables: BTreeMap<String, u64>,
    /// Recommended extraction order, first step first.
    pub order: Vec<Step>,
    /// What the analysis was based on.
    pub evidence: Summary,
    /// Things the reader should know (skipped log lines, constraints that limited the count).
    pub warnings: Vec<String>,
    /// Every reference as (from table, to table, inferred), for the picture; not in the JSON.
    #[serde(skip)]
    pub references: Vec<(String, String, bool)>,
}

/// A proposed service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Named after its most referenced table.
    pub name: String,
    /// Its tables, sorted.
    pub tables: Vec<String>,
    /// The evidence that holds it together, strongest first.
    pub why: Vec<String>,
}

/// What the split would cut.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cut {
    /// Foreign keys between tables of different services.
    pub foreign_keys: Vec<CutKey>,
    /// Transactions that would become distributed, most frequent first.
    pub transactions: Vec<CutGroup>,
    /// Endpoints that would call more than one service, most frequent first.
    pub endpoints: Vec<CutGroup>,
}

/// A foreign key between services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CutKey {
    /// Referencing table.
    pub from: String,
    /// Referencing columns.
    pub columns: Vec<String>,
    /// Referenced table.
    pub to: String,
    /// Referenced columns.
    pub references: Vec<String>,
    /// Inferred from names rather than declared.
    pub inferred: bool,
    /// 1 for declared keys, else the inference's confidence.
    pub confidence: f64,
    /// Service of `from`, then service of `to`.
    pub services: [String; 2],
}

/// Transactions or requests touching the same tables across services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CutGroup {
    /// Endpoint or transaction name, when known.
    pub name: Option<String>,
    /// Tables touched.
    pub tables: Vec<String>,
    /// Services those tables belong to.
    pub services: Vec<String>,
    /// Times seen.
    pub count: u64,
}

/// A cycle of dependencies between services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cycle {
    /// Services in the cycle.
    pub services: Vec<String>,
    /// The fewest dependencies whose removal breaks it.
    #[serde(rename = "break")]
    pub breaks: Vec<Break>,
}

/// A dependency to remove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Break {
    /// Dependent service.
    pub from: String,
    /// Service depended on.
    pub to: String,
    /// The references behind it (`orders.customer_id -> customers.id`).
    pub foreign_keys: Vec<String>,
    /// How to remove it.
    pub suggestion: String,
}

/// Quality of the split, each in [0, 1] but modularity (in [-0.5, 1)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Newman modularity of the split on the weighted table graph.
    pub modularity: f64,
    /// Mean over services of their inside weight over their inside plus outgoing weight.
    pub cohesion: f64,
    /// Share of all edge weight that crosses services.
    pub coupling: f64,
    /// Share of transactions (by count) that stay inside one service.
    pub tx_local_share: f64,
}

/// One extraction step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// 1 for the first.
    pub step: usize,
    /// Service to extract.
    pub service: String,
    /// Services still in the monolith that depend on it when it moves.
    pub depended_on_by: Vec<String>,
    /// Services it depends on.
    pub depends_on: Vec<String>,
    /// Tables to keep in sync between the monolith and the service while it moves.
    pub entities: Vec<Entity>,
    /// Tables that cannot be synced as they are: no primary key or unique key.
    pub without_key: Vec<String>,
    /// Path prefixes of the requests that touch only its tables (`/orders`).
    pub paths: Vec<String>,
}

/// A table to sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    /// Table.
    pub table: String,
    /// Its key.
    pub key: Vec<String>,
    /// Its columns, in table order.
    pub columns: Vec<String>,
}

/// What the analysis was based on.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Tables in the schema.
    pub tables: usize,
    /// Declared foreign keys.
    pub declared_fks: usize,
    /// Transactions seen (sum of counts).
    pub transactions: u64,
    /// Requests seen (sum of counts).
    pub requests: u64,
    /// Where evidence came from.
    pub sources: Vec<String>,
}

/// Rounds a metric to four decimals so reports compare equal across runs and machines.
pub fn round(x: f64) -> f64 {
    if x.is_finite() {
        (x * 10_000.0).round() / 10_000.0
    } else {
        0.0
    }
}
