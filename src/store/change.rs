//! What moves through a side: a captured change as read from its changelog, and the writes
//! and checkpoint entries one engine transaction applies.

use std::collections::HashSet;

use serde_json::{Map, Value};

/// A row image: column → value.
pub type Row = Map<String, Value>;

/// Separator of key values in a changelog key text.
pub const KEY_SEPARATOR: char = '\u{1f}';

/// What a captured change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// Row inserted.
    Insert,
    /// Row updated.
    Update,
    /// Row deleted.
    Delete,
}

impl Op {
    pub(super) fn parse(s: &str) -> Op {
        match s {
            "I" => Op::Insert,
            "D" => Op::Delete,
            _ => Op::Update,
        }
    }
}

/// One captured change, as read from a side's changelog.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Changelog sequence number on its side.
    pub seq: i64,
    /// Table.
    pub table: String,
    /// Operation.
    pub op: Op,
    /// Row before (updates, deletes).
    pub old: Option<Row>,
    /// Row after (inserts, updates).
    pub new: Option<Row>,
    /// Source transaction id, where the database exposes one.
    pub tx: Option<String>,
    /// Capture time by the database's clock, Unix µs.
    pub ts_us: i64,
    /// Key values joined by [`KEY_SEPARATOR`].
    pub pk: String,
    /// Why an image of this change could not be decoded; such a change is quarantined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poison: Option<String>,
}

/// One write the engine applies.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Insert, or update the given columns of the existing row.
    Upsert {
        /// Table.
        table: String,
        /// Key columns (a unique key of the table).
        key: Vec<String>,
        /// Columns to write, key included.
        row: Row,
        /// Extra columns set only when the row is new.
        insert_only: Row,
        /// Binary columns: their values are `\x`-and-hex text, written as bytes.
        bytes: Vec<String>,
    },
    /// Delete by key.
    Delete {
        /// Table.
        table: String,
        /// Key column → value.
        key: Row,
    },
}

impl Write {
    /// Table written.
    pub fn table(&self) -> &str {
        match self {
            Write::Upsert { table, .. } | Write::Delete { table, .. } => table,
        }
    }

    /// Key text as the changelog stores it.
    pub fn pk(&self) -> String {
        match self {
            Write::Upsert { key, row, .. } => key_text(key.iter().map(|k| row.get(k))),
            Write::Delete { key, .. } => key_text(key.values().map(Some)),
        }
    }
}

/// Renders key values the way every backend's trigger renders them.
pub fn key_text<'a>(values: impl Iterator<Item = Option<&'a Value>>) -> String {
    let mut out = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(KEY_SEPARATOR);
        }
        match v {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
    }
    out
}

/// One target transaction: writes, the checkpoint they carry, and changelog housekeeping.
#[derive(Debug, Clone, Default)]
pub struct ApplyBatch {
    /// Writes in order.
    pub writes: Vec<Write>,
    /// Side the changes came from.
    pub source: String,
    /// Source changelog sequence numbers this batch covers (the checkpoint).
    pub applied: Vec<i64>,
    /// Checkpoint entries for `source` below this are no longer needed.
    pub prune_below: Option<i64>,
    /// This side's own changelog rows to delete (already applied to the peer).
    pub consumed: Vec<i64>,
    /// This side's changelog rows read this round: anything else on a written key is a race.
    pub seen: HashSet<i64>,
    /// Checkpoint entries for `source` to delete (their changelog rows are gone for good).
    pub unapply: Vec<i64>,
    /// Rows inserted where their key is absent, after `writes`.
    pub absent: Option<Absent>,
}

impl ApplyBatch {
    /// The (table, key text) pairs the batch writes, its absent rows' included.
    pub fn written_keys(&self) -> HashSet<(String, String)> {
        let absent = self
            .absent
            .iter()
            .flat_map(|a| a.pks().map(|pk| (a.table.clone(), pk)));
        self.writes
            .iter()
            .map(|w| (w.table().to_string(), w.pk()))
            .chain(absent)
            .collect()
    }

