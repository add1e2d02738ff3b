//! The SQL the validator reads with: a key-ordered page of one side (keyset paging, text keys
//! in byte order on every database) and the rows of given keys.

use crate::store::{Field, Param, quote, quote_table};

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

impl Plan {
    /// Whether segment checksums computed in SQL can decide that rows are equal: both keys
    /// enforced unique, the first key column an integer, every compared column only renamed
    /// (no transform reshapes a value) and read in the same text form on both databases.
    pub fn checksummable(&self) -> bool {
        use crate::config::sync::Transform;
        use crate::family::TypeFamily::*;
        if !self.sides.iter().all(|s| s.unique)
            || self.key_kinds.first() != Some(&KeyKind::Int)
            || self
                .entity
                .transforms
                .iter()
                .any(|t| !matches!(t, Transform::Default(..)))
        {
            return false;
        }
        let same_kind = self.sides[0].kind == self.sides[1].kind;
        self.compared.iter().all(|c| {
            let fam = |i: usize, col: &str| {
                let s = &self.sides[i];
                s.columns
                    .iter()
                    .position(|x| x == col)
                    .map(|at| s.families[at])
            };
            match (fam(0, &c.name), fam(1, &c.right)) {
                (Some(a), Some(b)) if same_kind => a == b,
                // Across databases integers and text print alike, and decimals do between
                // PostgreSQL and MariaDB (SQLite keeps them as floats).
                (Some(a), Some(b)) => {
                    a == b
                        && (matches!(a, Integer | Text)
                            || (a == Real && self.sides.iter().all(|s| s.kind != "sqlite")))
                }
                _ => false,
            }
        })
    }

    /// The columns the row hash of side `i` covers, in the same order on both sides, each
    /// with how its text is written (the same on both sides: their families agree).
    fn hashed(&self, i: usize) -> Vec<(String, Field)> {
        use crate::family::TypeFamily::*;
        let s = &self.sides[i];
        self.compared
            .iter()
            .map(|c| {
                let col = if i == 0 { &c.name } else { &c.right };
                let family = s
                    .columns
                    .iter()
                    .position(|x| x == col)
                    .map(|at| s.families[at]);
                let field = match family {
                    Some(Integer | Boolean | Time) => Field::Plain,
                    _ => Field::Counted,
                };
                (col.clone(), field)
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
            crate::store::hash_sum_sql(s.kind, &self.hashed(i)),
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
            self.as_text(i, crate::store::row_hash_sql(s.kind, &self.hashed(i))),
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
