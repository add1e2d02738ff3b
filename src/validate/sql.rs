//! The SQL the validator reads with: a key-ordered page of one side (keyset paging, text keys
//! in byte order on every database) and the rows of given keys.

use crate::family::TypeFamily;
use crate::store::{Field, Param, RowHash, quote, quote_table};

use super::plan::{KeyKind, KeyPart, Plan};

/// How a compared column is printed for the row hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printed {
    /// As the database prints it.
    AsIs,
    /// A boolean as 0 or 1, as MariaDB keeps it.
    Bool,
    /// A date-time as PostgreSQL prints it, `YYYY-MM-DD HH:MM:SS[.f]` (an instant in UTC).
    Stamp,
}

impl Plan {
    /// The SELECT of one key-ordered page of side `i` (0 left, 1 right) after `after` (none:
    /// from the start), at most `limit` rows; of the key columns only with `keys_only`.
    pub fn page_sql(
        &self,
        i: usize,
        after: Option<&[KeyPart]>,
        limit: usize,
        keys_only: bool,
    ) -> (String, Vec<Param>) {
        let s = &self.sides[i];
        let mut params = Vec::new();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE ",
            self.select_list(i, keys_only),
            quote_table(s.kind, &s.table)
        );
        sql.push_str(&self.not_null(i));
        if let Some(after) = after {
            let (cols, vals) = self.key_tuple(i, after, &mut params);
            sql.push_str(&format!(" AND ({cols}) > ({vals})"));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", self.order(i)));
        (sql, params)
    }

