//! A generated service: its resources, one per table, named once and for good from the table
//! names, with their fields, key, links to other resources and the reason a resource is
//! read-only.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::store::{Catalog, Form, TableInfo};

use super::types::{ApiType, Db};

/// A column as the API serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Column name (also the JSON member's name).
    pub name: String,
    /// Declared type, as the database spells it.
    pub declared: String,
    /// What it holds.
    pub ty: ApiType,
    /// NULL allowed.
    pub nullable: bool,
    /// The database fills it when a create leaves it out.
    pub has_default: bool,
    /// How the database keeps it.
    pub form: Form,
    /// JSON Schema keywords from the table's simple check constraints.
    pub limits: serde_json::Map<String, serde_json::Value>,
}

/// A foreign key as a link from one resource to another.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// The link's name in `_links`: the foreign key's column without an `_id` suffix.
    pub rel: String,
    /// This resource's columns.
    pub columns: Vec<String>,
    /// The linked resource's name.
    pub resource: String,
    /// Whether the referenced columns are the linked resource's key (the link is a path).
    pub to_key: bool,
}

/// One table, served.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Name in paths: `/v1/{name}`.
    pub name: String,
    /// The table as the database names it (`schema.table` on PostgreSQL).
    pub table: String,
    /// Columns in table order.
    pub fields: Vec<Field>,
    /// Positions in `fields` of the key columns, in key order; empty when there is no key.
    pub key: Vec<usize>,
    /// Why the resource can only be listed, when it cannot be written or read by key.
    pub read_only: Option<String>,
    /// Links to other resources of the service.
    pub links: Vec<Link>,
}

