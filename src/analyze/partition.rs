//! From the table graph to services: tables that must stay together are folded into one
//! node first (written together above the configured share, `--keep-together` groups), the
//! folded graph is clustered by Louvain, and the result is merged or split to the asked count.

use std::collections::{BTreeMap, HashMap};

use super::graph::Graph;
use super::louvain::{louvain, renumber};

/// Groups of nodes joined by union-find.
pub struct Groups {
    parent: Vec<usize>,
}

impl Groups {
    /// Every node alone.
    pub fn new(n: usize) -> Groups {
        Groups {
            parent: (0..n).collect(),
        }
    }

    /// The group's representative.
    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// Puts `a` and `b` in one group.
    pub fn join(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.parent[a.max(b)] = a.min(b);
        }
    }

    /// Group number per node, 0.. in order of each group's lowest node, and the count.
    pub fn labels(&mut self) -> (Vec<usize>, usize) {
        let roots: Vec<usize> = (0..self.parent.len()).map(|i| self.find(i)).collect();
        renumber(&roots)
    }
}

/// How many services to propose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// As many as give the best modularity.
    Auto,
    /// Exactly this many (fewer only when constraints leave fewer groups).
    Exactly(usize),
}

/// A service label per table. `fold[t]` is the constraint group of table `t`.
pub fn partition(
    graph: &Graph,
    fold: &[usize],
    groups: usize,
    count: Count,
    seed: u64,
) -> Vec<usize> {
    let mut g = Graph::new(groups);
    for (&(a, b), &w) in &graph.edges {
        g.add(fold[a], fold[b], w);
    }
    let mut labels = best_of(&g, seed);
    if count == Count::Auto {
        labels = refine(&g, labels, seed, 3);
    }
    if let Count::Exactly(n) = count {
        let n = n.min(groups);
        let mut k = labels.iter().max().map_or(0, |m| m + 1);
        while k > n {
            labels = merge_best(&g, &labels, k);
            k -= 1;
        }
        while k < n {
            match split_one(&g, &labels, seed) {
                Some(l) => labels = l,
                None => break,
            }
            k += 1;
        }
    }
    let labels = renumber(&labels).0;
    fold.iter().map(|&f| labels[f]).collect()
}

/// Louvain's result depends on the visiting order: of eight orders derived from the seed,
/// the partition with the highest modularity (the first of equals).
fn best_of(g: &Graph, seed: u64) -> Vec<usize> {
    let mut best: Option<(f64, Vec<usize>)> = None;
    for round in 0..8 {
        let labels = louvain(g, seed.wrapping_mul(8).wrapping_add(round));
        let q = g.modularity(&labels);
        if best.as_ref().is_none_or(|(b, _)| q > *b + 1e-12) {
            best = Some((q, labels));
        }
    }
    best.map(|(_, l)| l).unwrap_or_default()
}

/// How strongly a community's own parts must stand apart to be split further: the share of
/// the highest modularity `k` parts can reach (1 − 1/k) that the split reaches.
pub const SPLIT_SHARE: f64 = 0.85;

/// Modularity has a resolution limit: on a large graph it merges groups smaller than about
/// the square root of the total weight. Each community is clustered again on its own, and
/// split when its parts are clearly communities of their own (modularity within it at
/// least [`SPLIT_SHARE`] of the most `k` parts can have), up to `depth` times.
fn refine(g: &Graph, labels: Vec<usize>, seed: u64, depth: u32) -> Vec<usize> {
    if depth == 0 {
        return labels;
    }
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (node, &l) in labels.iter().enumerate() {
        members.entry(l).or_default().push(node);
    }
    let mut out = labels.clone();
    let mut fresh = labels.iter().max().map_or(0, |m| m + 1);
    let mut changed = false;
    for nodes in members.values().filter(|v| v.len() >= 4) {
        let index: HashMap<usize, usize> = nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut sub = Graph::new(nodes.len());
        for (&(a, b), &w) in &g.edges {
            if let (Some(&x), Some(&y)) = (index.get(&a), index.get(&b)) {
                sub.add(x, y, w);
            }
        }
        let parts = best_of(&sub, seed);
        let k = parts.iter().max().map_or(0, |m| m + 1);
        if k < 2 || sub.modularity(&parts) < SPLIT_SHARE * (1.0 - 1.0 / k as f64) {
            continue;
        }
        changed = true;
        for (i, &n) in nodes.iter().enumerate() {
            if parts[i] > 0 {
                out[n] = fresh + parts[i] - 1;
            }
        }
        fresh += k - 1;
    }
    if changed {
        refine(g, renumber(&out).0, seed, depth - 1)
    } else {
        out
    }
}

