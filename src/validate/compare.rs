//! The streaming merge of both sides' key-ordered rows: equal keys compare by row hash, then
//! column by column where the hashes differ; a key on one side only is missing or extra; a key
//! repeated on one side is a duplicate. Memory stays bounded by the pages in flight plus the
//! keys that differ, and the cost per row is the same whether 0 % or 100 % of rows differ.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::ValidateError;
use super::plan::{Item, KeyPart, Plan};
use super::scan::Cursor;

/// What is wrong with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Only on the authority side: the other side lacks it.
    Missing,
    /// Only on the side that is not the authority.
    Extra,
    /// On both sides with different values.
    Changed,
    /// More than one row with the key on a side that does not enforce it.
    DuplicateKey,
    /// A row the mapping cannot carry to the other side's form.
    Invalid,
}

impl Kind {
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Extra => "extra",
            Kind::Changed => "changed",
            Kind::DuplicateKey => "duplicate_key",
            Kind::Invalid => "invalid",
        }
    }
}

/// One example discrepancy for the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Example {
    /// Key values by left key column.
    pub key: Map<String, Value>,
    /// The side it was seen on (missing, extra, duplicate, invalid rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side: Option<String>,
    /// Changed rows: each differing column's values on both sides; other kinds: the row's
    /// compared values.
    pub columns: Map<String, Value>,
    /// Why a row is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a pass found on one entity.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Rows read, by side index (0 left, 1 right).
    pub rows: [u64; 2],
    /// Keys on this side only.
    pub only_in: [u64; 2],
    /// Keys on both sides with different values.
    pub changed: u64,
    /// Per compared column: rows where it differs.
    pub changed_columns: BTreeMap<String, u64>,
    /// Extra rows sharing a key, by side.
    pub duplicates: [u64; 2],
    /// Rows that cannot be mapped, by side.
    pub invalid: [u64; 2],
    /// The first examples of each kind.
    pub examples: BTreeMap<Kind, Vec<Example>>,
    /// Every differing key with its kind (duplicates and invalid rows are not repairable
    /// and not listed).
    pub keys: Vec<(Vec<KeyPart>, Kind)>,
}

impl Tally {
    /// Whether anything differs.
    pub fn differs(&self) -> bool {
        self.only_in.iter().any(|n| *n > 0)
            || self.changed > 0
            || self.duplicates.iter().any(|n| *n > 0)
            || self.invalid.iter().any(|n| *n > 0)
    }
}

/// Compares two key-ordered streams of rows; `examples` per kind are kept.
pub async fn merge(
    plan: &Plan,
    left: &mut Cursor,
    right: &mut Cursor,
    examples: usize,
    progress: Option<&std::sync::atomic::AtomicU64>,
) -> Result<Tally, ValidateError> {
    let mut m = Merger {
        plan,
        tally: Tally::default(),
        examples,
        progress,
    };
    let mut a = m.next(left, 0).await?;
    let mut b = m.next(right, 1).await?;
    loop {
        match (a.take(), b.take()) {
            (None, None) => break,
            (Some(x), None) => {
                m.only(0, &x);
                a = m.next(left, 0).await?;
            }
            (None, Some(y)) => {
                m.only(1, &y);
                b = m.next(right, 1).await?;
            }
            (Some(x), Some(y)) => match x.cmp_key(&y) {
                std::cmp::Ordering::Less => {
                    m.only(0, &x);
                    a = m.next(left, 0).await?;
                    b = Some(y);
                }
                std::cmp::Ordering::Greater => {
                    m.only(1, &y);
                    a = Some(x);
                    b = m.next(right, 1).await?;
                }
                std::cmp::Ordering::Equal => {
                    m.both(&x, &y);
                    a = m.next(left, 0).await?;
                    b = m.next(right, 1).await?;
                }
            },
        }
    }
    Ok(m.tally)
}

struct Merger<'a> {
    plan: &'a Plan,
    tally: Tally,
    examples: usize,
    progress: Option<&'a std::sync::atomic::AtomicU64>,
}

impl Merger<'_> {
    /// The next distinct key of a side; rows repeating it are counted as duplicates.
    async fn next(&mut self, c: &mut Cursor, side: usize) -> Result<Option<Item>, ValidateError> {
        let Some(item) = c.next().await? else {
            return Ok(None);
        };
        self.tally.rows[side] += 1;
        if side == 0
            && let Some(p) = self.progress
        {
            p.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        while let Some(dup) = c.peek().await? {
            if dup.key != item.key {
                break;
            }
            let dup = c.next().await?.unwrap_or_else(|| item.clone());
            self.tally.rows[side] += 1;
            self.tally.duplicates[side] += 1;
            let ex = self.example(&dup, Some(side));
            self.keep(Kind::DuplicateKey, ex);
        }
        if item.error.is_some() {
            self.tally.invalid[side] += 1;
            let ex = self.example(&item, Some(side));
            self.keep(Kind::Invalid, ex);
        }
        Ok(Some(item))
    }

    fn authority(&self) -> usize {
        usize::from(self.plan.entity.authority != self.plan.sides[0].side)
    }

    fn only(&mut self, side: usize, item: &Item) {
        self.tally.only_in[side] += 1;
        let kind = if side == self.authority() {
            Kind::Missing
        } else {
            Kind::Extra
        };
        self.tally.keys.push((item.key.clone(), kind));
        let ex = self.example(item, Some(side));
        self.keep(kind, ex);
    }

    fn both(&mut self, x: &Item, y: &Item) {
        if x.error.is_some() || y.error.is_some() || x.hash == y.hash {
            return;
        }
        let mut columns = Map::new();
        for (i, c) in self.plan.compared.iter().enumerate() {
            let (l, r) = (&x.values[i], &y.values[i]);
            if !l.same(r, &c.rule) {
                *self
                    .tally
                    .changed_columns
                    .entry(c.name.clone())
                    .or_default() += 1;
                let mut both = Map::new();
                both.insert(self.plan.sides[0].side.clone(), l.display());
                both.insert(self.plan.sides[1].side.clone(), r.display());
                columns.insert(c.name.clone(), Value::Object(both));
            }
        }
        if columns.is_empty() {
            return;
        }
        self.tally.changed += 1;
        self.tally.keys.push((x.key.clone(), Kind::Changed));
        let ex = Example {
            key: self.key(x),
            side: None,
            columns,
            error: None,
        };
        self.keep(Kind::Changed, ex);
    }

    fn key(&self, item: &Item) -> Map<String, Value> {
        self.plan
            .entity
            .left
            .key
            .iter()
            .cloned()
            .zip(item.key_json.iter().cloned())
            .collect()
    }

    fn example(&self, item: &Item, side: Option<usize>) -> Example {
        let columns = self
            .plan
            .compared
            .iter()
            .zip(&item.values)
            .map(|(c, v)| (c.name.clone(), v.display()))
            .collect();
        Example {
            key: self.key(item),
            side: side.map(|s| self.plan.sides[s].side.clone()),
            columns,
            error: item.error.clone(),
        }
    }

    fn keep(&mut self, kind: Kind, ex: Example) {
        let list = self.tally.examples.entry(kind).or_default();
        if list.len() < self.examples {
            list.push(ex);
        }
    }
}
