//! The validator's row hash, computed inside each database: an SQL expression on PostgreSQL
//! and MariaDB, the function `strangler_row_hash(v1, v2, ...)` registered on SQLite
//! connections. All three give the same number for the same values' text, so a segment's
//! checksum can be compared across databases without reading its rows.
//!
//! The hashed text is each value's `length:text` (length in characters; `N` for NULL, so NULL
//! never equals an empty string) one after another; the hash is the first 60 bits of its MD5.

use md5::{Digest, Md5};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Result};

use super::quote;

/// Name of the SQLite function.
const ROW_HASH: &str = "strangler_row_hash";

/// The row hash of values already in their text form (`None`: NULL).
pub fn row_hash<'a>(values: impl IntoIterator<Item = Option<&'a [u8]>>) -> i64 {
    let mut h = Md5::new();
    for v in values {
        match v {
            None => h.update(b"N"),
            Some(t) => {
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

/// A value's text as SQLite's `CAST(v AS TEXT)` would give it for integers and text; floats in
/// their shortest exact form and bytes as lower-case hex.
fn text(v: ValueRef<'_>) -> Option<Vec<u8>> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string().into_bytes()),
        ValueRef::Real(f) => Some(f.to_string().into_bytes()),
        ValueRef::Text(t) => Some(t.to_vec()),
        ValueRef::Blob(b) => Some(
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<String>()
                .into_bytes(),
        ),
    }
}

/// The SQL expression of the row hash (a non-negative 60-bit integer) of these columns of a
/// table of database `kind`.
pub fn row_hash_sql(kind: &str, columns: &[String]) -> String {
    let q: Vec<String> = columns.iter().map(|c| quote(kind, c)).collect();
    match kind {
        "postgres" => {
            let parts: Vec<String> = q
                .iter()
                .map(|c| format!("COALESCE(char_length({c}::text)::text || ':' || {c}::text, 'N')"))
                .collect();
            format!(
                "('x' || substr(md5({}), 1, 15))::bit(60)::bigint",
                parts.join(" || ")
            )
        }
        "mysql" => {
            let parts: Vec<String> = q
                .iter()
                .map(|c| format!("COALESCE(CONCAT(CHAR_LENGTH({c}), ':', {c}), 'N')"))
                .collect();
            format!(
                "CAST(CONV(SUBSTR(MD5(CONCAT({})), 1, 15), 16, 10) AS UNSIGNED)",
                parts.join(", ")
            )
        }
        _ => format!("{ROW_HASH}({})", q.join(", ")),
    }
}

/// Registers the SQLite function on a connection.
pub(super) fn register(conn: &Connection) -> Result<()> {
    conn.create_scalar_function(
        ROW_HASH,
        -1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let values: Vec<Option<Vec<u8>>> =
                (0..ctx.len()).map(|i| text(ctx.get_raw(i))).collect();
            Ok(row_hash(values.iter().map(|v| v.as_deref())))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_number_as_postgres_and_mariadb() {
        // SELECT ('x' || substr(md5('3:abc'), 1, 15))::bit(60)::bigint on PostgreSQL, and
        // CAST(CONV(SUBSTR(MD5('3:abc'), 1, 15), 16, 10) AS UNSIGNED) on MariaDB.
        assert_eq!(row_hash([Some(&b"abc"[..])]), 1045467851605560530);
        let c = Connection::open_in_memory().unwrap();
        register(&c).unwrap();
        let h: i64 = c
            .query_row("SELECT strangler_row_hash('abc')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(h, 1045467851605560530);
        let n: i64 = c
            .query_row("SELECT strangler_row_hash(NULL, 5, 'é')", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, row_hash([None, Some(&b"5"[..]), Some("é".as_bytes())]));
        assert_ne!(
            row_hash([None]),
            row_hash([Some(&b""[..])]),
            "NULL is not an empty string"
        );
    }
}