    /// The SELECT of the rows of side `i` with these keys, in key order; of the key columns
    /// only with `keys_only`.
    pub fn keys_sql(
        &self,
        i: usize,
        keys: &[Vec<KeyPart>],
        keys_only: bool,
    ) -> (String, Vec<Param>) {
        let s = &self.sides[i];
        let mut params = Vec::new();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE ",
            self.select_list(i, keys_only),
            quote_table(s.kind, &s.table)
        );
        let mut alts = Vec::with_capacity(keys.len());
        let mut cols = String::new();
        for k in keys {
            let (c, v) = self.key_tuple(i, k, &mut params);
            cols = c;
            alts.push(format!("({v})"));
        }
        if alts.is_empty() {
            sql.push_str("1 = 0");
        } else {
            sql.push_str(&format!("({cols}) IN ({})", alts.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY {}", self.order(i)));
        (sql, params)
    }

    /// The SELECT of the keys of side `i` from `first` to `last` (inclusive, in key order):
    /// a range the key's index serves when every key column is an integer, where a long
    /// `IN` list may be planned as a scan of the whole table.
    pub fn range_sql(&self, i: usize, first: &[KeyPart], last: &[KeyPart]) -> (String, Vec<Param>) {
        let s = &self.sides[i];
        let mut params = Vec::new();
        let (cols, low) = self.key_tuple(i, first, &mut params);
        let (_, high) = self.key_tuple(i, last, &mut params);
        let sql = format!(
            "SELECT {} FROM {} WHERE {} AND ({cols}) >= ({low}) AND ({cols}) <= ({high}) ORDER BY {}",
            self.select_list(i, true),
            quote_table(s.kind, &s.table),
            self.not_null(i),
            self.order(i)
        );
        (sql, params)
    }

    /// The columns read of side `i` (the key's come first), or only the key's.
    fn select_list(&self, i: usize, keys_only: bool) -> String {
        let s = &self.sides[i];
        let n = if keys_only {
            s.key.len()
        } else {
            s.columns.len()
        };
        s.columns[..n]
            .iter()
            .enumerate()
            .map(|(n, c)| {
                // Named apart from the columns: ORDER BY a column's own name would sort by
                // the output instead (PostgreSQL's text of it).
                let q = quote(s.kind, c);
                if s.kind == "postgres" {
                    format!("{q}::text AS s{n}")
                } else {
                    format!("{q} AS s{n}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn not_null(&self, i: usize) -> String {
        let s = &self.sides[i];
        s.key
            .iter()
            .map(|k| format!("{} IS NOT NULL", quote(s.kind, k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// A key column as ordered: text in byte order on every database.
    fn ordered(&self, i: usize, at: usize) -> String {
        let s = &self.sides[i];
        let q = quote(s.kind, &s.key[at]);
        match (self.key_kinds[at], s.kind) {
            (KeyKind::Text, "postgres") => format!("{q} COLLATE \"C\""),
            (KeyKind::Text, "mysql") => format!("BINARY {q}"),
            _ => q,
        }
    }

    fn order(&self, i: usize) -> String {
        (0..self.key_kinds.len())
            .map(|at| self.ordered(i, at))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn key_tuple(&self, i: usize, key: &[KeyPart], params: &mut Vec<Param>) -> (String, String) {
        let s = &self.sides[i];
        let cols = (0..key.len())
            .map(|at| self.ordered(i, at))
            .collect::<Vec<_>>()
            .join(", ");
        let mut vals = Vec::with_capacity(key.len());
        for part in key {
            let p = match part {
                KeyPart::Int(v) => {
                    i64::try_from(*v).map_or_else(|_| Param::Text(v.to_string()), Param::Int)
                }
                KeyPart::Text(t) => Param::Text(t.clone()),
            };
            params.push(p);
            vals.push(match (s.kind, part) {
                ("postgres", KeyPart::Int(_)) => format!("CAST(${}::text AS bigint)", params.len()),
                ("postgres", KeyPart::Text(_)) => format!("${}::text", params.len()),
                _ => "?".to_string(),
            });
        }
        (cols, vals.join(", "))
    }
}

impl Plan {
    /// Whether segment checksums computed in SQL can decide that rows are equal: both keys
    /// enforced unique, the first key column an integer, every compared column only renamed
    /// (no transform reshapes a value) and printed alike by both databases.
    pub fn checksummable(&self) -> bool {
        use crate::config::sync::Transform;
        self.sides.iter().all(|s| s.unique)
            && self.key_kinds.first() == Some(&KeyKind::Int)
            && self
                .entity
                .transforms
                .iter()
                .all(|t| matches!(t, Transform::Default(..)))
            && (0..self.compared.len()).all(|at| self.printed(at).is_some())
    }

    /// A compared column's family and declared type on side `i`.
    fn column_type(&self, i: usize, at: usize) -> Option<(TypeFamily, &str)> {
        let s = &self.sides[i];
        let c = &self.compared[at];
        let col = if i == 0 { &c.name } else { &c.right };
        let n = s.columns.iter().position(|x| x == col)?;
        Some((s.families[n], s.declared[n].as_str()))
    }

    /// How compared column `at` is printed for the row hash so that both databases print
    /// the same value alike; `None` when they cannot be made to.
    fn printed(&self, at: usize) -> Option<Printed> {
        use TypeFamily::*;
        let (a, b) = (self.column_type(0, at)?, self.column_type(1, at)?);
        let kinds = [self.sides[0].kind, self.sides[1].kind];
        if kinds[0] == kinds[1] {
            return (a.0 == b.0).then_some(Printed::AsIs);
        }
        let sqlite = kinds.contains(&"sqlite");
        let stamp = |d: &str| d.starts_with("timestamp") || d.starts_with("datetime");
        match (a.0, b.0) {
            (Integer, Integer) | (Text, Text) => Some(Printed::AsIs),
            // SQLite keeps decimals as floats, which print differently.
            (Real, Real) if !sqlite => Some(Printed::AsIs),
            (Boolean, Integer) | (Integer, Boolean) | (Boolean, Boolean) if !sqlite => {
                Some(Printed::Bool)
            }
            (Time, Time) if !sqlite && stamp(a.1) && stamp(b.1) => Some(Printed::Stamp),
            _ => None,
        }
    }

    /// The columns the row hash of side `i` covers, as SQL expressions in the same order
    /// on both sides, each with how its text is written.
    fn hashed(&self, i: usize) -> Vec<(String, Field)> {
        use TypeFamily::*;
        let s = &self.sides[i];
        (0..self.compared.len())
            .map(|at| {
                let c = &self.compared[at];
                let q = quote(s.kind, if i == 0 { &c.name } else { &c.right });
                let ty = self.column_type(i, at);
                let expr = match (self.printed(at), s.kind, ty) {
                    (Some(Printed::Bool), "postgres", Some((Boolean, _))) => format!("{q}::int"),
                    (Some(Printed::Stamp), "postgres", Some((_, d))) => {
                        // An instant in UTC; infinity prints as itself, never as NULL.
                        if d.contains("with time zone") {
                            format!("({q} AT TIME ZONE 'UTC')::text")
                        } else {
                            format!("{q}::text")
                        }
                    }
                    (Some(Printed::Stamp), "mysql", _) => {
                        // PostgreSQL's form: no fraction when it is zero, else no trailing
                        // zeros.
                        format!(
                            "TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM DATE_FORMAT({q}, '%Y-%m-%d %H:%i:%s.%f')))"
                        )
                    }
                    _ => q,
                };
                let field = match ty {
                    Some((Integer | Boolean | Time, _)) => Field::Plain,
                    _ => Field::Counted,
                };
                (expr, field)
            })
            .collect()
    }

    fn first_key(&self, i: usize) -> String {
        quote(self.sides[i].kind, &self.sides[i].key[0])
    }

    fn as_text(&self, i: usize, expr: String) -> String {
        if self.sides[i].kind == "postgres" {
            format!("({expr})::text")
        } else {
            expr
        }
    }

    /// The smallest and largest first-key value of side `i` (within `range`, if given), and
    /// (SQLite, whose columns can hold any type) how many keys are not integers.
    pub fn bounds_sql(&self, i: usize, range: Option<(i64, i64)>) -> String {
        let s = &self.sides[i];
        let k = self.first_key(i);
        let odd = if s.kind == "sqlite" {
            format!("sum(typeof({k}) <> 'integer')")
        } else {
            "0".into()
        };
        format!(
            "SELECT {}, {}, {odd} FROM {} WHERE {}",
            self.as_text(i, format!("min({k})")),
            self.as_text(i, format!("max({k})")),
            quote_table(s.kind, &s.table),
            match range {
                Some((lo, hi)) => self.in_range(i, lo, hi),
                None => self.not_null(i),
            }
        )
    }

    /// The row hash both sides compute: PostgreSQL's own when both are PostgreSQL.
    fn row_hash(&self) -> RowHash {
        if self.sides.iter().all(|s| s.kind == "postgres") {
            RowHash::Postgres
        } else {
            RowHash::Portable
        }
    }

    fn in_range(&self, i: usize, lo: i64, hi: i64) -> String {
        let k = self.first_key(i);
        format!("{} AND {k} >= {lo} AND {k} <= {hi}", self.not_null(i))
    }

    /// Segment checksums of side `i` over first-key values `lo..=hi`, split into segments
    /// of `width` keys: one row per non-empty segment (its number, rows, and the sum of the
    /// row hashes as decimal text).
    pub fn segments_sql(&self, i: usize, lo: i64, hi: i64, width: i64) -> String {
        let s = &self.sides[i];
        let k = self.first_key(i);
        let group = match s.kind {
            "postgres" => format!("({k}::bigint - ({lo})) / {width}"),
            "mysql" => format!("(CAST({k} AS SIGNED) - ({lo})) DIV {width}"),
            _ => format!("({k} - ({lo})) / {width}"),
        };
        format!(
            "SELECT {}, {}, {} FROM {} WHERE {} GROUP BY {group}",
            self.as_text(i, group.clone()),
            self.as_text(i, "count(*)".into()),
            crate::store::hash_sum_sql(s.kind, &self.hashed(i), self.row_hash()),
            quote_table(s.kind, &s.table),
            self.in_range(i, lo, hi)
        )
    }

    /// One key-ordered page of side `i`'s keys and row hashes over first-key values
    /// `lo..=hi`, after `after`.
    pub fn hash_page_sql(
        &self,
        i: usize,
        (lo, hi): (i64, i64),
        after: Option<&[KeyPart]>,
        limit: usize,
    ) -> (String, Vec<Param>) {
        let s = &self.sides[i];
        let mut params = Vec::new();
        let keys: Vec<String> = s
            .key
            .iter()
            .enumerate()
            .map(|(n, c)| self.as_text(i, quote(s.kind, c)) + &format!(" AS s{n}"))
            .collect();
        let mut sql = format!(
            "SELECT {}, {} FROM {} WHERE {}",
            keys.join(", "),
            self.as_text(
                i,
                crate::store::row_hash_sql(s.kind, &self.hashed(i), self.row_hash()),
            ),
            quote_table(s.kind, &s.table),
            self.in_range(i, lo, hi)
        );
        if let Some(after) = after {
            let (cols, vals) = self.key_tuple(i, after, &mut params);
            sql.push_str(&format!(" AND ({cols}) > ({vals})"));
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", self.order(i)));
        (sql, params)
    }
}
