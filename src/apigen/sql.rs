//! The SQL a checked request becomes in each database's dialect: quoted identifiers from the
//! catalog, every value a bound parameter (cast to the column's type on PostgreSQL).

use crate::store::Param;

use super::model::Resource;
use super::query::ListQuery;
use super::types::{ApiType, Db};

/// A statement being built: its text and its bound values.
#[derive(Debug, Default)]
pub struct Sql {
    /// Text.
    pub text: String,
    /// Bound values, in placeholder order.
    pub params: Vec<Param>,
}

/// The type a PostgreSQL placeholder is cast to for a column: the declared type without its
/// modifiers (a cast to `varchar(3)` would cut a longer value silently), text for strings.
fn pg_cast(declared: &str) -> String {
    let base = match (declared.find('('), declared.find(')')) {
        (Some(a), Some(b)) if b > a => format!("{}{}", &declared[..a], &declared[b + 1..]),
        _ => declared.to_string(),
    };
    if base.starts_with("character") || base.starts_with("varchar") {
        "text".into()
    } else {
        base
    }
}

impl Sql {
    /// Appends a placeholder for `p`, cast to the column's type on PostgreSQL.
    pub fn param(&mut self, p: Param, declared: &str, db: Db) {
        self.params.push(p);
        if db == Db::Postgres {
            let n = self.params.len();
            self.text
                .push_str(&format!("CAST(${n}::text AS {})", pg_cast(declared)));
        } else {
            self.text.push('?');
        }
    }
}

/// A quoted identifier.
pub fn ident(name: &str, db: Db) -> String {
    match db {
        Db::Mysql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// A quoted table name (`schema.table` quoted in two parts on PostgreSQL).
pub fn table(name: &str, db: Db) -> String {
    match (db, name.split_once('.')) {
        (Db::Postgres, Some((s, t))) => format!("{}.{}", ident(s, db), ident(t, db)),
        _ => ident(name, db),
    }
}

/// The select list for these fields: PostgreSQL columns without a native reading (decimals,
/// dates, JSON, bytes…) read as their text.
pub fn select_list(r: &Resource, fields: &[usize], db: Db) -> String {
    fields
        .iter()
        .map(|&i| {
            let f = &r.fields[i];
            let c = ident(&f.name, db);
            match (&f.ty, db) {
                (ApiType::Integer { .. } | ApiType::Boolean | ApiType::Float, _) => c,
                (_, Db::Postgres) => format!("{c}::text"),
                _ => c,
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `key = values` for the resource's key.
pub fn key_condition(sql: &mut Sql, r: &Resource, values: &[Param], db: Db) {
    for (n, (f, v)) in r.key_fields().zip(values).enumerate() {
        if n > 0 {
            sql.text.push_str(" AND ");
        }
        sql.text.push_str(&ident(&f.name, db));
        sql.text.push_str(" = ");
        sql.param(v.clone(), &f.declared, db);
    }
}

/// The WHERE clause of a list (empty when nothing filters).
pub fn conditions(sql: &mut Sql, r: &Resource, q: &ListQuery, db: Db) {
    let mut first = true;
    let mut and = |sql: &mut Sql| {
        sql.text.push_str(if first { " WHERE " } else { " AND " });
        first = false;
    };
    for f in &q.filters {
        let field = &r.fields[f.field];
        let c = ident(&field.name, db);
        and(sql);
        match f.op {
            "is_null" => {
                sql.text.push_str(&c);
                sql.text
                    .push_str(if f.null { " IS NULL" } else { " IS NOT NULL" });
            }
            "in" => {
                sql.text.push_str(&c);
                sql.text.push_str(" IN (");
                for (i, v) in f.values.iter().enumerate() {
                    if i > 0 {
                        sql.text.push_str(", ");
                    }
                    sql.param(v.clone(), &field.declared, db);
                }
                sql.text.push(')');
            }
            "like" => {
                sql.text.push_str(&c);
                sql.text.push_str(" LIKE ");
                sql.param(f.values[0].clone(), "text", db);
            }
            op => {
                let sym = match op {
                    "eq" => " = ",
                    "ne" => " <> ",
                    "gt" => " > ",
                    "gte" => " >= ",
                    "lt" => " < ",
                    _ => " <= ",
                };
                sql.text.push_str(&c);
                sql.text.push_str(sym);
                sql.param(f.values[0].clone(), &field.declared, db);
            }
        }
    }
    if let Some(after) = &q.after {
        and(sql);
        // (k1, k2) > (v1, v2), spelled out: row comparison is not indexed everywhere.
        let keys: Vec<_> = r.key_fields().collect();
        sql.text.push('(');
        for i in 0..keys.len() {
            if i > 0 {
                sql.text.push_str(" OR ");
            }
            sql.text.push('(');
            for (j, k) in keys.iter().enumerate().take(i + 1) {
                if j > 0 {
                    sql.text.push_str(" AND ");
                }
                sql.text.push_str(&ident(&k.name, db));
                sql.text.push_str(if j == i { " > " } else { " = " });
                sql.param(after[j].clone(), &k.declared, db);
            }
            sql.text.push(')');
        }
        sql.text.push(')');
    }
}

/// ORDER BY: the requested columns, then the key (rows with equal sort values stay in one
/// order from page to page); a keyless table's every ordered column stands in for the key.
pub fn order(r: &Resource, q: &ListQuery, db: Db) -> String {
    let mut parts: Vec<String> = q
        .sort
        .iter()
        .map(|(f, desc)| {
            let c = ident(&r.fields[*f].name, db);
            // NULLs sort as the smallest value on every database.
            match (db, desc) {
                (Db::Postgres, false) => format!("{c} ASC NULLS FIRST"),
                (Db::Postgres, true) => format!("{c} DESC NULLS LAST"),
                (_, false) => format!("{c} ASC"),
                (_, true) => format!("{c} DESC"),
            }
        })
        .collect();
    for f in r.key_fields() {
        if !q.sort.iter().any(|(s, _)| r.fields[*s].name == f.name) {
            parts.push(format!("{} ASC", ident(&f.name, db)));
        }
    }
    if r.key.is_empty() {
        // No key to break ties: every ordered column does, so offset pages stay apart.
        for (i, f) in r.fields.iter().enumerate() {
            let ordered = !matches!(f.ty, ApiType::Json | ApiType::Bytes);
            if ordered && !q.sort.iter().any(|(s, _)| *s == i) {
                parts.push(format!("{} ASC", ident(&f.name, db)));
            }
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", parts.join(", "))
    }
}