/// Merges the two communities whose merge costs the least modularity (or gains the most);
/// unconnected ones by smallest degree, then fewest nodes.
fn merge_best(g: &Graph, labels: &[usize], k: usize) -> Vec<usize> {
    let m = g.total();
    let mut degree = vec![0.0; k];
    let mut between: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    for (&(a, b), &w) in &g.edges {
        let (x, y) = (labels[a], labels[b]);
        degree[x] += w;
        degree[y] += w;
        if x != y {
            *between.entry((x.min(y), x.max(y))).or_default() += w;
        }
    }
    let mut size = vec![0usize; k];
    for &l in labels {
        size[l] += 1;
    }
    let delta = |a: usize, b: usize, w: f64| {
        if m > 0.0 {
            w / m - degree[a] * degree[b] / (2.0 * m * m)
        } else {
            0.0
        }
    };
    // Best connected pair.
    let mut best: Option<((usize, usize), f64)> = None;
    for (&(a, b), &w) in &between {
        let d = delta(a, b, w);
        if best.is_none_or(|(_, bd)| d > bd + 1e-15) {
            best = Some(((a, b), d));
        }
    }
    // Best unconnected pair: the two smallest by degree, then size, then number.
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| {
        degree[a]
            .total_cmp(&degree[b])
            .then(size[a].cmp(&size[b]))
            .then(a.cmp(&b))
    });
    let mut lone: Option<((usize, usize), f64)> = None;
    'outer: for (i, &a) in order.iter().enumerate() {
        for &b in &order[i + 1..] {
            if !between.contains_key(&(a.min(b), a.max(b))) {
                lone = Some(((a.min(b), a.max(b)), delta(a, b, 0.0)));
                break 'outer;
            }
        }
        if i > 2 {
            break;
        }
    }
    let ((a, b), _) = match (best, lone) {
        (Some(x), Some(y)) => {
            if y.1 > x.1 + 1e-15 {
                y
            } else {
                x
            }
        }
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => return labels.to_vec(),
    };
    let merged: Vec<usize> = labels.iter().map(|&l| if l == b { a } else { l }).collect();
    renumber(&merged).0
}

/// Splits the community with the most nodes in two; `None` when every community is one node.
fn split_one(g: &Graph, labels: &[usize], seed: u64) -> Option<Vec<usize>> {
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (node, &l) in labels.iter().enumerate() {
        members.entry(l).or_default().push(node);
    }
    let (&target, nodes) = members
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .max_by(|a, b| a.1.len().cmp(&b.1.len()).then(b.0.cmp(a.0)))?;
    let index: HashMap<usize, usize> = nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut sub = Graph::new(nodes.len());
    for (&(a, b), &w) in &g.edges {
        if let (Some(&x), Some(&y)) = (index.get(&a), index.get(&b)) {
            sub.add(x, y, w);
        }
    }
    let mut parts = louvain(&sub, seed);
    let mut k = parts.iter().max().map_or(0, |m| m + 1);
    while k > 2 {
        parts = merge_best(&sub, &parts, k);
        k -= 1;
    }
    if k < 2 {
        // One tight block: the node with the weakest tie to the rest goes alone.
        let degree = sub.degrees();
        let weakest =
            (0..nodes.len()).min_by(|&a, &b| degree[a].total_cmp(&degree[b]).then(b.cmp(&a)))?;
        parts = (0..nodes.len())
            .map(|i| usize::from(i == weakest))
            .collect();
    }
    let fresh = labels.iter().max().map_or(0, |m| m + 1);
    let mut out = labels.to_vec();
    for (i, &n) in nodes.iter().enumerate() {
        if parts[i] == 1 {
            out[n] = fresh;
        }
    }
    debug_assert!(out.contains(&target));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_triangles() -> Graph {
        let mut g = Graph::new(6);
        for (a, b) in [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)] {
            g.add(a, b, 1.0);
        }
        g
    }

    fn count(labels: &[usize]) -> usize {
        labels.iter().max().map_or(0, |m| m + 1)
    }

    #[test]
    fn exact_counts_merge_and_split() {
        let g = two_triangles();
        let fold: Vec<usize> = (0..6).collect();
        let auto = partition(&g, &fold, 6, Count::Auto, 1);
        assert_eq!(auto, [0, 0, 0, 1, 1, 1]);
        assert_eq!(partition(&g, &fold, 6, Count::Exactly(1), 1), [0; 6]);
        for n in 1..=6 {
            assert_eq!(count(&partition(&g, &fold, 6, Count::Exactly(n), 1)), n);
        }
        // Three: one triangle stays whole.
        let three = partition(&g, &fold, 6, Count::Exactly(3), 1);
        assert!(
            three[3] == three[4] && three[4] == three[5]
                || three[0] == three[1] && three[1] == three[2]
        );
    }

    #[test]
    fn folded_groups_stay_together_and_limit_the_count() {
        let g = two_triangles();
        let mut groups = Groups::new(6);
        groups.join(0, 5);
        groups.join(5, 4);
        let (fold, k) = groups.labels();
        assert_eq!(k, 4);
        let labels = partition(&g, &fold, k, Count::Exactly(6), 1);
        assert_eq!(count(&labels), 4);
        assert!(labels[0] == labels[5] && labels[5] == labels[4]);
    }

    #[test]
    fn tables_without_edges_merge_smallest_first() {
        let g = Graph::new(4);
        let fold: Vec<usize> = (0..4).collect();
        assert_eq!(count(&partition(&g, &fold, 4, Count::Auto, 1)), 4);
        assert_eq!(count(&partition(&g, &fold, 4, Count::Exactly(2), 1)), 2);
        let all = partition(&g, &fold, 4, Count::Exactly(1), 1);
        assert_eq!(all, [0; 4]);
    }
}
