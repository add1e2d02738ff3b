//! An entity's comparison plan, made from its mapping and both live schemas: which columns
//! each side reads, the key both sides are walked in, the rule each compared column is read
//! with, the SQL of a key-ordered page, and the drift between mapped columns (`drift`). Rows are compared in the right side's form: the left row goes through the
//! mapping's forward transforms (lower, trim, cast, split, join), which are the lossy ones.

use std::cmp::Ordering;

use serde_json::Value;

use crate::config::sync::{EntityConfig, Transform};
use crate::family::TypeFamily;
use crate::store::{Row, TableInfo};
use crate::sync::mapping::{Mapping, used_columns};

use super::ValidateError;
use super::canon::{Canon, Rule, time_precision};
use super::drift::{Drift, drifts};

/// One side of the plan.
#[derive(Debug, Clone)]
pub struct SidePlan {
    /// Side name.
    pub side: String,
    /// Database kind (`sqlite`, `postgres`, `mysql`).
    pub kind: &'static str,
    /// Table.
    pub table: String,
    /// Columns read, in select order; the key columns first, in the left key's order.
    pub columns: Vec<String>,
    /// Key columns in the left key's order.
    pub key: Vec<String>,
    /// Whether the database enforces the key unique.
    pub unique: bool,
    /// Each read column's family, in `columns` order.
    pub families: Vec<TypeFamily>,
    /// Each read column's declared type, lower-case, in `columns` order.
    pub declared: Vec<String>,
}

/// A column compared, in the right side's form.
#[derive(Debug, Clone)]
pub struct Compared {
    /// Column of the right table.
    pub right: String,
    /// Name the report uses: the left column (with the right column after a colon when one
    /// left column feeds several right ones).
    pub name: String,
    /// How its values are read and compared.
    pub rule: Rule,
}

/// A key value, ordered the way every database's key-ordered page is read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyPart {
    /// An integer key column.
    Int(i128),
    /// A text key column, in byte order.
    Text(String),
}

/// Whether a key column is read as an integer or as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Integers.
    Int,
    /// Text, compared byte by byte.
    Text,
}

/// An entity's comparison plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The entity as configured.
    pub entity: EntityConfig,
    /// The mapping, checked against both schemas.
    pub mapping: Mapping,
    /// Left then right.
    pub sides: [SidePlan; 2],
    /// Key columns' kinds, in the left key's order.
    pub key_kinds: Vec<KeyKind>,
    /// Compared columns (right form).
    pub compared: Vec<Compared>,
    /// Drift between mapped columns.
    pub drift: Vec<Drift>,
}

fn key_kind(f: TypeFamily) -> Option<KeyKind> {
    match f {
        TypeFamily::Integer => Some(KeyKind::Int),
        TypeFamily::Text | TypeFamily::Time => Some(KeyKind::Text),
        _ => None,
    }
}

/// The richer of two families, which both sides' values are read as.
fn read_as(a: TypeFamily, b: TypeFamily) -> TypeFamily {
    use TypeFamily::*;
    for f in [Json, Time, Blob, Real, Text] {
        if a == f || b == f {
            return f;
        }
    }
    if a == Integer || b == Integer {
        Integer
    } else {
        a
    }
}

impl Plan {
    /// The error of a failed database call on side `i`, naming the entity and the side.
    pub fn failed(
        &self,
        i: usize,
    ) -> impl FnOnce(crate::store::StoreError) -> ValidateError + use<> {
        let (entity, side) = (self.entity.name.clone(), self.sides[i].side.clone());
        move |source| ValidateError::Database {
            entity,
            side,
            source,
        }
    }

