//! The validator's row hash, computed inside each database: an SQL expression on PostgreSQL
//! and MariaDB, the functions `strangler_row_hash` and `strangler_hash_sum` registered on
//! SQLite connections. All three give the same number for the same values' text, so a
//! segment's checksum can be compared across databases without reading its rows.
//!
//! The hashed text is each value in turn: a column whose text cannot hold a comma (integers,
//! booleans, date-times) as `text,`; any other as `length:text` (length in characters). NULL
//! is `N` (`N,`), which no number, date-time or length starts with, so NULL never equals an
//! empty string and no two rows share a text. The hash is the first 60 bits of its MD5.
//!
//! When both sides are PostgreSQL, the hash need not be computed anywhere else, and
//! PostgreSQL's own `hashtextextended` (64-bit, on the text's bytes in the "C" collation)
//! takes its place: MD5 costs PostgreSQL about twice as much as building the text.

use md5::{Digest, Md5};
use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Result};

/// How one column's value is written into the hashed text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `text,`: for values whose text never holds a comma.
    Plain,
    /// `length:text`: for any text.
    Counted,
}

/// The row hash of values already in their text form (`None`: NULL).
pub fn row_hash<'a>(values: impl IntoIterator<Item = (Field, Option<&'a [u8]>)>) -> i64 {
    let mut h = Md5::new();
    for (field, v) in values {
        match (field, v) {
            (Field::Plain, None) => h.update(b"N,"),
            (Field::Counted, None) => h.update(b"N"),
            (Field::Plain, Some(t)) => {
                h.update(t);
                h.update(b",");
            }
            (Field::Counted, Some(t)) => {
                let chars = std::str::from_utf8(t).map_or(t.len(), |s| s.chars().count());
                h.update(chars.to_string().as_bytes());
                h.update(b":");
                h.update(t);
            }
        }
    }
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(first) >> 4) as i64
}

const ROW_HASH: &str = "strangler_row_hash";
const HASH_SUM: &str = "strangler_hash_sum";

fn fields_arg(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|f| if *f == Field::Plain { 'P' } else { 'C' })
        .collect()
}

fn hashed_text(kind: &str, columns: &[(String, Field)]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|(c, f)| {
            let q = format!("({c})");
            match (kind, f) {
                ("postgres", Field::Plain) => format!("COALESCE({q}::text, 'N') || ','"),
                ("postgres", Field::Counted) => {
                    format!("COALESCE(char_length({q}::text)::text || ':' || {q}::text, 'N')")
                }
                (_, Field::Plain) => format!("COALESCE({q}, 'N'), ','"),
                (_, Field::Counted) => format!("COALESCE(CONCAT(CHAR_LENGTH({q}), ':', {q}), 'N')"),
            }
        })
        .collect();
    if kind == "postgres" {
        parts.join(" || ")
    } else {
        format!("CONCAT({})", parts.join(", "))
    }
}

/// Which row hash the two sides of a comparison compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowHash {
    /// The first 60 bits of an MD5, the same number on every database.
    Portable,
    /// PostgreSQL's own `hashtextextended`, cut to 60 bits: only when both sides are
    /// PostgreSQL.
    Postgres,
}

/// The SQL expression of the row hash (a non-negative 60-bit integer) of these values (SQL
/// expressions, quoted columns or functions of them) on database `kind`.
pub fn row_hash_sql(kind: &str, columns: &[(String, Field)], hash: RowHash) -> String {
    match kind {
        "postgres" if hash == RowHash::Postgres => format!(
            "(hashtextextended(({}) COLLATE \"C\", 0) & 1152921504606846975)",
            hashed_text(kind, columns)
        ),
        "postgres" => format!(
            "('x' || substr(md5({}), 1, 15))::bit(60)::bigint",
            hashed_text(kind, columns)
        ),
        "mysql" => format!(
            "CAST(CONV(SUBSTR(MD5({}), 1, 15), 16, 10) AS UNSIGNED)",
            hashed_text(kind, columns)
        ),
        _ => sqlite_call(ROW_HASH, columns),
    }
}

/// The SQL aggregate of the sum of the row hashes of these values, as exact decimal text.
pub fn hash_sum_sql(kind: &str, columns: &[(String, Field)], hash: RowHash) -> String {
    match kind {
        "postgres" => format!("sum({})::text", row_hash_sql(kind, columns, hash)),
        "mysql" => format!("CAST(SUM({}) AS CHAR)", row_hash_sql(kind, columns, hash)),
        _ => sqlite_call(HASH_SUM, columns),
    }
}

fn sqlite_call(name: &str, columns: &[(String, Field)]) -> String {
    let fields: Vec<Field> = columns.iter().map(|(_, f)| *f).collect();
    let mut args = vec![format!("'{}'", fields_arg(&fields))];
    args.extend(columns.iter().map(|(c, _)| c.clone()));
    format!("{name}({})", args.join(", "))
}

