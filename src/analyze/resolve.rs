//! Evidence names resolved to the schema's tables, identical observations added up; names the
//! schema lacks are counted.

use std::collections::BTreeMap;

use ahash::AHashMap;

use super::evidence::{Kind, Observation};
use super::graph::Seen;
use super::schema::Schema;

/// What makes two observations the same: kind, tables, written tables, name.
type Shape = (Kind, Vec<usize>, Vec<usize>, Option<String>);

/// Resolves and aggregates observations; returns them (sorted) with the unknown table names
/// counted.
pub fn resolve(
    schema: &Schema,
    observations: Vec<Observation>,
) -> (Vec<Seen>, BTreeMap<String, u64>) {
    let mut cache: AHashMap<String, Option<usize>> = AHashMap::new();
    let mut unknown: BTreeMap<String, u64> = BTreeMap::new();
    let mut sum: AHashMap<Shape, u64> = AHashMap::new();
    let mut lookup = |name: &String| -> Option<usize> {
        if let Some(hit) = cache.get(name) {
            return *hit;
        }
        let hit = schema.resolve(name, "");
        cache.insert(name.clone(), hit);
        hit
    };
    for o in observations {
        let mut tables = Vec::with_capacity(o.tables.len());
        for t in &o.tables {
            match lookup(t) {
                Some(i) => tables.push(i),
                None => *unknown.entry(t.clone()).or_default() += o.count,
            }
        }
        if tables.is_empty() || o.count == 0 {
            continue;
        }
        let mut writes: Vec<usize> = o.writes.iter().filter_map(&mut lookup).collect();
        tables.sort_unstable();
        tables.dedup();
        writes.sort_unstable();
        writes.dedup();
        *sum.entry((o.kind, tables, writes, o.name)).or_default() += o.count;
    }
    let mut seen: Vec<Seen> = sum
        .into_iter()
        .map(|((kind, tables, writes, name), count)| Seen {
            kind,
            tables,
            writes,
            name,
            count,
        })
        .collect();
    seen.sort_by(|a, b| {
        (a.kind, &a.tables, &a.writes, &a.name).cmp(&(b.kind, &b.tables, &b.writes, &b.name))
    });
    (seen, unknown)
}
