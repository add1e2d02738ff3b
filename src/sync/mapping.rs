//! An entity's column map applied to row images: left → right with the configured transforms,
//! right → left with their inverses, and the checks of a mapping against the real schemas.

use serde_json::Value;

use crate::config::sync::{EntityConfig, EntityTable, Transform, TypeFamily};
use crate::store::{Form, Row, TableInfo, key_text, utc_naive};

/// An entity mapping that does not fit the databases.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("entity {entity:?}: side {side:?}: table {table:?}: {message}")]
pub struct MappingError {
    /// Entity.
    pub entity: String,
    /// Side.
    pub side: String,
    /// Table.
    pub table: String,
    /// What is wrong, naming the column.
    pub message: String,
}

/// A ready-to-use entity mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The entity as configured.
    pub entity: EntityConfig,
    /// Per mapped column, in `entity.columns` order: the left and right families, and
    /// whether a cast transform applies.
    pairs: Vec<(TypeFamily, TypeFamily, bool)>,
    /// Binary columns of the left and right tables: their values travel as `\x` and hex.
    binary: [Vec<String>; 2],
    /// Columns of the left and right tables that hold values in a [`Form`] other than plain.
    forms: [Vec<(String, Form)>; 2],
}

fn compatible(a: TypeFamily, b: TypeFamily) -> bool {
    use TypeFamily::*;
    a == b
        || matches!(
            (a, b),
            (Integer, Real)
                | (Real, Integer)
                | (Integer, Boolean)
                | (Boolean, Integer)
                | (Text, Time)
                | (Time, Text)
                | (Text, Json)
                | (Json, Text)
        )
}

impl Mapping {
    /// Checks the entity against both tables; returns the mapping and warnings.
    pub fn check(
        entity: &EntityConfig,
        left: Option<&TableInfo>,
        right: Option<&TableInfo>,
    ) -> Result<(Mapping, Vec<String>), MappingError> {
        let err = |t: &EntityTable, m: String| MappingError {
            entity: entity.name.clone(),
            side: t.side.clone(),
            table: t.table.clone(),
            message: m,
        };
        let l = left.ok_or_else(|| err(&entity.left, "table does not exist".into()))?;
        let r = right.ok_or_else(|| err(&entity.right, "table does not exist".into()))?;
        let mut warnings = Vec::new();
        for (t, info) in [(&entity.left, l), (&entity.right, r)] {
            for k in &t.key {
                if info.column(k).is_none() {
                    return Err(err(t, format!("key column {k:?} does not exist")));
                }
            }
            if !info.is_unique(&t.key) {
                return Err(err(
                    t,
                    format!(
                        "key ({}) is not the primary key or a unique index",
                        t.key.join(", ")
                    ),
                ));
            }
        }
        let mut pairs = Vec::with_capacity(entity.columns.len());
        let mut left_used = Vec::new();
        let mut right_used = Vec::new();
        let casts: Vec<(&String, TypeFamily)> = entity
            .transforms
            .iter()
            .filter_map(|t| match t {
                Transform::Cast(c, f) => Some((c, *f)),
                _ => None,
            })
            .collect();
        for (lc, rc) in &entity.columns {
            let lcol = l
                .column(lc)
                .ok_or_else(|| err(&entity.left, format!("column {lc:?} does not exist")))?;
            let rcol = r
                .column(rc)
                .ok_or_else(|| err(&entity.right, format!("column {rc:?} does not exist")))?;
            let cast = casts.iter().find(|(c, _)| *c == lc).map(|(_, f)| *f);
            let (want, what) = match cast {
                Some(f) => (f, "the cast type"),
                None => (lcol.family, "left column's type"),
            };
            if !compatible(want, rcol.family) {
                return Err(err(
                    &entity.right,
                    format!(
                        "column {rc:?} is {} ({:?}), incompatible with {what} {} ({:?}) of {:?} column {lc:?}; add a cast transform",
                        rcol.declared, rcol.family, lcol.declared, want, entity.left.side
                    ),
                ));
            }
            pairs.push((lcol.family, rcol.family, cast.is_some()));
            left_used.push(lc.clone());
            right_used.push(rc.clone());
        }
        for t in &entity.transforms {
            match t {
                Transform::Split { column, into, .. } => {
                    need_text(l, column).map_err(|m| err(&entity.left, m))?;
                    for c in into {
                        need_text(r, c).map_err(|m| err(&entity.right, m))?;
                    }
                    left_used.push(column.clone());
                    right_used.extend(into.iter().cloned());
                }
                Transform::Join { columns, into, .. } => {
                    for c in columns {
                        need_text(l, c).map_err(|m| err(&entity.left, m))?;
                    }
                    need_text(r, into).map_err(|m| err(&entity.right, m))?;
                    left_used.extend(columns.iter().cloned());
                    right_used.push(into.clone());
                }
                Transform::Default(c, _) => {
                    if r.column(c).is_none() {
                        return Err(err(&entity.right, format!("column {c:?} does not exist")));
                    }
                    right_used.push(c.clone());
                }
                _ => {}
            }
        }
        for (t, info, used) in [
            (&entity.left, l, &left_used),
            (&entity.right, r, &right_used),
        ] {
            for c in &info.columns {
                if used.contains(&c.name) {
                    continue;
                }
                if !c.nullable && !c.has_default {
                    return Err(err(
                        t,
                        format!(
                            "column {:?} is NOT NULL without a default and not mapped: inserts would fail",
                            c.name
                        ),
                    ));
                }
                warnings.push(format!(
                    "entity {:?}: side {:?}: table {:?}: column {:?} is not mapped and will not be synced",
                    entity.name, t.side, t.table, c.name
                ));
            }
        }
        let forms = |t: &TableInfo| {
            t.columns
                .iter()
                .filter(|c| c.form != Form::Plain)
                .map(|c| (c.name.clone(), c.form))
                .collect()
        };
        let binary = |t: &TableInfo| {
            t.columns
                .iter()
                .filter(|c| c.family == TypeFamily::Blob)
                .map(|c| c.name.clone())
                .collect()
        };
        Ok((
            Mapping {
                entity: entity.clone(),
                pairs,
                binary: [binary(l), binary(r)],
                forms: [forms(l), forms(r)],
            },
            warnings,
        ))
    }

