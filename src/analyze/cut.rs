//! What a split cuts (foreign keys, transactions, endpoints across services) and how good it
//! is (modularity, cohesion, coupling, share of local transactions).

use std::collections::BTreeMap;

use super::evidence::Kind;
use super::graph::{Graph, Seen};
use super::report::{Cut, CutGroup, CutKey, Metrics, Service, round};
use super::schema::Schema;

/// The references, transactions and requests that cross services.
pub fn cut(schema: &Schema, services: &[Service], label: &[usize], seen: &[Seen]) -> Cut {
    let name = |t: usize| services[label[t]].name.clone();
    let mut out = Cut::default();
    for r in &schema.references {
        if label[r.from] != label[r.to] {
            out.foreign_keys.push(CutKey {
                from: schema.tables[r.from].name.clone(),
                columns: r.columns.clone(),
                to: schema.tables[r.to].name.clone(),
                references: r.references.clone(),
                inferred: r.inferred.is_some(),
                confidence: round(r.inferred.unwrap_or(1.0)),
                services: [name(r.from), name(r.to)],
            });
        }
    }
    out.foreign_keys
        .sort_by(|a, b| (&a.from, &a.columns, &a.to).cmp(&(&b.from, &b.columns, &b.to)));
    for (kind, list) in [
        (Kind::Transaction, &mut out.transactions),
        (Kind::Request, &mut out.endpoints),
    ] {
        let mut groups: BTreeMap<(Option<String>, Vec<usize>), u64> = BTreeMap::new();
        for s in seen.iter().filter(|s| s.kind == kind) {
            let first = label[s.tables[0]];
            if s.tables.iter().all(|&t| label[t] == first) {
                continue;
            }
            // Requests are grouped by endpoint; unnamed transactions by their tables.
            let key = match (&s.name, kind) {
                (Some(n), Kind::Request) => (Some(n.clone()), Vec::new()),
                _ => (s.name.clone(), s.tables.clone()),
            };
            *groups.entry(key).or_default() += s.count;
        }
        for ((n, tables), count) in groups {
            let tables: Vec<usize> = if tables.is_empty() {
                let mut all: Vec<usize> = seen
                    .iter()
                    .filter(|s| s.kind == kind && s.name == n)
                    .flat_map(|s| s.tables.iter().copied())
                    .collect();
                all.sort_unstable();
                all.dedup();
                all
            } else {
                tables
            };
            let mut svc: Vec<String> = tables.iter().map(|&t| name(t)).collect();
            svc.sort();
            svc.dedup();
            list.push(CutGroup {
                name: n,
                tables: tables
                    .iter()
                    .map(|&t| schema.tables[t].name.clone())
                    .collect(),
                services: svc,
                count,
            });
        }
        list.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.tables.cmp(&b.tables))
                .then(a.name.cmp(&b.name))
        });
    }
    out
}

/// Modularity, cohesion, coupling and the share of transactions that stay local.
pub fn metrics(graph: &Graph, label: &[usize], services: usize, seen: &[Seen]) -> Metrics {
    let mut inside = vec![0.0; services];
    let mut outside = vec![0.0; services];
    let mut crossing = 0.0;
    for (&(a, b), &w) in &graph.edges {
        if label[a] == label[b] {
            inside[label[a]] += w;
        } else {
            outside[label[a]] += w;
            outside[label[b]] += w;
            crossing += w;
        }
    }
    let total = graph.total();
    let tied: Vec<f64> = (0..services)
        .filter(|&s| inside[s] + outside[s] > 0.0)
        .map(|s| inside[s] / (inside[s] + outside[s]))
        .collect();
    let (mut local, mut all) = (0u64, 0u64);
    for s in seen.iter().filter(|s| s.kind == Kind::Transaction) {
        all += s.count;
        if s.tables.iter().all(|&t| label[t] == label[s.tables[0]]) {
            local += s.count;
        }
    }
    Metrics {
        modularity: round(graph.modularity(label)),
        cohesion: round(if tied.is_empty() {
            1.0
        } else {
            tied.iter().sum::<f64>() / tied.len() as f64
        }),
        coupling: round(if total > 0.0 { crossing / total } else { 0.0 }),
        tx_local_share: round(if all > 0 {
            local as f64 / all as f64
        } else {
            1.0
        }),
    }
}