    /// The batch with its absent rows as writes, for a backend without a bulk path.
    pub fn expanded(&self) -> std::borrow::Cow<'_, ApplyBatch> {
        match &self.absent {
            None => std::borrow::Cow::Borrowed(self),
            Some(a) => {
                let mut b = self.clone();
                b.absent = None;
                b.writes.extend(a.writes());
                std::borrow::Cow::Owned(b)
            }
        }
    }
}

/// Rows to insert where their key is absent, leaving a present row as it is: the initial
/// copy's writes, as values in one column order instead of a map per row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Absent {
    /// Table.
    pub table: String,
    /// Key columns (a unique key of the table), each among `columns`.
    pub key: Vec<String>,
    /// The columns of every row, in order.
    pub columns: Vec<String>,
    /// Binary columns: their values are `\x`-and-hex text, written as bytes.
    pub bytes: Vec<String>,
    /// The rows' values, in `columns` order.
    pub rows: Vec<Vec<Value>>,
}

impl Absent {
    /// Positions of the key columns in `columns`.
    fn key_at(&self) -> Vec<usize> {
        self.key
            .iter()
            .filter_map(|k| self.columns.iter().position(|c| c == k))
            .collect()
    }

    /// Each row as the write that sets its key and sets every other column only on insert.
    pub fn writes(&self) -> impl Iterator<Item = Write> + '_ {
        self.rows.iter().map(|values| {
            let (mut row, mut insert_only) = (Row::new(), Row::new());
            for (c, v) in self.columns.iter().zip(values) {
                match self.key.contains(c) {
                    true => row.insert(c.clone(), v.clone()),
                    false => insert_only.insert(c.clone(), v.clone()),
                };
            }
            Write::Upsert {
                table: self.table.clone(),
                key: self.key.clone(),
                row,
                insert_only,
                bytes: self.bytes.clone(),
            }
        })
    }

    /// Each row's key text as the changelog stores it.
    pub fn pks(&self) -> impl Iterator<Item = String> + '_ {
        let at = self.key_at();
        self.rows
            .iter()
            .map(move |values| key_text(at.iter().map(|i| values.get(*i))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_rows_expand_to_writes_that_set_only_their_key_on_a_present_row() {
        let a = Absent {
            table: "t".into(),
            key: vec!["b".into(), "a".into()],
            columns: vec!["a".into(), "b".into(), "v".into()],
            bytes: vec!["v".into()],
            rows: vec![
                vec![json!(1), json!("x"), json!("\\x00")],
                vec![json!(2), json!(null), json!(null)],
            ],
        };
        let pks: Vec<String> = a.pks().collect();
        assert_eq!(
            pks,
            [format!("x{KEY_SEPARATOR}1"), format!("{KEY_SEPARATOR}2")]
        );
        let batch = ApplyBatch {
            writes: vec![Write::Delete {
                table: "t".into(),
                key: json!({"a": 9, "b": "z"}).as_object().unwrap().clone(),
            }],
            absent: Some(a.clone()),
            ..Default::default()
        };
        let expanded = batch.expanded();
        assert_eq!(expanded.absent, None);
        assert_eq!(expanded.writes.len(), 3);
        assert_eq!(expanded.writes[0], batch.writes[0]);
        let Write::Upsert {
            key,
            row,
            insert_only,
            bytes,
            ..
        } = &expanded.writes[1]
        else {
            panic!("not an upsert")
        };
        assert_eq!(key, &a.key);
        assert_eq!(row, json!({"a": 1, "b": "x"}).as_object().unwrap());
        assert_eq!(insert_only, json!({"v": "\\x00"}).as_object().unwrap());
        assert_eq!(bytes, &a.bytes);
        assert_eq!(expanded.writes[1].pk(), pks[0]);
        let plain = ApplyBatch::default();
        assert!(matches!(plain.expanded(), std::borrow::Cow::Borrowed(_)));
    }
}
