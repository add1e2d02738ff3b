//! A table as the database describes it: columns with their type families, unique keys,
//! foreign keys and indexes; and what capture is installed on.

use std::collections::HashSet;

use crate::family::TypeFamily;

/// A column as the database describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Declared type, as the database spells it.
    pub declared: String,
    /// Type family.
    pub family: TypeFamily,
    /// NULL allowed.
    pub nullable: bool,
    /// Has a default (or is generated).
    pub has_default: bool,
    /// How the column holds values beyond what its family says.
    pub form: Form,
}

/// How a column holds values beyond what its family says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    /// As the family says.
    #[default]
    Plain,
    /// A date-time without a zone: an instant is written into it as its UTC time.
    UtcNaive,
    /// A JSON document kept as its text (SQLite, MariaDB): every value is written serialized.
    JsonText,
}

/// A table's columns and unique keys.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// Columns in table order.
    pub columns: Vec<Column>,
    /// Primary key and unique indexes, each as its column list.
    pub unique_keys: Vec<Vec<String>>,
    /// The primary key's columns in key order; empty when the table has none.
    pub primary_key: Vec<String>,
    /// Check constraints: each one's condition as the database prints it.
    pub checks: Vec<String>,
    /// Foreign keys declared on the table.
    pub foreign_keys: Vec<ForeignKey>,
    /// Indexes, unique or not, the primary key's included where the database lists it as one.
    pub indexes: Vec<Index>,
}

/// A declared foreign key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// Columns of this table, in key order.
    pub columns: Vec<String>,
    /// The referenced table.
    pub table: String,
    /// The referenced columns, in the same order.
    pub references: Vec<String>,
}

/// An index on plain columns (an expression's part is left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Name.
    pub name: String,
    /// Columns, in index order.
    pub columns: Vec<String>,
    /// Whether it enforces uniqueness.
    pub unique: bool,
}

impl TableInfo {
    /// Looks up a column.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Whether `key` (in any order) is the primary key or a unique index.
    pub fn is_unique(&self, key: &[String]) -> bool {
        let want: HashSet<&String> = key.iter().collect();
        self.unique_keys
            .iter()
            .any(|k| k.len() == key.len() && k.iter().all(|c| want.contains(c)))
    }
}

/// Every user table of a database, for readers of the whole schema (the boundary analyzer).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// Tables by the name the database reports (`schema.table` on PostgreSQL), in name order.
    pub tables: Vec<(String, TableInfo)>,
    /// Other names meaning one of the tables: a PostgreSQL partition and its parent.
    pub aliases: Vec<(String, String)>,
}

/// A table to capture.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSpec {
    /// Table.
    pub table: String,
    /// Key columns.
    pub key: Vec<String>,
}

/// Maps a declared column type to its family.
pub fn family(declared: &str) -> TypeFamily {
    let t = declared.to_ascii_lowercase();
    if t.contains("interval") || t.contains("date") || t.contains("time") {
        TypeFamily::Time
    } else if t.contains("bool") {
        TypeFamily::Boolean
    } else if t.contains("int") || t == "serial" || t == "bigserial" {
        TypeFamily::Integer
    } else if ["real", "floa", "doub", "numeric", "decimal", "money"]
        .iter()
        .any(|k| t.contains(k))
    {
        TypeFamily::Real
    } else if t.contains("json") {
        TypeFamily::Json
    } else if t.contains("blob") || t.contains("bytea") || t.contains("binary") {
        TypeFamily::Blob
    } else {
        TypeFamily::Text
    }
}
