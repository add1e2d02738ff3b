//! Services from labels: each named after its most referenced table, with the evidence that
//! holds it together spelled out.

use std::collections::{BTreeMap, BTreeSet};

use super::constraints::Held;
use super::evidence::Kind;
use super::graph::{Graph, Seen};
use super::report::Service;
use super::schema::Schema;

/// Services in name order, and each table's service number in that order.
pub fn name_services(
    schema: &Schema,
    graph: &Graph,
    labels: &[usize],
    seen: &[Seen],
    held: &[Held],
) -> (Vec<Service>, Vec<usize>) {
    let k = labels.iter().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (t, &l) in labels.iter().enumerate() {
        members[l].push(t);
    }
    let mut referenced = vec![0usize; schema.tables.len()];
    for r in &schema.references {
        if r.from != r.to {
            referenced[r.to] += 1;
        }
    }
    let degree = graph.degrees();
    let heads: Vec<usize> = members
        .iter()
        .map(|m| {
            *m.iter()
                .max_by(|&&a, &&b| {
                    referenced[a]
                        .cmp(&referenced[b])
                        .then(degree[a].total_cmp(&degree[b]))
                        .then(schema.tables[b].name.cmp(&schema.tables[a].name))
                })
                .unwrap_or(&0)
        })
        .collect();
    // Short names unless two services would share one.
    let mut names: Vec<String> = heads
        .iter()
        .map(|&h| schema.tables[h].short().to_string())
        .collect();
    let mut uses: BTreeMap<String, usize> = BTreeMap::new();
    for n in &names {
        *uses.entry(n.clone()).or_default() += 1;
    }
    for (i, n) in names.iter_mut().enumerate() {
        if uses[n.as_str()] > 1 {
            *n = schema.tables[heads[i]].name.replace('.', "_");
        }
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| names[a].cmp(&names[b]).then(a.cmp(&b)));
    let mut rank = vec![0; k];
    for (r, &l) in order.iter().enumerate() {
        rank[l] = r;
    }
    let services = order
        .iter()
        .map(|&l| Service {
            name: names[l].clone(),
            tables: {
                let mut t: Vec<String> = members[l]
                    .iter()
                    .map(|&i| schema.tables[i].name.clone())
                    .collect();
                t.sort();
                t
            },
            why: why(
                schema,
                &members[l],
                heads[l],
                referenced[heads[l]],
                labels,
                l,
                seen,
                held,
            ),
        })
        .collect();
    (services, labels.iter().map(|&l| rank[l]).collect())
}

/// The evidence for one service, strongest first.
#[allow(clippy::too_many_arguments)]
fn why(
    schema: &Schema,
    members: &[usize],
    head: usize,
    head_refs: usize,
    labels: &[usize],
    label: usize,
    seen: &[Seen],
    held: &[Held],
) -> Vec<String> {
    let mut out = Vec::new();
    let inside = |t: usize| labels[t] == label;
    let mut kept: BTreeSet<String> = BTreeSet::new();
    for h in held.iter().filter(|h| inside(h.a)) {
        let (a, b) = (&schema.tables[h.a].name, &schema.tables[h.b].name);
        kept.insert(match h.share {
            Some(s) => format!(
                "{a} and {b} are written together in {:.0}% of the transactions writing either",
                s * 100.0
            ),
            None => format!("{a} and {b} kept together (--keep-together)"),
        });
    }
    out.extend(kept);
    let (mut declared, mut inferred) = (0, 0);
    for r in &schema.references {
        if inside(r.from) && inside(r.to) && r.from != r.to {
            if r.inferred.is_some() {
                inferred += 1;
            } else {
                declared += 1;
            }
        }
    }
    if declared + inferred > 0 {
        out.push(format!(
            "{} foreign keys inside it ({declared} declared, {inferred} inferred)",
            declared + inferred
        ));
    }
    for (kind, what) in [
        (Kind::Transaction, "transactions"),
        (Kind::Request, "requests"),
    ] {
        let local: u64 = seen
            .iter()
            .filter(|s| s.kind == kind && s.tables.len() > 1 && s.tables.iter().all(|&t| inside(t)))
            .map(|s| s.count)
            .sum();
        if local > 0 {
            out.push(format!(
                "{local} {what} touch two or more of its tables and no other"
            ));
        }
    }
    if members.len() > 1 && head_refs > 0 {
        out.push(format!(
            "named after {}, referenced by {head_refs} foreign keys",
            schema.tables[head].name
        ));
    }
    if out.is_empty() {
        out.push(if members.len() == 1 {
            "no foreign key, transaction or request ties it to another table".to_string()
        } else {
            "grouped to reach the requested number of services".to_string()
        });
    }
    out
}
