//! The schema as the analyzer sees it: tables with their keys, and the references between
//! them, declared or inferred, looked up by any name a log or an evidence file may use.

use std::collections::HashMap;

use crate::family::TypeFamily;
use crate::store::Catalog;

/// A table: its name as the database reports it, its columns and its keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Name (`schema.table` on PostgreSQL).
    pub name: String,
    /// Columns in table order, with their type families.
    pub columns: Vec<(String, TypeFamily)>,
    /// Primary key (the first unique key), empty when the table has none.
    pub key: Vec<String>,
    /// Every unique key, the primary key first.
    pub unique: Vec<Vec<String>>,
}

impl Table {
    /// The family of a column, when the table has it.
    pub fn family(&self, column: &str) -> Option<TypeFamily> {
        self.columns
            .iter()
            .find(|(c, _)| c == column)
            .map(|(_, f)| *f)
    }

    /// The name without its schema.
    pub fn short(&self) -> &str {
        short(&self.name)
    }
}

/// The name without its schema (`public.orders` → `orders`).
pub fn short(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(_, t)| t)
}

/// A reference from one table's columns to another's.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// Referencing table (index into [`Schema::tables`]).
    pub from: usize,
    /// Referencing columns.
    pub columns: Vec<String>,
    /// Referenced table (index into [`Schema::tables`]).
    pub to: usize,
    /// Referenced columns.
    pub references: Vec<String>,
    /// `None` when declared; the confidence in (0, 1] when inferred from names and types.
    pub inferred: Option<f64>,
}

/// Tables and references, with a name index.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// Tables in name order.
    pub tables: Vec<Table>,
    /// References, declared first, then inferred.
    pub references: Vec<Reference>,
    by_name: HashMap<String, usize>,
    /// Unqualified names: the table, or `None` when several schemas have one so named.
    by_short: HashMap<String, Option<usize>>,
}

impl Schema {
    /// The schema of a database's catalog, declared references only.
    pub fn from_catalog(catalog: &Catalog) -> Schema {
        let mut tables: Vec<Table> = catalog
            .tables
            .iter()
            .map(|(name, info)| Table {
                name: name.clone(),
                columns: info
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.family))
                    .collect(),
                key: info.unique_keys.first().cloned().unwrap_or_default(),
                unique: info.unique_keys.clone(),
            })
            .collect();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        let mut schema = Schema::new(tables);
        for (alias, table) in &catalog.aliases {
            if let Some(&i) = schema.by_name.get(table) {
                schema.by_name.insert(alias.clone(), i);
            }
        }
        for (name, info) in &catalog.tables {
            let Some(from) = schema.index(name) else {
                continue;
            };
            for fk in &info.foreign_keys {
                // A reference to a table outside the catalog (another database) is left out.
                if let Some(to) = schema.resolve(&fk.table, name) {
                    schema.references.push(Reference {
                        from,
                        columns: fk.columns.clone(),
                        to,
                        references: fk.references.clone(),
                        inferred: None,
                    });
                }
            }
        }
        schema
    }

    /// A schema of these tables (sorted by name) and no references yet.
    pub fn new(mut tables: Vec<Table>) -> Schema {
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        let by_name = tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let mut by_short: HashMap<String, Option<usize>> = HashMap::new();
        for (i, t) in tables.iter().enumerate() {
            by_short
                .entry(t.short().to_string())
                .and_modify(|e| *e = None)
                .or_insert(Some(i));
        }
        Schema {
            tables,
            references: Vec::new(),
            by_name,
            by_short,
        }
    }

    /// Adds a declared reference between two tables by name; false when either is unknown.
    pub fn declare(&mut self, from: &str, columns: &[&str], to: &str, references: &[&str]) -> bool {
        let (Some(f), Some(t)) = (self.index(from), self.index(to)) else {
            return false;
        };
        self.references.push(Reference {
            from: f,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            to: t,
            references: references.iter().map(|c| c.to_string()).collect(),
            inferred: None,
        });
        true
    }

    /// The table with exactly this name or alias.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The table a name means as written by `context` (a table name): exact, then an
    /// unqualified name in the context's schema, in `public`, or in the only schema that has
    /// it; case-insensitively as a last resort (unquoted SQL names fold case).
    pub fn resolve(&self, name: &str, context: &str) -> Option<usize> {
        if let Some(i) = self.index(name) {
            return Some(i);
        }
        if !name.contains('.') {
            if let Some((schema, _)) = context.rsplit_once('.')
                && let Some(i) = self.index(&format!("{schema}.{name}"))
            {
                return Some(i);
            }
            if let Some(i) = self.index(&format!("public.{name}")) {
                return Some(i);
            }
            if let Some(Some(i)) = self.by_short.get(name) {
                return Some(*i);
            }
        }
        let lower = name.to_ascii_lowercase();
        if lower != name {
            return self.resolve(&lower, context);
        }
        None
    }

    /// The tables an unqualified name may mean, the context's schema first.
    pub fn candidates(&self, name: &str, context: &str) -> Vec<usize> {
        if let Some((schema, _)) = context.rsplit_once('.') {
            if let Some(i) = self.index(&format!("{schema}.{name}")) {
                return vec![i];
            }
            return self
                .tables
                .iter()
                .enumerate()
                .filter(|(_, t)| t.short() == name)
                .map(|(i, _)| i)
                .collect();
        }
        self.index(name).into_iter().collect()
    }

    /// How many references were inferred.
    pub fn inferred(&self) -> usize {
        self.references
            .iter()
            .filter(|r| r.inferred.is_some())
            .count()
    }
}
