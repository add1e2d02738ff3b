//! The SQL the validator reads with: a key-ordered page of one side (keyset paging, text keys
//! in byte order on every database) and the rows of given keys.

use crate::store::{Param, quote, quote_table};

use super::plan::{KeyKind, KeyPart, Plan};

impl Plan {
    /// The SELECT of one key-ordered page of side `i` (0 left, 1 right) after `after` (none:
    /// from the start), at most `limit` rows.
    pub fn page_sql(
        &self,
        i: usize,
        after: Option<&[KeyPart]>,
        limit: usize,
    ) -> (String, Vec<Param>) {
        let s = &self.sides[i];
        let mut params = Vec::new();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE ",
            self.select_list(i),
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

    /// The SELECT of the rows of side `i` with these keys, in key order.
    pub fn keys_sql(&self, i: usize, keys: &[Vec<KeyPart>]) -> (String, Vec<Param>) {
        let s = &self.sides[i];
        let mut params = Vec::new();
        let mut sql = format!(
            "SELECT {} FROM {} WHERE ",
            self.select_list(i),
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

    fn select_list(&self, i: usize) -> String {
        let s = &self.sides[i];
        s.columns
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