impl Resource {
    /// A field by name.
    pub fn field(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The key's fields.
    pub fn key_fields(&self) -> impl Iterator<Item = &Field> {
        self.key.iter().map(|&i| &self.fields[i])
    }
}

/// The key a table is served by: its primary key, else a unique key of NOT NULL columns.
fn key_of(info: &TableInfo) -> Vec<String> {
    if !info.primary_key.is_empty() {
        return info.primary_key.clone();
    }
    info.unique_keys
        .iter()
        .find(|k| {
            !k.is_empty()
                && k.iter()
                    .all(|c| info.column(c).is_some_and(|col| !col.nullable))
        })
        .cloned()
        .unwrap_or_default()
}

/// A path-safe name: ASCII letters, digits, `_`, `-` and `.` kept, anything else `_`.
fn path_name(table: &str) -> String {
    table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The resource name of each table: the table's name, the `public.` schema dropped on
/// PostgreSQL (other schemas kept as `schema.table`), characters outside `[A-Za-z0-9_.-]`
/// replaced by `_`; a name two tables would share gets `_2`, `_3`… in table-name order.
pub fn resource_names(tables: &[String]) -> Vec<String> {
    let mut sorted: Vec<&String> = tables.iter().collect();
    sorted.sort();
    let mut taken: HashSet<String> = HashSet::new();
    let mut by_table: HashMap<&String, String> = HashMap::new();
    for t in sorted {
        let base = path_name(t.strip_prefix("public.").unwrap_or(t));
        let mut name = base.clone();
        let mut n = 2;
        while !taken.insert(name.clone()) {
            name = format!("{base}_{n}");
            n += 1;
        }
        by_table.insert(t, name);
    }
    tables.iter().map(|t| by_table[t].clone()).collect()
}

/// Why a name given with `--tables` does not select a table.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("no table {0:?} in the database (tables: {1})")]
pub struct UnknownTable(pub String, pub String);

/// The resources of the named tables of `catalog` (every table when `tables` is empty).
/// A PostgreSQL table may be named with or without its schema (`public.` assumed).
pub fn resources(
    catalog: &Catalog,
    tables: &[String],
    db: Db,
) -> Result<Vec<Resource>, UnknownTable> {
    let chosen: Vec<&(String, crate::store::TableInfo)> = if tables.is_empty() {
        catalog.tables.iter().collect()
    } else {
        let mut out = Vec::new();
        for want in tables {
            let found = catalog
                .tables
                .iter()
                .find(|(n, _)| n == want || n.strip_prefix("public.") == Some(want.as_str()));
            match found {
                Some(t) => {
                    if !out.iter().any(|o: &&(String, TableInfo)| o.0 == t.0) {
                        out.push(t)
                    }
                }
                None => {
                    let names: Vec<&str> = catalog
                        .tables
                        .iter()
                        .take(20)
                        .map(|(n, _)| n.as_str())
                        .collect();
                    return Err(UnknownTable(want.clone(), names.join(", ")));
                }
            }
        }
        out
    };
    let names = resource_names(&chosen.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    let by_table: BTreeMap<&str, &str> = chosen
        .iter()
        .zip(&names)
        .map(|((t, _), n)| (t.as_str(), n.as_str()))
        .collect();
    let keys: HashMap<&str, Vec<String>> = chosen
        .iter()
        .map(|(t, i)| (t.as_str(), key_of(i)))
        .collect();
    let mut out = Vec::with_capacity(chosen.len());
    for ((table, info), name) in chosen.iter().zip(&names) {
        let fields: Vec<Field> = info
            .columns
            .iter()
            .map(|c| Field {
                name: c.name.clone(),
                declared: c.declared.clone(),
                ty: ApiType::of(c, db),
                nullable: c.nullable,
                has_default: c.has_default,
                form: c.form,
                limits: serde_json::Map::new(),
            })
            .collect();
        let mut fields = fields;
        for (col, limits) in super::checks::keywords(&info.checks) {
            if let Some(f) = fields.iter_mut().find(|f| f.name == col) {
                f.limits = limits;
            }
        }
        let key_names = &keys[table.as_str()];
        let key: Vec<usize> = key_names
            .iter()
            .filter_map(|k| fields.iter().position(|f| &f.name == k))
            .collect();
        let read_only = if key.is_empty() {
            Some(format!(
                "table {table} has no primary key and no unique key of NOT NULL columns: \
                 its rows cannot be addressed one by one, so it is served as a read-only list"
            ))
        } else {
            None
        };
        let schema = table.split_once('.').map(|(s, _)| s);
        let mut links = Vec::new();
        let mut rels: HashSet<String> = HashSet::new();
        for fk in &info.foreign_keys {
            // A PostgreSQL foreign key names its table without the schema.
            let target = [
                fk.table.clone(),
                schema.map_or(String::new(), |s| format!("{s}.{}", fk.table)),
                format!("public.{}", fk.table),
            ]
            .into_iter()
            .find(|t| by_table.contains_key(t.as_str()));
            let Some(target) = target else { continue };
            let base = if fk.columns.len() == 1 {
                let c = &fk.columns[0];
                c.strip_suffix("_id")
                    .or_else(|| c.strip_suffix("Id"))
                    .filter(|s| !s.is_empty())
                    .unwrap_or(c)
                    .to_string()
            } else {
                by_table[target.as_str()].to_string()
            };
            let mut rel = base.clone();
            let mut n = 2;
            while rel == "self" || !rels.insert(rel.clone()) {
                rel = format!("{base}_{n}");
                n += 1;
            }
            links.push(Link {
                rel,
                columns: fk.columns.clone(),
                resource: by_table[target.as_str()].to_string(),
                to_key: keys[target.as_str()] == fk.references,
            });
        }
        out.push(Resource {
            name: name.clone(),
            table: table.clone(),
            fields,
            key,
            read_only,
            links,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_distinct() {
        let t: Vec<String> = ["public.users", "billing.invoices", "a b", "a_b", "Users"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            resource_names(&t),
            vec!["users", "billing.invoices", "a_b", "a_b_2", "Users"]
        );
    }
}
