//! Tables that must end up in one service: `--keep-together` groups, and tables written
//! together in one transaction in at least the configured share of the transactions that
//! write either of them (Jaccard: both / either).

use std::collections::HashMap;

use super::AnalyzeError;
use super::evidence::Kind;
use super::graph::Seen;
use super::partition::Groups;
use super::schema::Schema;

/// Why two tables were held together.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// One table.
    pub a: usize,
    /// The other.
    pub b: usize,
    /// Share written together, or `None` for a `--keep-together` group.
    pub share: Option<f64>,
}

/// Folds the tables that must stay together; returns the groups and the reasons.
pub fn hold(
    schema: &Schema,
    seen: &[Seen],
    keep: &[Vec<String>],
    together: f64,
) -> Result<(Groups, Vec<Held>), AnalyzeError> {
    let mut groups = Groups::new(schema.tables.len());
    let mut held = Vec::new();
    for group in keep {
        let mut ids = Vec::new();
        for name in group {
            let id = schema.resolve(name, "").ok_or_else(|| {
                AnalyzeError::Option(format!(
                    "--keep-together {}: no table {name:?} in the schema",
                    group.join(",")
                ))
            })?;
            ids.push(id);
        }
        for w in ids.windows(2) {
            groups.join(w[0], w[1]);
            held.push(Held {
                a: w[0],
                b: w[1],
                share: None,
            });
        }
    }
    if together <= 1.0 {
        let mut written: HashMap<usize, u64> = HashMap::new();
        let mut both: HashMap<(usize, usize), u64> = HashMap::new();
        for s in seen.iter().filter(|s| s.kind == Kind::Transaction) {
            for (i, &a) in s.writes.iter().enumerate() {
                *written.entry(a).or_default() += s.count;
                for &b in &s.writes[i + 1..] {
                    *both.entry((a, b)).or_default() += s.count;
                }
            }
        }
        let mut pairs: Vec<_> = both.into_iter().collect();
        pairs.sort_unstable();
        for ((a, b), n) in pairs {
            let share = n as f64 / (written[&a] + written[&b] - n) as f64;
            if share >= together {
                groups.join(a, b);
                held.push(Held {
                    a,
                    b,
                    share: Some(share),
                });
            }
        }
    }
    Ok((groups, held))
}
