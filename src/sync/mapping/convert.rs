//! Row images through a mapping: a captured row to the entity's left form, and the left form
//! to either side's row, with the configured transforms and their inverses.

use serde_json::Value;

use super::value::*;
use super::*;
use crate::store::Write;

impl Mapping {
    /// The left-form image of a row captured on `side`.
    pub fn to_left_form(&self, side: &str, row: &Row) -> Result<Row, String> {
        if self.is_left(side) {
            Ok(self.project_left(row))
        } else {
            self.to_left(row)
        }
    }

    /// The columns of a left row that the mapping uses.
    fn left_columns(&self) -> impl Iterator<Item = &String> {
        let transformed = self.entity.transforms.iter().flat_map(|t| match t {
            Transform::Split { column, .. } => std::slice::from_ref(column),
            Transform::Join { columns, .. } => columns.as_slice(),
            _ => &[],
        });
        self.entity
            .columns
            .iter()
            .map(|(lc, _)| lc)
            .chain(transformed)
    }

    /// The columns of a left row that the mapping uses, copied.
    fn project_left(&self, row: &Row) -> Row {
        self.left_columns()
            .map(|c| (c.clone(), row.get(c).cloned().unwrap_or(Value::Null)))
            .collect()
    }

    /// Key text of a left-form row.
    pub fn key(&self, left: &Row) -> String {
        key_text(self.entity.left.key.iter().map(|k| left.get(k)))
    }

    /// Maps a left-form row to `side`'s columns: (columns to write, columns set only on insert).
    pub fn to_side(&self, side: &str, left: &Row) -> Result<(Row, Row), String> {
        let (mut row, mut insert_only) = if self.is_left(side) {
            (left.clone(), Row::new())
        } else {
            self.to_right(left)?
        };
        for (c, form) in &self.forms[usize::from(!self.is_left(side))] {
            for r in [&mut row, &mut insert_only] {
                if let Some(v) = r.get_mut(c) {
                    in_form(v, *form);
                }
            }
        }
        Ok((row, insert_only))
    }

    /// The write that makes `side` hold the left-form `row`, or not hold `key` (a left-form
    /// row holding at least the key columns) when `row` is `None`.
    pub fn write(&self, side: &str, row: Option<&Row>, key: &Row) -> Result<Write, String> {
        let t = self.entity.table(side).ok_or("unknown side")?;
        match row {
            Some(r) => {
                let (row, insert_only) = self.to_side(side, r)?;
                let bytes = self
                    .binary_columns(side)
                    .iter()
                    .filter(|c| row.contains_key(*c) || insert_only.contains_key(*c))
                    .cloned()
                    .collect();
                Ok(Write::Upsert {
                    table: t.table.clone(),
                    key: t.key.clone(),
                    row,
                    insert_only,
                    bytes,
                })
            }
            None => Ok(Write::Delete {
                table: t.table.clone(),
                key: self.side_key(side, key)?,
            }),
        }
    }

    /// The key of a left-form row in `side`'s key columns.
    pub fn side_key(&self, side: &str, left: &Row) -> Result<Row, String> {
        let (row, _) = self.to_side(side, left)?;
        let t = self.entity.table(side).ok_or("unknown side")?;
        Ok(t.key
            .iter()
            .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
            .collect())
    }

    /// Mapped column `i`'s left value on its way right: its transforms, then the change of
    /// type family.
    pub(super) fn right_value(&self, i: usize, mut v: Value) -> Result<Value, String> {
        let (lc, _) = &self.entity.columns[i];
        let (lf, rf, casted) = self.pairs[i];
        for t in &self.entity.transforms {
            v = match t {
                Transform::Lower(c) if c == lc => map_str(v, |s| s.to_lowercase()),
                Transform::Upper(c) if c == lc => map_str(v, |s| s.to_uppercase()),
                Transform::Trim(c) if c == lc => map_str(v, |s| s.trim().to_string()),
                Transform::Cast(c, f) if c == lc => {
                    cast(&v, *f).map_err(|m| format!("column {lc:?}: {m}"))?
                }
                _ => v,
            };
        }
        if !casted {
            v = between(v, lf, rf).map_err(|m| format!("column {lc:?}: {m}"))?;
        }
        Ok(v)
    }

    /// Mapped column `i`'s right value on its way left.
    pub(super) fn left_value(&self, i: usize, v: Value) -> Result<Value, String> {
        let (_, rc) = &self.entity.columns[i];
        let (lf, rf, casted) = self.pairs[i];
        if casted {
            cast(&v, lf)
        } else {
            between(v, rf, lf)
        }
        .map_err(|m| format!("column {rc:?}: {m}"))
    }

    fn to_right(&self, left: &Row) -> Result<(Row, Row), String> {
        let mut out = Row::new();
        let mut insert_only = Row::new();
        for (i, (lc, rc)) in self.entity.columns.iter().enumerate() {
            let v = left.get(lc).cloned().unwrap_or(Value::Null);
            out.insert(rc.clone(), self.right_value(i, v)?);
        }
        for t in &self.entity.transforms {
            match t {
                Transform::Split {
                    column,
                    into,
                    separator,
                } => {
                    let (a, b) = split(left.get(column).unwrap_or(&Value::Null), separator);
                    out.insert(into[0].clone(), a);
                    out.insert(into[1].clone(), b);
                }
                Transform::Join {
                    columns,
                    into,
                    separator,
                } => {
                    out.insert(
                        into.clone(),
                        join(left.get(&columns[0]), left.get(&columns[1]), separator),
                    );
                }
                Transform::Default(c, v) => {
                    insert_only.insert(c.clone(), v.clone());
                }
                _ => {}
            }
        }
        Ok((out, insert_only))
    }

    fn to_left(&self, right: &Row) -> Result<Row, String> {
        let mut out = Row::new();
        for (i, (lc, rc)) in self.entity.columns.iter().enumerate() {
            let v = right.get(rc).cloned().unwrap_or(Value::Null);
            out.insert(lc.clone(), self.left_value(i, v)?);
        }
        for t in &self.entity.transforms {
            match t {
                Transform::Split {
                    column,
                    into,
                    separator,
                } => {
                    out.insert(
                        column.clone(),
                        join(right.get(&into[0]), right.get(&into[1]), separator),
                    );
                }
                Transform::Join {
                    columns,
                    into,
                    separator,
                } => {
                    let (a, b) = split(right.get(into).unwrap_or(&Value::Null), separator);
                    out.insert(columns[0].clone(), a);
                    out.insert(columns[1].clone(), b);
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