    /// The binary columns of `side`'s table.
    pub fn binary_columns(&self, side: &str) -> &[String] {
        &self.binary[usize::from(!self.is_left(side))]
    }

    /// Whether `side` is the left side.
    pub fn is_left(&self, side: &str) -> bool {
        self.entity.left.side == side
    }

    /// The left-form image of a row captured on `side`.
    pub fn to_left_form(&self, side: &str, row: &Row) -> Result<Row, String> {
        if self.is_left(side) {
            Ok(self.project_left(row))
        } else {
            self.to_left(row)
        }
    }

    /// The columns of a left row that the mapping uses.
    fn project_left(&self, row: &Row) -> Row {
        let mut out = Row::new();
        let mut take = |c: &String| {
            out.insert(c.clone(), row.get(c).cloned().unwrap_or(Value::Null));
        };
        for (lc, _) in &self.entity.columns {
            take(lc);
        }
        for t in &self.entity.transforms {
            match t {
                Transform::Split { column, .. } => take(column),
                Transform::Join { columns, .. } => columns.iter().for_each(&mut take),
                _ => {}
            }
        }
        out
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

    /// The key of a left-form row in `side`'s key columns.
    pub fn side_key(&self, side: &str, left: &Row) -> Result<Row, String> {
        let (row, _) = self.to_side(side, left)?;
        let t = self.entity.table(side).ok_or("unknown side")?;
        Ok(t.key
            .iter()
            .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
            .collect())
    }

    fn to_right(&self, left: &Row) -> Result<(Row, Row), String> {
        let mut out = Row::new();
        let mut insert_only = Row::new();
        for ((lc, rc), &(lf, rf, casted)) in self.entity.columns.iter().zip(&self.pairs) {
            let mut v = left.get(lc).cloned().unwrap_or(Value::Null);
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
            out.insert(rc.clone(), v);
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
        for ((lc, rc), &(lf, rf, casted)) in self.entity.columns.iter().zip(&self.pairs) {
            let mut v = right.get(rc).cloned().unwrap_or(Value::Null);
            v = if casted {
                cast(&v, lf)
            } else {
                between(v, rf, lf)
            }
            .map_err(|m| format!("column {rc:?}: {m}"))?;
            out.insert(lc.clone(), v);
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

/// A value of a column of family `from` for a column of family `to`, with no cast configured:
/// a text column's value becomes the JSON document it spells (refused when it spells none), a
/// JSON document the text that spells it; everything else is unchanged.
fn between(v: Value, from: TypeFamily, to: TypeFamily) -> Result<Value, String> {
    use TypeFamily::{Json, Text};
    Ok(match (from, to, v) {
        (Text, Json, Value::String(s)) => serde_json::from_str(&s)
            .map_err(|e| format!("text {s:?} is not a JSON document ({e}) for a JSON column"))?,
        (Json, Text, v) if !v.is_null() => Value::String(v.to_string()),
        (_, _, v) => v,
    })
}

/// A value as a column of `form` takes it.
fn in_form(v: &mut Value, form: Form) {
    match form {
        Form::Plain => {}
        Form::UtcNaive => {
            if let Value::String(s) = v
                && let Some(utc) = utc_naive(s)
            {
                *s = utc;
            }
        }
        Form::JsonText => {
            if !v.is_null() {
                *v = Value::String(v.to_string());
            }
        }
    }
}

fn need_text(info: &TableInfo, col: &str) -> Result<(), String> {
    match info.column(col) {
        None => Err(format!("column {col:?} does not exist")),
        Some(c) if c.family != TypeFamily::Text => Err(format!(
            "column {col:?} is {}, split and join need text",
            c.declared
        )),
        Some(_) => Ok(()),
    }
}

fn map_str(v: Value, f: impl Fn(&str) -> String) -> Value {
    match v {
        Value::String(s) => Value::String(f(&s)),
        other => other,
    }
}

fn split(v: &Value, sep: &str) -> (Value, Value) {
    match v {
        Value::String(s) => match s.split_once(sep) {
            Some((a, b)) => (Value::from(a), Value::from(b)),
            None => (Value::from(s.as_str()), Value::Null),
        },
        _ => (Value::Null, Value::Null),
    }
}

fn join(a: Option<&Value>, b: Option<&Value>, sep: &str) -> Value {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    match (text(a), text(b)) {
        (Some(a), Some(b)) => Value::from(format!("{a}{sep}{b}")),
        (Some(a), None) => Value::from(a),
        (None, Some(b)) => Value::from(b),
        (None, None) => Value::Null,
    }
}

/// Casts a value to a type family.
pub fn cast(v: &Value, to: TypeFamily) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    Ok(match to {
        TypeFamily::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => v.clone(),
            Value::Number(n) => Value::from(n.as_f64().unwrap_or(0.0).round() as i64),
            Value::Bool(b) => Value::from(i64::from(*b)),
            Value::String(s) => Value::from(
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{s:?} is not an integer"))?,
            ),
            other => return Err(format!("{other} is not an integer")),
        },
        // A number's text is kept, every digit of a decimal with it.
        TypeFamily::Real => match v {
            Value::Number(_) => v.clone(),
            Value::String(s) => match s.trim().parse::<serde_json::Number>() {
                Ok(n) if n.as_f64().is_some_and(f64::is_finite) => Value::Number(n),
                _ if s.trim().parse::<f64>().is_ok() => {
                    return Err(format!("{s:?} is not a finite number"));
                }
                _ => return Err(format!("{s:?} is not a number")),
            },
            other => return Err(format!("{other} is not a number")),
        },
        TypeFamily::Boolean => match v {
            Value::Bool(_) => v.clone(),
            Value::Number(n) => Value::Bool(n.as_f64() != Some(0.0)),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" | "y" => Value::Bool(true),
                "false" | "f" | "0" | "no" | "n" => Value::Bool(false),
                _ => return Err(format!("{s:?} is not a boolean")),
            },
            other => return Err(format!("{other} is not a boolean")),
        },
        TypeFamily::Text | TypeFamily::Time | TypeFamily::Json | TypeFamily::Blob => match v {
            Value::String(_) => v.clone(),
            other => Value::from(other.to_string()),
        },
    })
}

/// Columns of the left (`true`) or right table that an entity's mapping reads or writes.
pub fn used_columns(entity: &EntityConfig, left: bool) -> Vec<String> {
    let mut out: Vec<String> = entity
        .columns
        .iter()
        .map(|(l, r)| if left { l.clone() } else { r.clone() })
        .collect();
    for t in &entity.transforms {
        match (t, left) {
            (Transform::Split { column, .. }, true) => out.push(column.clone()),
            (Transform::Split { into, .. }, false) => out.extend(into.iter().cloned()),
            (Transform::Join { columns, .. }, true) => out.extend(columns.iter().cloned()),
            (Transform::Join { into, .. }, false) => out.push(into.clone()),
            (Transform::Default(c, _), false) => out.push(c.clone()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_and_json_columns_trade_documents_and_forms_are_applied() {
        use TypeFamily::*;
        let b = |v: Value, f, t| between(v, f, t);
        assert_eq!(
            b(json!("{\"a\": 2.50}"), Text, Json).unwrap().to_string(),
            r#"{"a":2.50}"#
        );
        assert!(
            b(json!("nope"), Text, Json)
                .unwrap_err()
                .contains("not a JSON document")
        );
        assert_eq!(
            b(json!({"a": [1]}), Json, Text).unwrap(),
            json!("{\"a\":[1]}")
        );
        assert_eq!(b(json!("s"), Json, Text).unwrap(), json!("\"s\""));
        assert_eq!(b(json!(null), Json, Text).unwrap(), json!(null));
        assert_eq!(b(json!("x"), Text, Text).unwrap(), json!("x"));
        let mut v = json!("2026-12-03T13:00:00.5+05:30");
        in_form(&mut v, Form::UtcNaive);
        assert_eq!(v, json!("2026-12-03 07:30:00.5"));
        let mut v = json!("2026-12-03 13:00:00");
        in_form(&mut v, Form::UtcNaive);
        assert_eq!(v, json!("2026-12-03 13:00:00"));
        let mut v = json!(["a", 1]);
        in_form(&mut v, Form::JsonText);
        assert_eq!(v, json!("[\"a\",1]"));
        let mut v = json!(null);
        in_form(&mut v, Form::JsonText);
        assert_eq!(v, json!(null));
    }

    #[test]
    fn casts_between_families() {
        use TypeFamily::*;
        let ok = |v: Value, to| cast(&v, to).unwrap();
        assert_eq!(ok(json!(null), Integer), json!(null));
        assert_eq!(ok(json!(7), Integer), json!(7));
        assert_eq!(ok(json!(2.6), Integer), json!(3));
        assert_eq!(ok(json!(true), Integer), json!(1));
        assert_eq!(ok(json!(" 42 "), Integer), json!(42));
        assert_eq!(ok(json!(1.5), Real), json!(1.5));
        assert_eq!(ok(json!("2.25"), Real), json!(2.25));
        assert_eq!(
            ok(json!("12345678901234567890.1234567890"), Real).to_string(),
            "12345678901234567890.1234567890"
        );
        assert_eq!(ok(json!(0), Boolean), json!(false));
        assert_eq!(ok(json!(3), Boolean), json!(true));
        assert_eq!(ok(json!(" Yes"), Boolean), json!(true));
        assert_eq!(ok(json!("f"), Boolean), json!(false));
        assert_eq!(ok(json!(false), Boolean), json!(false));
        assert_eq!(ok(json!(12), Text), json!("12"));
        assert_eq!(ok(json!("x"), Json), json!("x"));
        assert_eq!(ok(json!({"a": 1}), Text), json!(r#"{"a":1}"#));

        let err = |v: Value, to| cast(&v, to).unwrap_err();
        assert_eq!(err(json!("x1"), Integer), r#""x1" is not an integer"#);
        assert_eq!(err(json!([1]), Integer), "[1] is not an integer");
        assert_eq!(err(json!("abc"), Real), r#""abc" is not a number"#);
        assert_eq!(err(json!("inf"), Real), r#""inf" is not a finite number"#);
        assert_eq!(err(json!(true), Real), "true is not a number");
        assert_eq!(err(json!("maybe"), Boolean), r#""maybe" is not a boolean"#);
        assert_eq!(err(json!([]), Boolean), "[] is not a boolean");
    }

    #[test]
    fn split_and_join_are_inverse_and_keep_nulls() {
        assert_eq!(
            split(&json!("Ada Lovelace"), " "),
            (json!("Ada"), json!("Lovelace"))
        );
        assert_eq!(split(&json!("Ada"), " "), (json!("Ada"), json!(null)));
        assert_eq!(split(&json!(null), " "), (json!(null), json!(null)));
        assert_eq!(split(&json!(5), " "), (json!(null), json!(null)));
        let j = |a: Value, b: Value| join(Some(&a), Some(&b), " ");
        assert_eq!(j(json!("Ada"), json!("Lovelace")), json!("Ada Lovelace"));
        assert_eq!(j(json!("Ada"), json!(null)), json!("Ada"));
        assert_eq!(j(json!(null), json!("L")), json!("L"));
        assert_eq!(j(json!(null), json!(null)), json!(null));
        assert_eq!(j(json!(1), json!(true)), json!("1 true"));
        assert_eq!(join(None, None, "-"), json!(null));
        assert_eq!(map_str(json!("a"), str::to_uppercase), json!("A"));
        assert_eq!(map_str(json!(3), str::to_uppercase), json!(3));
    }
}