/// A value's text as the other databases print it for integers and text (floats in their
/// shortest exact form, bytes as lower-case hex), and whether it is a number (SQLite can keep
/// text in any column: such text is always counted, so it cannot run into the next value).
fn text(v: ValueRef<'_>) -> (Option<Vec<u8>>, bool) {
    match v {
        ValueRef::Null => (None, true),
        ValueRef::Integer(i) => (Some(i.to_string().into_bytes()), true),
        ValueRef::Real(f) => (Some(f.to_string().into_bytes()), true),
        ValueRef::Text(t) => (Some(t.to_vec()), false),
        ValueRef::Blob(b) => (
            Some(
                b.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<String>()
                    .into_bytes(),
            ),
            false,
        ),
    }
}

/// The row hash of a call's arguments: the fields string, then the values.
fn hash_args(ctx: &Context<'_>) -> Result<i64> {
    let fields = ctx.get_raw(0).as_str()?.as_bytes().to_vec();
    let values: Vec<(Field, Option<Vec<u8>>)> = (1..ctx.len())
        .map(|i| {
            let (t, number) = text(ctx.get_raw(i));
            let plain = fields.get(i - 1) == Some(&b'P');
            match (plain, number, t) {
                (true, true, t) => (Field::Plain, t),
                // Text where only numbers or date-times belong: counted, after a '#' that no
                // plain value starts with.
                (true, false, Some(t)) => {
                    let mut marked =
                        format!("#{}:", String::from_utf8_lossy(&t).chars().count()).into_bytes();
                    marked.extend(t);
                    (Field::Plain, Some(marked))
                }
                (_, _, t) => (Field::Counted, t),
            }
        })
        .collect();
    Ok(row_hash(values.iter().map(|(f, v)| (*f, v.as_deref()))))
}

struct HashSum;

impl Aggregate<u128, Option<String>> for HashSum {
    fn init(&self, _: &mut Context<'_>) -> Result<u128> {
        Ok(0)
    }

    fn step(&self, ctx: &mut Context<'_>, sum: &mut u128) -> Result<()> {
        *sum += hash_args(ctx)? as u128;
        Ok(())
    }

    fn finalize(&self, _: &mut Context<'_>, sum: Option<u128>) -> Result<Option<String>> {
        Ok(sum.map(|s| s.to_string()))
    }
}

/// Registers the SQLite functions on a connection.
pub(super) fn register(conn: &Connection) -> Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function(ROW_HASH, -1, flags, |ctx| hash_args(ctx))?;
    conn.create_aggregate_function(HASH_SUM, -1, flags, HashSum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's own hash only where both sides are PostgreSQL, on the text's bytes
    /// whatever the collation; MD5 everywhere else.
    #[test]
    fn the_postgres_hash_is_asked_for_by_name() {
        let cols = [("\"memo\"".to_string(), Field::Counted)];
        let native = row_hash_sql("postgres", &cols, RowHash::Postgres);
        assert!(native.starts_with("(hashtextextended(("), "{native}");
        assert!(native.contains(") COLLATE \"C\", 0) & 1152921504606846975)"));
        assert!(row_hash_sql("postgres", &cols, RowHash::Portable).contains("md5("));
        assert!(row_hash_sql("mysql", &cols, RowHash::Postgres).contains("MD5("));
        assert!(hash_sum_sql("postgres", &cols, RowHash::Postgres).starts_with("sum((hash"));
    }

    #[test]
    fn same_number_as_postgres_and_mariadb() {
        // SELECT ('x' || substr(md5('3:abc'), 1, 15))::bit(60)::bigint on PostgreSQL, and
        // CAST(CONV(SUBSTR(MD5('3:abc'), 1, 15), 16, 10) AS UNSIGNED) on MariaDB.
        assert_eq!(
            row_hash([(Field::Counted, Some(&b"abc"[..]))]),
            1045467851605560530
        );
        let c = Connection::open_in_memory().unwrap();
        register(&c).unwrap();
        let h: i64 = c
            .query_row("SELECT strangler_row_hash('C', 'abc')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(h, 1045467851605560530);
        let n: i64 = c
            .query_row("SELECT strangler_row_hash('CPC', NULL, 5, 'é')", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            n,
            row_hash([
                (Field::Counted, None),
                (Field::Plain, Some(&b"5"[..])),
                (Field::Counted, Some("é".as_bytes()))
            ])
        );
        assert_ne!(
            row_hash([(Field::Counted, None)]),
            row_hash([(Field::Counted, Some(&b""[..]))]),
            "NULL is not an empty string"
        );
        // Text in a column of numbers cannot pass for two numbers.
        let two: i64 = c
            .query_row("SELECT strangler_row_hash('PP', 1, 2)", [], |r| r.get(0))
            .unwrap();
        let one: i64 = c
            .query_row("SELECT strangler_row_hash('PP', '1,2', NULL)", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_ne!(one, two);
        let sum: String = c
            .query_row(
                "SELECT strangler_hash_sum('C', v) FROM (SELECT 'abc' AS v UNION ALL SELECT 'abc')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sum, (2 * 1045467851605560530u128).to_string());
    }
}
