//! The mapping of rows read as values in one column order to the other side's columns, with
//! no map built per row: the initial copy's form of [`Mapping::write`]. Each written column is
//! one step over the read values, through the same per-value conversions as the map's form.

use std::collections::BTreeMap;

use serde_json::Value;

use super::value::*;
use super::*;

/// Where one written column's value comes from.
#[derive(Debug, Clone)]
enum Step {
    /// Mapped column `mapped`, read at `at`, on its way right.
    Right { mapped: usize, at: Option<usize> },
    /// Mapped column `mapped`, read at `at`, on its way left.
    Left { mapped: usize, at: Option<usize> },
    /// One part (0 or 1) of the text read at `at`, split at `separator`.
    Split {
        at: Option<usize>,
        separator: String,
        part: usize,
    },
    /// The texts read at `a` and `b`, joined by `separator`.
    Join {
        a: Option<usize>,
        b: Option<usize>,
        separator: String,
    },
    /// A configured default.
    Const(Value),
}

/// One direction of an entity's mapping over rows read in a fixed column order.
#[derive(Debug, Clone)]
pub struct Columnar<'a> {
    mapping: &'a Mapping,
    /// The written side's columns, in the order of [`Columnar::map`]'s values.
    pub columns: Vec<String>,
    /// The written side's key columns.
    pub key: Vec<String>,
    /// The written side's table.
    pub table: String,
    /// The binary columns among `columns`.
    pub bytes: Vec<String>,
    steps: Vec<Step>,
    forms: Vec<Form>,
    /// How many steps read each read column: a value read once is moved, not copied.
    uses: Vec<usize>,
}

impl Mapping {
    /// The mapping of rows of `from`, read as values of the columns `read` in that order, to
    /// the other side; `None` when `from` is not a side of the entity.
    pub fn columnar(&self, from: &str, read: &[String]) -> Option<Columnar<'_>> {
        let rightward = self.is_left(from);
        if !rightward && self.entity.right.side != from {
            return None;
        }
        let to = if rightward {
            &self.entity.right
        } else {
            &self.entity.left
        };
        let at = |c: &str| read.iter().position(|r| r == c);
        // As the map's form builds its row: a later column of the same name replaces an
        // earlier one, and a written column replaces a default of the same name.
        let mut row: BTreeMap<String, Step> = BTreeMap::new();
        let mut defaults: BTreeMap<String, Step> = BTreeMap::new();
        for (mapped, (lc, rc)) in self.entity.columns.iter().enumerate() {
            match rightward {
                true => row.insert(rc.clone(), Step::Right { mapped, at: at(lc) }),
                false => row.insert(lc.clone(), Step::Left { mapped, at: at(rc) }),
            };
        }
        let split = |c: &str, separator: &String, part| Step::Split {
            at: at(c),
            separator: separator.clone(),
            part,
        };
        let join = |a: &str, b: &str, separator: &String| Step::Join {
            a: at(a),
            b: at(b),
            separator: separator.clone(),
        };
        for t in &self.entity.transforms {
            match (t, rightward) {
                (
                    Transform::Split {
                        column,
                        into,
                        separator,
                    },
                    true,
                ) => {
                    row.insert(into[0].clone(), split(column, separator, 0));
                    row.insert(into[1].clone(), split(column, separator, 1));
                }
                (
                    Transform::Split {
                        column,
                        into,
                        separator,
                    },
                    false,
                ) => {
                    row.insert(column.clone(), join(&into[0], &into[1], separator));
                }
                (
                    Transform::Join {
                        columns,
                        into,
                        separator,
                    },
                    true,
                ) => {
                    row.insert(into.clone(), join(&columns[0], &columns[1], separator));
                }
                (
                    Transform::Join {
                        columns,
                        into,
                        separator,
                    },
                    false,
                ) => {
                    row.insert(columns[0].clone(), split(into, separator, 0));
                    row.insert(columns[1].clone(), split(into, separator, 1));
                }
                (Transform::Default(c, v), true) => {
                    defaults.insert(c.clone(), Step::Const(v.clone()));
                }
                _ => {}
            }
        }
        defaults.extend(row);
        let (columns, steps): (Vec<String>, Vec<Step>) = defaults.into_iter().unzip();
        let forms = &self.forms[usize::from(rightward)];
        let form = |c: &String| {
            forms
                .iter()
                .find(|(f, _)| f == c)
                .map_or(Form::Plain, |(_, f)| *f)
        };
        let mut uses = vec![0; read.len()];
        for s in &steps {
            let read_at = match s {
                Step::Right { at, .. } | Step::Left { at, .. } | Step::Split { at, .. } => {
                    vec![*at]
                }
                Step::Join { a, b, .. } => vec![*a, *b],
                Step::Const(_) => vec![],
            };
            for i in read_at.into_iter().flatten() {
                uses[i] += 1;
            }
        }
        Some(Columnar {
            mapping: self,
            forms: columns.iter().map(form).collect(),
            bytes: self
                .binary_columns(&to.side)
                .iter()
                .filter(|c| columns.contains(c))
                .cloned()
                .collect(),
            key: to.key.clone(),
            table: to.table.clone(),
            columns,
            steps,
            uses,
        })
    }
}

