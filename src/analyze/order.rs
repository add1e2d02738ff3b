//! Dependencies between proposed services (a foreign key from a table of A to a table of B
//! makes A depend on B): their cycles with a way to break each, and the order in which to
//! extract the services, the one fewest others depend on first.

use std::collections::{BTreeMap, BTreeSet};

use super::cycles::{breaking_set, components};
use super::evidence::Kind;
use super::graph::{Graph, Seen};
use super::report::{Break, Cycle, Entity, Service, Step};
use super::schema::Schema;

/// Service dependency edges with how many references carry each.
pub fn dependencies(schema: &Schema, label: &[usize]) -> BTreeMap<(usize, usize), usize> {
    let mut edges = BTreeMap::new();
    for r in &schema.references {
        let (a, b) = (label[r.from], label[r.to]);
        if a != b {
            *edges.entry((a, b)).or_default() += 1;
        }
    }
    edges
}

/// Each cycle between services with the fewest dependencies to break and how.
pub fn cycles(
    schema: &Schema,
    graph: &Graph,
    services: &[Service],
    label: &[usize],
    edges: &BTreeMap<(usize, usize), usize>,
) -> Vec<Cycle> {
    let adj = graph.adjacency();
    components(services.len(), edges)
        .into_iter()
        .map(|c| Cycle {
            services: c.iter().map(|&s| services[s].name.clone()).collect(),
            breaks: breaking_set(&c, edges)
                .into_iter()
                .map(|((a, b), _)| {
                    let refs: Vec<_> = schema
                        .references
                        .iter()
                        .filter(|r| label[r.from] == a && label[r.to] == b)
                        .collect();
                    let keys: Vec<String> = refs
                        .iter()
                        .map(|r| {
                            format!(
                                "{}.{} -> {}.{}",
                                schema.tables[r.from].name,
                                r.columns.join(","),
                                schema.tables[r.to].name,
                                r.references.join(",")
                            )
                        })
                        .collect();
                    let sources: BTreeSet<usize> = refs.iter().map(|r| r.from).collect();
                    let (from, to) = (&services[a].name, &services[b].name);
                    let mut suggestion = format!(
                        "replace {} with an API call from {from} to {to}, or with events {to} \
                         publishes and {from} keeps a copy of",
                        if keys.len() == 1 {
                            "the foreign key"
                        } else {
                            "these foreign keys"
                        }
                    );
                    if let [t] = sources.iter().copied().collect::<Vec<_>>()[..] {
                        let tie = |s: usize| -> f64 {
                            adj[t]
                                .iter()
                                .filter(|(u, _)| label[*u] == s && *u != t)
                                .map(|(_, w)| w)
                                .sum()
                        };
                        if tie(b) > tie(a) {
                            suggestion = format!(
                                "move {} from {from} to {to}: it is tied more to {to} ({:.2}) than \
                                 to the rest of {from} ({:.2})",
                                schema.tables[t].name,
                                tie(b),
                                tie(a)
                            );
                        }
                    }
                    Break {
                        from: from.clone(),
                        to: to.clone(),
                        foreign_keys: keys,
                        suggestion,
                    }
                })
                .collect(),
        })
        .collect()
}

/// Extraction steps: repeatedly the remaining service that the fewest remaining services
/// depend on (then the one depending on fewest, then the smaller, then by name); services
/// with nothing to sync (no table with a key) come last.
pub fn extraction(
    schema: &Schema,
    services: &[Service],
    label: &[usize],
    edges: &BTreeMap<(usize, usize), usize>,
    seen: &[Seen],
) -> Vec<Step> {
    let mut left: BTreeSet<usize> = (0..services.len()).collect();
    let mut steps = Vec::new();
    while !left.is_empty() {
        let incoming = |s: usize| {
            edges
                .keys()
                .filter(|(a, b)| *b == s && *a != s && left.contains(a))
                .count()
        };
        let outgoing = |s: usize| edges.keys().filter(|(a, b)| *a == s && *b != s).count();
        let keyless = |s: usize| {
            !schema
                .tables
                .iter()
                .enumerate()
                .any(|(t, table)| label[t] == s && !table.key.is_empty())
        };
        let Some(&next) = left.iter().min_by(|&&x, &&y| {
            keyless(x)
                .cmp(&keyless(y))
                .then(incoming(x).cmp(&incoming(y)))
                .then(outgoing(x).cmp(&outgoing(y)))
                .then(services[x].tables.len().cmp(&services[y].tables.len()))
                .then(services[x].name.cmp(&services[y].name))
        }) else {
            break;
        };
        let names = |set: Vec<usize>| -> Vec<String> {
            let mut v: Vec<String> = set.into_iter().map(|s| services[s].name.clone()).collect();
            v.sort();
            v
        };
        let depended_on_by = names(
            edges
                .keys()
                .filter(|(a, b)| *b == next && *a != next && left.contains(a))
                .map(|(a, _)| *a)
                .collect(),
        );
        let depends_on = names(
            edges
                .keys()
                .filter(|(a, b)| *a == next && *b != next)
                .map(|(_, b)| *b)
                .collect(),
        );
        let mut entities = Vec::new();
        let mut without_key = Vec::new();
        for (t, table) in schema.tables.iter().enumerate() {
            if label[t] != next {
                continue;
            }
            if table.key.is_empty() {
                without_key.push(table.name.clone());
            } else {
                entities.push(Entity {
                    table: table.name.clone(),
                    key: table.key.clone(),
                    columns: table.columns.iter().map(|(c, _)| c.clone()).collect(),
                });
            }
        }
        let paths: BTreeSet<String> = seen
            .iter()
            .filter(|s| s.kind == Kind::Request && s.tables.iter().all(|&t| label[t] == next))
            .filter_map(|s| path_prefix(s.name.as_deref()?))
            .collect();
        left.remove(&next);
        steps.push(Step {
            step: steps.len() + 1,
            service: services[next].name.clone(),
            depended_on_by,
            depends_on,
            entities,
            without_key,
            paths: paths.into_iter().collect(),
        });
    }
    steps
}

/// The first path segment of an endpoint name: `POST /orders/{id}` → `/orders`.
fn path_prefix(name: &str) -> Option<String> {
    let path = name.split_whitespace().find(|w| w.starts_with('/'))?;
    let first = path.trim_start_matches('/').split(['/', '?']).next()?;
    if first.is_empty() || first.starts_with('{') || first.starts_with(':') {
        return None;
    }
    Some(format!("/{first}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoint_names_give_their_first_segment() {
        use super::path_prefix;
        assert_eq!(path_prefix("POST /orders/{id}").as_deref(), Some("/orders"));
        assert_eq!(path_prefix("GET /carts?x=1").as_deref(), Some("/carts"));
        assert_eq!(path_prefix("GET /").as_deref(), None);
        assert_eq!(path_prefix("checkout").as_deref(), None);
    }
}
