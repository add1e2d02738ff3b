//! Cycles between proposed services: strongly connected components of the service
//! dependency graph (Tarjan, from petgraph), and for each the fewest dependencies whose
//! removal breaks it.

use std::collections::BTreeMap;

use petgraph::graph::DiGraph;

/// A dependency edge between services: `from` depends on `to` through `weight` references.
pub type Edge = ((usize, usize), usize);

/// The components of more than one service, each as sorted service numbers.
pub fn components(services: usize, edges: &BTreeMap<(usize, usize), usize>) -> Vec<Vec<usize>> {
    let mut g: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<_> = (0..services).map(|s| g.add_node(s)).collect();
    for &(a, b) in edges.keys() {
        if a != b {
            g.add_edge(nodes[a], nodes[b], ());
        }
    }
    let mut out: Vec<Vec<usize>> = petgraph::algo::tarjan_scc(&g)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut v: Vec<usize> = c.into_iter().map(|n| g[n]).collect();
            v.sort_unstable();
            v
        })
        .collect();
    out.sort();
    out
}

/// The fewest edges of a component whose removal leaves it without a cycle; among equally
/// few, those carrying the fewest references. Exhaustive up to 20,000 candidate sets, then
/// the Eades–Lin–Smyth ordering's backward edges.
pub fn breaking_set(component: &[usize], edges: &BTreeMap<(usize, usize), usize>) -> Vec<Edge> {
    let inner: Vec<Edge> = edges
        .iter()
        .filter(|((a, b), _)| a != b && component.contains(a) && component.contains(b))
        .map(|(&e, &w)| (e, w))
        .collect();
    let mut budget: u64 = 20_000;
    for size in 1..=inner.len() {
        let mut best: Option<(usize, Vec<usize>)> = None;
        let mut pick: Vec<usize> = (0..size).collect();
        loop {
            if budget == 0 {
                return eades(component, &inner);
            }
            budget -= 1;
            let kept: Vec<Edge> = inner
                .iter()
                .enumerate()
                .filter(|(i, _)| !pick.contains(i))
                .map(|(_, e)| *e)
                .collect();
            if acyclic(component, &kept) {
                let cost: usize = pick.iter().map(|&i| inner[i].1).sum();
                if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                    best = Some((cost, pick.clone()));
                }
            }
            if !next_combination(&mut pick, inner.len()) {
                break;
            }
        }
        if let Some((_, pick)) = best {
            return pick.into_iter().map(|i| inner[i]).collect();
        }
    }
    Vec::new()
}

fn next_combination(pick: &mut [usize], n: usize) -> bool {
    let k = pick.len();
    for i in (0..k).rev() {
        if pick[i] < n - k + i {
            pick[i] += 1;
            for j in i + 1..k {
                pick[j] = pick[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

fn acyclic(nodes: &[usize], edges: &[Edge]) -> bool {
    let mut g: DiGraph<(), ()> = DiGraph::new();
    let idx: BTreeMap<usize, _> = nodes.iter().map(|&n| (n, g.add_node(()))).collect();
    for ((a, b), _) in edges {
        g.add_edge(idx[a], idx[b], ());
    }
    !petgraph::algo::is_cyclic_directed(&g)
}

/// Eades–Lin–Smyth: order nodes (sinks last, sources first, else the largest out − in
/// first); edges pointing backwards in that order break every cycle.
fn eades(component: &[usize], edges: &[Edge]) -> Vec<Edge> {
    let mut left: Vec<usize> = component.to_vec();
    let mut head = Vec::new();
    let mut tail = Vec::new();
    while !left.is_empty() {
        let live = |n: usize, out: bool, left: &[usize]| -> usize {
            edges
                .iter()
                .filter(|((a, b), _)| {
                    let (me, other) = if out { (a, b) } else { (b, a) };
                    *me == n && left.contains(other)
                })
                .map(|(_, w)| w)
                .sum()
        };
        if let Some(p) = left.iter().position(|&n| live(n, true, &left) == 0) {
            tail.push(left.remove(p));
        } else if let Some(p) = left.iter().position(|&n| live(n, false, &left) == 0) {
            head.push(left.remove(p));
        } else {
            let p = (0..left.len())
                .max_by_key(|&i| {
                    let n = left[i];
                    (
                        live(n, true, &left) as i64 - live(n, false, &left) as i64,
                        -(i as i64),
                    )
                })
                .unwrap_or(0);
            head.push(left.remove(p));
        }
    }
    tail.reverse();
    head.extend(tail);
    let pos: BTreeMap<usize, usize> = head.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    edges
        .iter()
        .filter(|((a, b), _)| pos[a] > pos[b])
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_way_dependency_is_found_and_its_lighter_edge_broken() {
        let edges: BTreeMap<_, _> = [((0, 1), 3), ((1, 0), 1), ((1, 2), 2)].into();
        let c = components(3, &edges);
        assert_eq!(c, [vec![0, 1]]);
        assert_eq!(breaking_set(&c[0], &edges), [((1, 0), 1)]);
    }

    #[test]
    fn two_overlapping_cycles_need_one_shared_edge() {
        // 0→1→2→0 and 0→1→3→0: breaking 0→1 breaks both.
        let edges: BTreeMap<_, _> = [
            ((0, 1), 1),
            ((1, 2), 1),
            ((2, 0), 1),
            ((1, 3), 1),
            ((3, 0), 1),
        ]
        .into();
        let c = components(4, &edges);
        assert_eq!(c, [vec![0, 1, 2, 3]]);
        assert_eq!(breaking_set(&c[0], &edges), [((0, 1), 1)]);
        assert!(components(2, &[((0, 1), 1)].into()).is_empty());
    }

    #[test]
    fn large_components_fall_back_to_an_ordering_that_still_breaks_every_cycle() {
        // Everything depends on everything among 12 services: 132 edges.
        let mut edges = BTreeMap::new();
        for a in 0..12 {
            for b in 0..12 {
                if a != b {
                    edges.insert((a, b), 1);
                }
            }
        }
        let c = components(12, &edges);
        let cut = breaking_set(&c[0], &edges);
        let kept: Vec<Edge> = edges
            .iter()
            .map(|(&e, &w)| (e, w))
            .filter(|e| !cut.contains(e))
            .collect();
        assert!(acyclic(&c[0], &kept));
        assert_eq!(cut.len(), 66, "a tournament's minimum is half its edges");
    }
}