impl Columnar<'_> {
    /// A read row's values as the written side's, in [`Columnar::columns`] order; `Err` names
    /// the column that cannot be carried and why.
    pub fn map(&self, mut read: Vec<Value>) -> Result<Vec<Value>, String> {
        let mut take = |at: Option<usize>| match at {
            Some(i) if self.uses[i] == 1 => std::mem::take(&mut read[i]),
            Some(i) => read[i].clone(),
            None => Value::Null,
        };
        let mut out = Vec::with_capacity(self.steps.len());
        for (step, form) in self.steps.iter().zip(&self.forms) {
            let mut v = match step {
                Step::Right { mapped, at } => self.mapping.right_value(*mapped, take(*at))?,
                Step::Left { mapped, at } => self.mapping.left_value(*mapped, take(*at))?,
                Step::Split {
                    at,
                    separator,
                    part,
                } => {
                    let (a, b) = split(&take(*at), separator);
                    if *part == 0 { a } else { b }
                }
                Step::Join { a, b, separator } => {
                    let (a, b) = (take(*a), take(*b));
                    join(Some(&a), Some(&b), separator)
                }
                Step::Const(v) => v.clone(),
            };
            in_form(&mut v, *form);
            out.push(v);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::{Column, Write};

    fn table(columns: &[(&str, TypeFamily, Form)], key: &str) -> TableInfo {
        TableInfo {
            columns: columns
                .iter()
                .map(|(name, family, form)| Column {
                    name: name.to_string(),
                    declared: String::new(),
                    family: *family,
                    nullable: true,
                    has_default: false,
                    form: *form,
                })
                .collect(),
            unique_keys: vec![vec![key.into()]],
            primary_key: vec![key.into()],
            checks: vec![],
            foreign_keys: vec![],
            indexes: vec![],
        }
    }

    fn entity(extra: &str) -> EntityConfig {
        let text = format!(
            r#"
[sides.m]
database = "sqlite:///tmp/m.db"
[sides.s]
database = "sqlite:///tmp/s.db"
[[entities]]
name = "people"
m = {{ table = "people", key = ["id"] }}
s = {{ table = "persons", key = ["pid"] }}
columns_from = "m"
{extra}
"#
        );
        let cfg = crate::config::Config::parse(std::path::Path::new("t.toml"), &text)
            .unwrap_or_else(|e| panic!("{e}"));
        cfg.sync.entities[0].clone()
    }

    /// The map form's write of a row read on `from`, as (column, value) pairs.
    fn by_maps(
        m: &Mapping,
        from: &str,
        read: &[String],
        values: Vec<Value>,
    ) -> Result<Vec<(String, Value)>, String> {
        let to = if m.is_left(from) {
            &m.entity.right
        } else {
            &m.entity.left
        };
        let row: Row = read.iter().cloned().zip(values).collect();
        let left = m.to_left_form(from, &row)?;
        match m.write(&to.side, Some(&left), &Row::new())? {
            Write::Upsert {
                mut insert_only,
                row,
                ..
            } => {
                insert_only.extend(row);
                Ok(insert_only.into_iter().collect())
            }
            Write::Delete { .. } => Err("a delete".into()),
        }
    }

    fn by_columns(
        m: &Mapping,
        from: &str,
        read: &[String],
        values: Vec<Value>,
    ) -> Result<Vec<(String, Value)>, String> {
        let c = m.columnar(from, read).unwrap();
        Ok(c.columns.iter().cloned().zip(c.map(values)?).collect())
    }

    fn same(m: &Mapping, from: &str, read: &[&str], rows: &[Value]) {
        let read: Vec<String> = read.iter().map(|c| c.to_string()).collect();
        for r in rows {
            let values: Vec<Value> = r.as_array().unwrap().clone();
            assert_eq!(
                by_columns(m, from, &read, values.clone()),
                by_maps(m, from, &read, values),
                "{from}: {r}"
            );
        }
    }

    #[test]
    fn each_direction_writes_what_the_map_form_writes() {
        use Form::*;
        use TypeFamily::*;
        let left = table(
            &[
                ("id", Integer, Plain),
                ("name", Text, Plain),
                ("email", Text, Plain),
                ("age", Text, Plain),
                ("doc", Text, Plain),
                ("at", Time, Plain),
            ],
            "id",
        );
        let right = table(
            &[
                ("pid", Integer, Plain),
                ("first", Text, Plain),
                ("last", Text, Plain),
                ("mail", Text, Plain),
                ("age", Integer, Plain),
                ("doc", Json, JsonText),
                ("at", Time, UtcNaive),
                ("tier", Text, Plain),
                ("blob", Blob, Plain),
            ],
            "pid",
        );
        let e = entity(
            r#"columns = { id = "pid", email = "mail", age = "age", doc = "doc", at = "at" }
transforms = [
  { split = "name", into = ["first", "last"] },
  { column = "email", op = "lower" },
  { column = "age", cast = "integer" },
  { column = "tier", default = "basic" },
]"#,
        );
        let (m, _) = Mapping::check(&e, Some(&left), Some(&right)).unwrap();
        same(
            &m,
            "m",
            &["id", "name", "email", "age", "doc", "at"],
            &[
                json!([
                    1,
                    "Ada Lovelace",
                    "ADA@X.IO",
                    "36",
                    "{\"a\": [1, 2.50]}",
                    "2026-12-03T13:00:00+05:30"
                ]),
                json!([2, "Ada", null, " 7 ", null, null]),
                json!([3, null, "x", "seven", "[]", "2026-12-03 13:00:00"]),
                json!([4, "A B", "x", "1", "not json", "x"]),
            ],
        );
        // The column order of a read needs not be the table's; an unread column is NULL.
        same(
            &m,
            "m",
            &["email", "id", "age", "name"],
            &[json!(["E", 5, "2", "P Q"])],
        );
        same(
            &m,
            "s",
            &["pid", "first", "last", "mail", "age", "doc", "at", "tier"],
            &[
                json!([1, "Ada", "Lovelace", "ada@x.io", 36, {"a": [1]}, "2026-12-03 07:30:00", "basic"]),
                json!([2, null, "L", null, null, "s", null, null]),
                json!([3, "F", null, "m", 1, null, "2026-12-03T13:00:00+05:30", "x"]),
            ],
        );
        let err = by_columns(
            &m,
            "m",
            &["id".into(), "age".into()],
            vec![json!(1), json!("seven")],
        )
        .unwrap_err();
        assert!(err.contains("column \"age\""), "{err}");
        assert!(m.columnar("nowhere", &[]).is_none());
    }

    #[test]
    fn a_join_and_its_inverse_write_what_the_map_form_writes() {
        use Form::*;
        use TypeFamily::*;
        let left = table(
            &[
                ("id", Integer, Plain),
                ("first", Text, Plain),
                ("last", Text, Plain),
                ("b", Blob, Plain),
            ],
            "id",
        );
        let right = table(
            &[
                ("pid", Integer, Plain),
                ("name", Text, Plain),
                ("b", Blob, Plain),
            ],
            "pid",
        );
        let e = entity(
            r#"columns = { id = "pid", b = "b" }
transforms = [{ join = ["first", "last"], into = "name" }]"#,
        );
        let (m, _) = Mapping::check(&e, Some(&left), Some(&right)).unwrap();
        same(
            &m,
            "m",
            &["id", "first", "last", "b"],
            &[
                json!([1, "Ada", "Lovelace", "\\x00ff"]),
                json!([2, null, "L", null]),
                json!([3, 7, null, null]),
            ],
        );
        same(
            &m,
            "s",
            &["pid", "name", "b"],
            &[
                json!([1, "Ada Lovelace", "\\x00"]),
                json!([2, "Ada", null]),
                json!([3, null, null]),
            ],
        );
        let c = m.columnar("m", &["id".into()]).unwrap();
        assert_eq!(c.bytes, ["b"]);
        assert_eq!(
            (c.table.as_str(), c.key.as_slice()),
            ("persons", &["pid".to_string()][..])
        );
    }
}
