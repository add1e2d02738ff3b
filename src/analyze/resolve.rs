//! Evidence names resolved to the schema's tables; names the schema lacks are counted.

use std::collections::{BTreeMap, HashMap};

use super::evidence::{Observation, aggregate};
use super::graph::Seen;
use super::schema::Schema;

/// Resolves and aggregates observations; returns them with the unknown table names counted.
pub fn resolve(
    schema: &Schema,
    observations: Vec<Observation>,
) -> (Vec<Seen>, BTreeMap<String, u64>) {
    let mut cache: HashMap<String, Option<usize>> = HashMap::new();
    let mut unknown: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = Vec::new();
    for o in aggregate(observations) {
        let mut lookup = |name: &String, unknown: &mut BTreeMap<String, u64>| {
            let hit = *cache
                .entry(name.clone())
                .or_insert_with(|| schema.resolve(name, ""));
            if hit.is_none() {
                *unknown.entry(name.clone()).or_default() += o.count;
            }
            hit
        };
        let mut tables: Vec<usize> = o
            .tables
            .iter()
            .filter_map(|t| lookup(t, &mut unknown))
            .collect();
        let mut writes: Vec<usize> = o
            .writes
            .iter()
            .filter_map(|t| cache.get(t).copied().flatten())
            .collect();
        tables.sort_unstable();
        tables.dedup();
        writes.sort_unstable();
        writes.dedup();
        if tables.is_empty() {
            continue;
        }
        seen.push(Seen {
            kind: o.kind,
            tables,
            writes,
            name: o.name,
            count: o.count,
        });
    }
    (seen, unknown)
}
