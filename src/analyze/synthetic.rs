//! Synthetic monoliths with planted services, for tests and benchmarks: groups of tables
//! referencing each other and written together, with noise across groups and some foreign
//! keys left undeclared (named so that inference can find them), plus the adjusted Rand index
//! to score how well a split recovers the planted one.

use std::collections::HashMap;

use super::Input;
use super::evidence::{Kind, Observation};
use super::schema::{Schema, Table};
use crate::family::TypeFamily;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Tables in all.
    pub tables: usize,
    /// Tables per planted service (the last may be smaller).
    pub group: usize,
    /// Share of references and transactions that cross groups.
    pub noise: f64,
    /// Share of references left undeclared (a `{table}_id` column only).
    pub undeclared: f64,
    /// Transactions to generate.
    pub transactions: usize,
    /// Seed.
    pub seed: u64,
}

/// A generated monolith and its planted split.
pub struct Planted {
    /// Schema and evidence.
    pub input: Input,
    /// Planted group of each table, in the schema's table order.
    pub groups: Vec<usize>,
}

/// Generates a monolith by the plan.
pub fn generate(plan: &Plan) -> Planted {
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let group_of = |t: usize| t / plan.group.max(1);
    let groups = plan.tables.div_ceil(plan.group.max(1));
    let name = |t: usize| format!("s{:03}_t{:02}", group_of(t), t % plan.group.max(1));
    let members = |g: usize| g * plan.group..((g + 1) * plan.group).min(plan.tables);
    let other = |rng: &mut fastrand::Rng, g: usize| -> usize {
        loop {
            let t = rng.usize(0..plan.tables);
            if group_of(t) != g || groups == 1 {
                return t;
            }
        }
    };
    // References: a tree inside each group, some extra links, some across groups.
    let mut refs: Vec<(usize, usize, bool)> = Vec::new();
    for t in 0..plan.tables {
        let g = group_of(t);
        let first = members(g).start;
        let mut targets = Vec::new();
        if t > first {
            targets.push(rng.usize(first..t));
            if rng.f64() < 0.3 && t > first + 1 {
                targets.push(rng.usize(first..t));
            }
        }
        if rng.f64() < plan.noise {
            targets.push(other(&mut rng, g));
        }
        targets.sort_unstable();
        targets.dedup();
        for to in targets {
            refs.push((t, to, rng.f64() >= plan.undeclared));
        }
    }
    let tables: Vec<Table> = (0..plan.tables)
        .map(|t| {
            let mut columns = vec![
                ("id".to_string(), TypeFamily::Integer),
                ("name".to_string(), TypeFamily::Text),
            ];
            for &(_, to, _) in refs.iter().filter(|r| r.0 == t) {
                columns.push((format!("{}_id", name(to)), TypeFamily::Integer));
            }
            Table {
                name: name(t),
                columns,
                key: vec!["id".into()],
                unique: vec![vec!["id".into()]],
            }
        })
        .collect();
    let mut schema = Schema::new(tables);
    for &(from, to, declared) in &refs {
        if declared {
            let column = format!("{}_id", name(to));
            schema.declare(&name(from), &[&column], &name(to), &["id"]);
        }
    }
    // Transactions: two to four tables of one group, one of them sometimes from another.
    let mut observations = Vec::with_capacity(plan.transactions);
    for _ in 0..plan.transactions {
        let g = rng.usize(0..groups);
        let m: Vec<usize> = members(g).collect();
        let k = rng.usize(2..=4).min(m.len());
        let mut picked: Vec<usize> = Vec::with_capacity(k);
        while picked.len() < k {
            let t = m[rng.usize(0..m.len())];
            if !picked.contains(&t) {
                picked.push(t);
            }
        }
        if rng.f64() < plan.noise {
            let last = picked.len() - 1;
            picked[last] = other(&mut rng, g);
        }
        let writes = rng.usize(1..=picked.len().min(2));
        observations.push(Observation::new(
            Kind::Transaction,
            picked.iter().map(|&t| name(t)),
            picked[..writes].iter().map(|&t| name(t)),
            None,
            1,
        ));
    }
    let order: HashMap<String, usize> = (0..plan.tables).map(|t| (name(t), group_of(t))).collect();
    let groups = schema.tables.iter().map(|t| order[&t.name]).collect();
    Planted {
        input: Input {
            schema,
            observations,
            sources: vec![format!("synthetic monolith {plan:?}")],
            warnings: Vec::new(),
        },
        groups,
    }
}

/// Adjusted Rand index of two labelings of the same items: 1 when identical up to renaming,
/// about 0 for chance agreement.
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    assert_eq!(a.len(), b.len(), "labelings of different lengths");
    let choose2 = |n: u64| (n * n.saturating_sub(1) / 2) as f64;
    let mut both: HashMap<(usize, usize), u64> = HashMap::new();
    let mut rows: HashMap<usize, u64> = HashMap::new();
    let mut cols: HashMap<usize, u64> = HashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *both.entry((x, y)).or_default() += 1;
        *rows.entry(x).or_default() += 1;
        *cols.entry(y).or_default() += 1;
    }
    let index: f64 = both.values().map(|&n| choose2(n)).sum();
    let sa: f64 = rows.values().map(|&n| choose2(n)).sum();
    let sb: f64 = cols.values().map(|&n| choose2(n)).sum();
    let total = choose2(a.len() as u64);
    let expected = if total > 0.0 { sa * sb / total } else { 0.0 };
    let max = (sa + sb) / 2.0;
    if (max - expected).abs() < 1e-12 {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand_index_of_known_labelings() {
        assert_eq!(adjusted_rand_index(&[0, 0, 1, 1], &[5, 5, 3, 3]), 1.0);
        let x = adjusted_rand_index(&[0, 0, 1, 1], &[0, 1, 0, 1]);
        assert!((x - -0.5).abs() < 1e-9, "{x}");
        // scikit-learn's example: ARI([0,0,1,1],[0,0,1,2]) = 0.5714...
        let x = adjusted_rand_index(&[0, 0, 1, 1], &[0, 0, 1, 2]);
        assert!((x - 0.571_428_571).abs() < 1e-6, "{x}");
    }

    #[test]
    fn the_generator_follows_its_plan() {
        let p = generate(&Plan {
            tables: 100,
            group: 10,
            noise: 0.05,
            undeclared: 0.3,
            transactions: 1_000,
            seed: 3,
        });
        assert_eq!(p.input.schema.tables.len(), 100);
        assert_eq!(p.groups.iter().max(), Some(&9));
        assert_eq!(p.input.observations.len(), 1_000);
        let declared = p.input.schema.references.len();
        assert!(
            (60..=140).contains(&declared),
            "{declared} declared references"
        );
    }
}
