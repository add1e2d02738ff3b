//! A round's plan: each change's effect on its key in the entity's left form (pieces), the
//! net change of each side to a key, and the write that makes a side hold a row.

use serde_json::Value;

use crate::store::{Change, Op, Row, Write};
use crate::sync::conflict::SideChange;
use crate::sync::mapping::Mapping;

/// One change's effect on one key, in left form.
pub(super) struct Piece {
    pub(super) seq: i64,
    pub(super) ts: i64,
    pub(super) base: Option<Row>,
    pub(super) row: Option<Row>,
}

pub(super) struct Group {
    pub(super) ent: usize,
    pub(super) key: Row,
    pub(super) a: Vec<Piece>,
    pub(super) b: Vec<Piece>,
}

pub(super) fn net(side: &str, pieces: &[Piece]) -> Option<SideChange> {
    let first = pieces.first()?;
    let last = pieces.last()?;
    let mut deltas = std::collections::BTreeMap::new();
    for p in pieces {
        for (c, v) in p.row.iter().flatten() {
            if let Some(n) = v.as_f64() {
                let o = p
                    .base
                    .as_ref()
                    .and_then(|b| b.get(c))
                    .and_then(Value::as_f64);
                *deltas.entry(c.clone()).or_insert(0.0) += n - o.unwrap_or(0.0);
            }
        }
    }
    Some(SideChange {
        side: side.to_string(),
        base: first.base.clone(),
        row: last.row.clone(),
        stamp: (last.ts, last.seq),
        deltas,
    })
}

/// Splits a captured change into per-key pieces in left form (a key change is a delete
/// of the old key and an insert of the new one).
pub(super) fn pieces(
    m: &Mapping,
    side: &str,
    c: &Change,
    ts: i64,
) -> Result<Vec<(String, Row, Piece)>, String> {
    let old = c
        .old
        .as_ref()
        .map(|r| m.to_left_form(side, r))
        .transpose()?;
    let new = c
        .new
        .as_ref()
        .map(|r| m.to_left_form(side, r))
        .transpose()?;
    let keyrow = |r: &Row| -> Row {
        m.entity
            .left
            .key
            .iter()
            .map(|k| (k.clone(), r.get(k).cloned().unwrap_or(Value::Null)))
            .collect()
    };
    let piece = |base: Option<Row>, row: Option<Row>| Piece {
        seq: c.seq,
        ts,
        base,
        row,
    };
    Ok(match (c.op, old, new) {
        (Op::Insert, _, Some(n)) => vec![(m.key(&n), keyrow(&n), piece(None, Some(n)))],
        (Op::Delete, Some(o), _) => vec![(m.key(&o), keyrow(&o), piece(Some(o), None))],
        (Op::Update, Some(o), Some(n)) => {
            let (ko, kn) = (m.key(&o), m.key(&n));
            if ko == kn {
                vec![(kn, keyrow(&n), piece(Some(o), Some(n)))]
            } else {
                vec![
                    (ko, keyrow(&o), piece(Some(o), None)),
                    (kn, keyrow(&n), piece(None, Some(n))),
                ]
            }
        }
        _ => return Err("image missing for its operation".into()),
    })
}

/// The write that makes `side` hold `row` (or not hold the key when `None`).
pub(super) fn write(
    m: &Mapping,
    side: &str,
    row: &Option<Row>,
    key: &Row,
) -> Result<Write, String> {
    m.write(side, row.as_ref(), key)
}
