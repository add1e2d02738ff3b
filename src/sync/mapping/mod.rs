//! An entity's column map applied to row images: left → right with the configured transforms,
//! right → left with their inverses, and the checks of a mapping against the real schemas.

mod columnar;
mod convert;
mod value;

pub use columnar::Columnar;
pub use value::cast;

use crate::config::sync::{EntityConfig, EntityTable, Transform, TypeFamily};
use crate::store::{Form, Row, TableInfo, key_text};

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
    use serde_json::{Value, json};

    use super::value::*;
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