    /// Plans the comparison of `entity` between two live tables (`kinds`: left, right).
    pub fn new(
        entity: &EntityConfig,
        kinds: [&'static str; 2],
        left: Option<&TableInfo>,
        right: Option<&TableInfo>,
    ) -> Result<Plan, ValidateError> {
        let bad = |side: &str, message: String| ValidateError::Schema {
            entity: entity.name.clone(),
            side: side.to_string(),
            message,
        };
        let (l, r) = match (left, right) {
            (Some(l), Some(r)) => (l, r),
            (None, _) => {
                return Err(bad(
                    &entity.left.side,
                    format!("table {:?} does not exist", entity.left.table),
                ));
            }
            (_, None) => {
                return Err(bad(
                    &entity.right.side,
                    format!("table {:?} does not exist", entity.right.table),
                ));
            }
        };
        // The sync engine needs an enforced key; the validator also reads a side whose key is
        // not enforced, and reports the duplicates it finds there.
        let unique = [
            l.is_unique(&entity.left.key),
            r.is_unique(&entity.right.key),
        ];
        let relax = |info: &TableInfo, key: &[String]| {
            let mut i = info.clone();
            if !i.is_unique(key) {
                i.unique_keys.push(key.to_vec());
            }
            i
        };
        let (lr, rr) = (relax(l, &entity.left.key), relax(r, &entity.right.key));
        let (mapping, _) =
            Mapping::check(entity, Some(&lr), Some(&rr)).map_err(|e| ValidateError::Schema {
                entity: e.entity,
                side: e.side,
                message: format!("table {:?}: {}", e.table, e.message),
            })?;
        // Keys: each left key column renamed (not transformed) to a right key column.
        let mut right_key = Vec::new();
        let mut key_kinds = Vec::new();
        for k in &entity.left.key {
            let rc = entity
                .columns
                .iter()
                .find(|(lc, _)| lc == k)
                .map(|(_, rc)| rc.clone())
                .ok_or_else(|| {
                    bad(
                        &entity.left.side,
                        format!("key column {k:?} is not in columns"),
                    )
                })?;
            if !entity.right.key.contains(&rc) {
                return Err(bad(
                    &entity.right.side,
                    format!(
                        "column {rc:?}, mapped from key column {k:?}, is not in this side's key"
                    ),
                ));
            }
            if entity.transforms.iter().any(|t| matches!(t, Transform::Lower(c) | Transform::Upper(c) | Transform::Trim(c) | Transform::Cast(c, _) if c == k)) {
                return Err(bad(&entity.left.side, format!("key column {k:?} is transformed; the validator walks both keys in one order and needs key columns that are only renamed")));
            }
            let (lf, rf) = (
                l.column(k).map(|c| c.family),
                r.column(&rc).map(|c| c.family),
            );
            let kind = match (lf.and_then(key_kind), rf.and_then(key_kind)) {
                (Some(a), Some(b)) if a == b => a,
                _ => {
                    return Err(bad(
                        &entity.left.side,
                        format!(
                            "key column {k:?} ({:?}) and {:?} column {rc:?} ({:?}) are not both integers or both text; the validator cannot walk them in one order",
                            lf, entity.right.side, rf
                        ),
                    ));
                }
            };
            key_kinds.push(kind);
            right_key.push(rc);
        }
        let with_key_first = |key: &[String], cols: Vec<String>| {
            let mut out = key.to_vec();
            for c in cols {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
            out
        };
        let defaults: Vec<&String> = entity
            .transforms
            .iter()
            .filter_map(|t| match t {
                Transform::Default(c, _) => Some(c),
                _ => None,
            })
            .collect();
        let right_cols: Vec<String> = used_columns(entity, false)
            .into_iter()
            .filter(|c| !defaults.contains(&c))
            .collect();
        let families = |info: &TableInfo, cols: &[String]| -> Vec<TypeFamily> {
            cols.iter()
                .map(|c| info.column(c).map_or(TypeFamily::Text, |c| c.family))
                .collect()
        };
        let declared = |info: &TableInfo, cols: &[String]| -> Vec<String> {
            cols.iter()
                .map(|c| {
                    info.column(c)
                        .map_or(String::new(), |c| c.declared.to_ascii_lowercase())
                })
                .collect()
        };
        let left_cols = with_key_first(&entity.left.key, used_columns(entity, true));
        let right_read = with_key_first(&right_key, right_cols.clone());
        let sides = [
            SidePlan {
                side: entity.left.side.clone(),
                kind: kinds[0],
                table: entity.left.table.clone(),
                families: families(l, &left_cols),
                declared: declared(l, &left_cols),
                columns: left_cols,
                key: entity.left.key.clone(),
                unique: unique[0],
            },
            SidePlan {
                side: entity.right.side.clone(),
                kind: kinds[1],
                table: entity.right.table.clone(),
                families: families(r, &right_read),
                declared: declared(r, &right_read),
                columns: right_read,
                key: right_key,
                unique: unique[1],
            },
        ];
        // Compared columns, with the left column each comes from.
        let mut sources: Vec<(String, String)> = entity
            .columns
            .iter()
            .map(|(lc, rc)| (rc.clone(), lc.clone()))
            .collect();
        for t in &entity.transforms {
            match t {
                Transform::Split { column, into, .. } => {
                    for c in into {
                        sources.push((c.clone(), format!("{column}:{c}")));
                    }
                }
                Transform::Join { columns, into, .. } => {
                    sources.push((into.clone(), columns.join("+")))
                }
                _ => {}
            }
        }
        let mut compared = Vec::new();
        let mut drift = Vec::new();
        for rc in &right_cols {
            let Some((_, name)) = sources.iter().find(|(c, _)| c == rc) else {
                continue;
            };
            let rcol = r
                .column(rc)
                .ok_or_else(|| bad(&entity.right.side, format!("column {rc:?} does not exist")))?;
            let lcol = l.column(name);
            let lf = lcol.map_or(rcol.family, |c| c.family);
            let cast = entity.transforms.iter().find_map(|t| match t {
                Transform::Cast(c, f) if c == name => Some(*f),
                _ => None,
            });
            let family = read_as(cast.unwrap_or(lf), rcol.family);
            let base = name.split([':', '+']).next().unwrap_or(name);
            let precisions = lcol.map(|c| {
                (
                    time_precision(kinds[0], &c.declared),
                    time_precision(kinds[1], &rcol.declared),
                )
            });
            let unit = match precisions {
                Some((Some(a), Some(b))) => 10i64.pow(6 - a.min(b)),
                Some((Some(p), None)) | Some((None, Some(p))) => 10i64.pow(6 - p),
                _ => 1,
            };
            if let Some(lc) = lcol
                && let Some(why) = drifts(
                    kinds,
                    &lc.declared,
                    lc.family,
                    &rcol.declared,
                    rcol.family,
                    cast.is_some(),
                )
            {
                drift.push(Drift {
                    column: name.clone(),
                    left: lc.declared.clone(),
                    right: rcol.declared.clone(),
                    why: why.to_string(),
                });
            }
            compared.push(Compared {
                right: rc.clone(),
                name: name.clone(),
                rule: Rule {
                    family,
                    text: entity.validation.text.get(base).copied(),
                    tolerance: entity.validation.float_tolerance,
                    time_unit_us: unit,
                },
            });
        }
        Ok(Plan {
            entity: entity.clone(),
            mapping,
            sides,
            key_kinds,
            compared,
            drift,
        })
    }

    /// A read row of side `i` as a row image (column → value, as capture would carry it).
    pub fn row(&self, i: usize, mut values: Vec<Value>) -> Row {
        self.image(i, &mut values);
        self.sides[i].columns.iter().cloned().zip(values).collect()
    }

    /// A read row of side `i` in place, each value as a row image holds it.
    pub fn image(&self, i: usize, values: &mut [Value]) {
        for (v, f) in values.iter_mut().zip(&self.sides[i].families) {
            *v = image_value(std::mem::take(v), *f);
        }
    }

    /// The key of a row read with its key columns first (as every read of a plan is).
    pub fn key_of(&self, values: &[Value]) -> Vec<KeyPart> {
        values
            .iter()
            .zip(&self.key_kinds)
            .map(|(v, kind)| key_part(v, *kind))
            .collect()
    }

    /// A read row of side `i` as a key and its compared values; `Err` names why the row
    /// cannot be mapped.
    pub fn item(&self, i: usize, values: Vec<Value>) -> Item {
        let s = &self.sides[i];
        let key = self.key_of(&values);
        let key_json: Vec<Value> = values[..self.key_kinds.len()]
            .iter()
            .zip(&s.families)
            .map(|(v, f)| image_value(v.clone(), *f))
            .collect();
        let row = self.row(i, values);
        let right = if i == 0 {
            match self.mapping.to_side(&self.sides[1].side, &row) {
                Ok((r, _)) => r,
                Err(e) => {
                    return Item {
                        key,
                        key_json,
                        values: Vec::new(),
                        hash: 0,
                        error: Some(e),
                    };
                }
            }
        } else {
            row
        };
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let values: Vec<Canon> = self
            .compared
            .iter()
            .map(|c| {
                let v = Canon::of(right.get(&c.right).unwrap_or(&Value::Null), &c.rule);
                v.hash_into(&mut h);
                v
            })
            .collect();
        Item {
            key,
            key_json,
            values,
            hash: h.digest(),
            error: None,
        }
    }
}

/// A value as read (PostgreSQL's text of every column, a JSON column's text elsewhere) in
/// the form a captured row image carries it: numbers, booleans and JSON documents as such.
pub fn image_value(v: Value, family: TypeFamily) -> Value {
    let Value::String(s) = v else { return v };
    match family {
        TypeFamily::Integer | TypeFamily::Real => match s.trim().parse::<serde_json::Number>() {
            Ok(n) => Value::Number(n),
            Err(_) => Value::String(s),
        },
        TypeFamily::Boolean => match s.as_str() {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => Value::String(s),
        },
        TypeFamily::Json => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        _ => Value::String(s),
    }
}

/// A key value read from a row.
pub fn key_part(v: &Value, kind: KeyKind) -> KeyPart {
    if let (KeyKind::Int, Some(i)) = (kind, v.as_i64()) {
        return KeyPart::Int(i.into());
    }
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match kind {
        KeyKind::Int => text
            .trim()
            .parse::<i128>()
            .map_or(KeyPart::Text(text), KeyPart::Int),
        KeyKind::Text => KeyPart::Text(text),
    }
}

/// One row, ready to compare.
#[derive(Debug, Clone)]
pub struct Item {
    /// Key, for ordering.
    pub key: Vec<KeyPart>,
    /// Key values as read, for reports.
    pub key_json: Vec<Value>,
    /// Compared values in canonical form, in [`Plan::compared`] order.
    pub values: Vec<Canon>,
    /// Hash of `values`.
    pub hash: u64,
    /// Why the row could not be mapped to the other side's form.
    pub error: Option<String>,
}

impl Item {
    /// Orders two items by key.
    pub fn cmp_key(&self, other: &Item) -> Ordering {
        self.key.cmp(&other.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_as_the_wider_family_and_keys_in_order() {
        use TypeFamily::*;
        assert_eq!(read_as(Integer, Real), Real);
        assert_eq!(read_as(Text, Json), Json);
        assert_eq!(read_as(Boolean, Integer), Integer);
        assert_eq!(read_as(Boolean, Boolean), Boolean);
        assert_eq!(key_part(&Value::from("12"), KeyKind::Int), KeyPart::Int(12));
        assert_eq!(
            key_part(&Value::from("x"), KeyKind::Int),
            KeyPart::Text("x".into())
        );
        assert!(KeyPart::Int(2) < KeyPart::Int(10));
        assert!(KeyPart::Text("B".into()) < KeyPart::Text("a".into()));
    }
}
