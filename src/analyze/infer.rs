//! Foreign keys nobody declared, inferred from column names and types: `customer_id` →
//! `customer.id` or `customers.id`, `account_record_id` → `accounts.record_id`.
//!
//! A column `P_S` refers to table `P` (or its plural) when that table has a unique key made of
//! the one column `S` of the same type family. Confidence: 0.9 when `S` is the primary key,
//! 0.75 when it is another unique key; ×0.8 when the name is ambiguous (both `P` and its
//! plural exist, or several schemas have it). A column already in a declared foreign key is
//! never inferred again.

use std::collections::HashSet;

use super::schema::{Reference, Schema};

/// Adds the inferred references to `schema`; returns how many were added.
pub fn infer(schema: &mut Schema) -> usize {
    let declared: HashSet<(usize, &str)> = schema
        .references
        .iter()
        .filter(|r| r.columns.len() == 1)
        .map(|r| (r.from, r.columns[0].as_str()))
        .collect();
    let mut found = Vec::new();
    for (from, table) in schema.tables.iter().enumerate() {
        for (column, fam) in &table.columns {
            if declared.contains(&(from, column.as_str())) {
                continue;
            }
            if let Some(r) = guess(schema, from, column, *fam) {
                found.push(r);
            }
        }
    }
    let n = found.len();
    schema.references.extend(found);
    n
}

/// The most specific reference a column's name suggests, if any.
fn guess(
    schema: &Schema,
    from: usize,
    column: &str,
    fam: crate::family::TypeFamily,
) -> Option<Reference> {
    let context = &schema.tables[from].name;
    // The longest table-name part first: `account_record_id` tries `account_record` + `id`
    // before `account` + `record_id`.
    let splits = column
        .char_indices()
        .filter(|(_, c)| *c == '_')
        .map(|(i, _)| i);
    let mut splits: Vec<usize> = splits.collect();
    splits.reverse();
    for at in splits {
        let (prefix, target_column) = (&column[..at], &column[at + 1..]);
        if prefix.is_empty() || target_column.is_empty() {
            continue;
        }
        let mut hits: Vec<(usize, f64)> = Vec::new();
        for name in plurals(prefix) {
            for to in schema.candidates(&name, context) {
                let t = &schema.tables[to];
                if to == from && target_column == column {
                    continue;
                }
                if t.family(target_column) != Some(fam) {
                    continue;
                }
                let confidence = if t.key.len() == 1 && t.key[0] == target_column {
                    0.9
                } else if t
                    .unique
                    .iter()
                    .any(|u| u.len() == 1 && u[0] == target_column)
                {
                    0.75
                } else {
                    continue;
                };
                hits.push((to, confidence));
            }
        }
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(&(to, confidence)) = hits.first() {
            let confidence = if hits.len() > 1 {
                confidence * 0.8
            } else {
                confidence
            };
            return Some(Reference {
                from,
                columns: vec![column.to_string()],
                to,
                references: vec![target_column.to_string()],
                inferred: Some(confidence),
            });
        }
    }
    None
}

/// A noun and its English plurals: `customer` → customers; `category` → categories;
/// `address` → addresses.
fn plurals(noun: &str) -> Vec<String> {
    let mut out = vec![noun.to_string(), format!("{noun}s")];
    if let Some(stem) = noun.strip_suffix('y') {
        out.push(format!("{stem}ies"));
    }
    if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| noun.ends_with(e))
    {
        out.push(format!("{noun}es"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::schema::Table;
    use crate::family::TypeFamily::{Integer, Text};

    fn table(name: &str, cols: &[(&str, crate::family::TypeFamily)], key: &[&str]) -> Table {
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        Table {
            name: name.into(),
            columns: cols.iter().map(|(c, f)| (c.to_string(), *f)).collect(),
            unique: if key.is_empty() {
                vec![]
            } else {
                vec![key.clone()]
            },
            key,
        }
    }

    fn names(s: &Schema) -> Vec<String> {
        s.references
            .iter()
            .map(|r| {
                format!(
                    "{}.{}->{}.{} {:?}",
                    s.tables[r.from].name,
                    r.columns.join(","),
                    s.tables[r.to].name,
                    r.references.join(","),
                    r.inferred
                )
            })
            .collect()
    }

    #[test]
    fn names_and_types_suggest_references_plural_and_multi_word() {
        let mut s = Schema::new(vec![
            table("customers", &[("id", Integer), ("name", Text)], &["id"]),
            table("category", &[("id", Integer)], &["id"]),
            table(
                "accounts",
                &[("record_id", Integer), ("id", Text)],
                &["record_id"],
            ),
            table(
                "orders",
                &[
                    ("id", Integer),
                    ("customer_id", Integer),
                    ("category_id", Integer),
                    ("account_record_id", Integer),
                    ("account_id", Integer), // accounts.id is text and not unique
                    ("parent_id", Integer),  // no table named parent
                ],
                &["id"],
            ),
        ]);
        assert_eq!(infer(&mut s), 3);
        assert_eq!(
            names(&s),
            [
                "orders.customer_id->customers.id Some(0.9)",
                "orders.category_id->category.id Some(0.9)",
                "orders.account_record_id->accounts.record_id Some(0.9)",
            ]
        );
        assert_eq!(s.inferred(), 3);
    }

    #[test]
    fn declared_columns_are_not_inferred_again_and_ambiguity_lowers_confidence() {
        let mut s = Schema::new(vec![
            table("user", &[("id", Integer)], &["id"]),
            table("users", &[("id", Integer)], &["id"]),
            table(
                "posts",
                &[
                    ("id", Integer),
                    ("user_id", Integer),
                    ("category_id", Integer),
                ],
                &["id"],
            ),
            table("categories", &[("id", Integer)], &["id"]),
        ]);
        assert!(s.declare("posts", &["category_id"], "categories", &["id"]));
        assert_eq!(infer(&mut s), 1);
        let r = &s.references[1];
        assert_eq!(s.tables[r.to].name, "user");
        assert!((r.inferred.unwrap() - 0.72).abs() < 1e-9);
    }

    #[test]
    fn schemas_resolve_to_the_same_schema_first() {
        let mut s = Schema::new(vec![
            table("shop.customers", &[("id", Integer)], &["id"]),
            table("crm.customers", &[("id", Integer)], &["id"]),
            table(
                "shop.orders",
                &[("id", Integer), ("customer_id", Integer)],
                &["id"],
            ),
        ]);
        assert_eq!(infer(&mut s), 1);
        assert_eq!(s.tables[s.references[0].to].name, "shop.customers");
        assert_eq!(s.resolve("orders", "x"), Some(2));
        assert_eq!(s.resolve("customers", "crm.x"), Some(0));
        assert_eq!(
            s.resolve("customers", "x"),
            None,
            "ambiguous without context"
        );
        assert_eq!(s.resolve("ORDERS", "x"), Some(2));
    }
}
