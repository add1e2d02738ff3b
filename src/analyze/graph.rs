//! The weighted table graph: one node per table, an edge wherever evidence ties two tables,
//! weighted by kind of evidence (see [`Weights`]).
//!
//! Transactions and requests are weighed by association, not raw counts, so that 100,000
//! transactions neither drown the foreign keys nor let noise across groups pull tables
//! together: for each pair the weight is the kind's weight × `co / sqrt(n_a × n_b)` (the Ochiai
//! coefficient), where `n_a` counts the observations touching `a` and each observation of
//! `k` tables adds `count / (k − 1)` to `co` of each of its pairs. Within transactions a pair
//! where either table is only read counts half.

use std::collections::{BTreeMap, HashMap};

use super::evidence::Kind;

/// How much each kind of evidence weighs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// A declared foreign key (an inferred one weighs this × its confidence).
    pub foreign_key: f64,
    /// Full association in transactions (always written together, never apart).
    pub transaction: f64,
    /// Full association in requests to endpoints.
    pub request: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            foreign_key: 1.0,
            transaction: 3.0,
            request: 1.0,
        }
    }
}

/// An observation resolved to table indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// Transaction or request.
    pub kind: Kind,
    /// Tables touched (sorted, distinct).
    pub tables: Vec<usize>,
    /// Tables written (sorted, distinct).
    pub writes: Vec<usize>,
    /// Name, if any.
    pub name: Option<String>,
    /// Times seen.
    pub count: u64,
}

/// An undirected weighted graph over `n` nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    /// Node count.
    pub n: usize,
    /// Edge weights by `(low, high)` node pair; no self-loops.
    pub edges: BTreeMap<(usize, usize), f64>,
}

impl Graph {
    /// A graph of `n` nodes and no edges.
    pub fn new(n: usize) -> Graph {
        Graph {
            n,
            edges: BTreeMap::new(),
        }
    }

    /// Adds `w` to the edge between `a` and `b` (nothing for a self-loop or `w <= 0`).
    pub fn add(&mut self, a: usize, b: usize, w: f64) {
        if a == b || w <= 0.0 || !w.is_finite() {
            return;
        }
        *self.edges.entry((a.min(b), a.max(b))).or_default() += w;
    }

    /// Each node's neighbours with the edge weights.
    pub fn adjacency(&self) -> Vec<Vec<(usize, f64)>> {
        let mut adj = vec![Vec::new(); self.n];
        for (&(a, b), &w) in &self.edges {
            adj[a].push((b, w));
            adj[b].push((a, w));
        }
        adj
    }

    /// Each node's weighted degree.
    pub fn degrees(&self) -> Vec<f64> {
        let mut d = vec![0.0; self.n];
        for (&(a, b), &w) in &self.edges {
            d[a] += w;
            d[b] += w;
        }
        d
    }

    /// Sum of edge weights.
    pub fn total(&self) -> f64 {
        self.edges.values().sum()
    }

    /// Newman's modularity of a partition (`label[node]`), in [-0.5, 1); 0 for no edges.
    pub fn modularity(&self, label: &[usize]) -> f64 {
        let m = self.total();
        if m <= 0.0 {
            return 0.0;
        }
        let k = label.iter().copied().max().map_or(0, |x| x + 1);
        let mut inside = vec![0.0; k];
        let mut degree = vec![0.0; k];
        for (&(a, b), &w) in &self.edges {
            if label[a] == label[b] {
                inside[label[a]] += w;
            }
            degree[label[a]] += w;
            degree[label[b]] += w;
        }
        (0..k)
            .map(|c| inside[c] / m - (degree[c] / (2.0 * m)).powi(2))
            .sum()
    }
}

/// The table graph: references (declared and inferred) plus the association of tables in
/// transactions and in requests.
pub fn build(
    n: usize,
    references: &[super::schema::Reference],
    seen: &[Seen],
    weights: &Weights,
) -> Graph {
    let mut g = Graph::new(n);
    for r in references {
        g.add(
            r.from,
            r.to,
            weights.foreign_key * r.inferred.unwrap_or(1.0),
        );
    }
    for (kind, w) in [
        (Kind::Transaction, weights.transaction),
        (Kind::Request, weights.request),
    ] {
        let mut touched: HashMap<usize, f64> = HashMap::new();
        let mut co: HashMap<(usize, usize), f64> = HashMap::new();
        for s in seen.iter().filter(|s| s.kind == kind) {
            let count = s.count as f64;
            for &t in &s.tables {
                *touched.entry(t).or_default() += count;
            }
            if s.tables.len() < 2 {
                continue;
            }
            let share = count / (s.tables.len() - 1) as f64;
            for (i, &a) in s.tables.iter().enumerate() {
                for &b in &s.tables[i + 1..] {
                    let both_written =
                        s.writes.binary_search(&a).is_ok() && s.writes.binary_search(&b).is_ok();
                    let f = if kind == Kind::Request || both_written {
                        1.0
                    } else {
                        0.5
                    };
                    *co.entry((a, b)).or_default() += share * f;
                }
            }
        }
        let mut pairs: Vec<_> = co.into_iter().collect();
        pairs.sort_by_key(|p| p.0);
        for ((a, b), c) in pairs {
            let norm = (touched[&a] * touched[&b]).sqrt();
            g.add(a, b, w * c / norm);
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(tables: &[usize], writes: &[usize], count: u64) -> Seen {
        Seen {
            kind: Kind::Transaction,
            tables: tables.to_vec(),
            writes: writes.to_vec(),
            name: None,
            count,
        }
    }

    #[test]
    fn association_is_bounded_and_noise_weighs_little() {
        // 0 and 1 always written together; 2 touched once with 0 among 100 of its own.
        let s = vec![
            seen(&[0, 1], &[0, 1], 100),
            seen(&[0, 2], &[0, 2], 1),
            seen(&[2], &[2], 99),
        ];
        let g = build(3, &[], &s, &Weights::default());
        let w01 = g.edges[&(0, 1)];
        let w02 = g.edges[&(0, 2)];
        assert!(w01 > 2.9 && w01 <= 3.0, "{w01}");
        assert!(w02 < 0.05, "{w02}");
        // Reading alongside counts half.
        let g = build(2, &[], &[seen(&[0, 1], &[0], 5)], &Weights::default());
        assert!((g.edges[&(0, 1)] - 1.5).abs() < 1e-9);
    }

    #[test]
    fn modularity_of_two_joined_triangles() {
        let mut g = Graph::new(6);
        for (a, b) in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)] {
            g.add(a, b, 1.0);
        }
        // Known value: 5/14 ≈ 0.357 for the two triangles.
        let q = g.modularity(&[0, 0, 0, 1, 1, 1]);
        assert!((q - 5.0 / 14.0).abs() < 1e-9, "{q}");
        assert_eq!(g.modularity(&[0; 6]), 0.0);
        assert_eq!(Graph::new(3).modularity(&[0, 1, 2]), 0.0);
        g.add(1, 1, 5.0);
        assert_eq!(g.edges.len(), 7, "self-loops are not edges");
    }
}
