//! SQL helpers every backend shares: identifier and literal quoting, changelog rows decoded
//! into changes, and the race check on written keys.

use std::collections::HashSet;

use serde_json::Value;

use super::{Change, Op, Row, StoreError, Write};

/// Bytes from the `\x`-and-hex text of a binary value, if `v` is that.
pub fn hex_bytes(v: &Value) -> Option<Vec<u8>> {
    let hex = v.as_str()?.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A changelog row as the backends read it: seq, table, op, old, new, tx, ts, key text.
pub(super) type ChangeRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    String,
);

/// Turns a changelog row into a [`Change`].
pub(super) fn to_change(row: ChangeRow) -> Result<Change, StoreError> {
    Ok(decoded(row))
}

/// A change from its changelog columns. An image that cannot be decoded does not fail the
/// read (one bad row must never stop the stream): the change carries the reason instead.
pub(super) fn decoded((seq, table, op, old, new, tx, ts_us, pk): ChangeRow) -> Change {
    let (old, new, poison) = match (image(seq, old), image(seq, new)) {
        (Ok(old), Ok(new)) => (old, new, None),
        (Err(e), _) | (_, Err(e)) => (None, None, Some(e.to_string())),
    };
    Change {
        seq,
        table,
        op: Op::parse(&op),
        old,
        new,
        tx,
        ts_us,
        pk,
        poison,
    }
}

/// Changelog rows to changes.
pub(super) fn changes(rows: Vec<ChangeRow>) -> Result<Vec<Change>, StoreError> {
    rows.into_iter().map(to_change).collect()
}

/// Whether two writes can go in one statement (same kind, table and columns).
pub(super) fn same_run(a: &Write, b: &Write) -> bool {
    match (a, b) {
        (
            Write::Upsert {
                table: t1,
                row: r1,
                insert_only: i1,
                ..
            },
            Write::Upsert {
                table: t2,
                row: r2,
                insert_only: i2,
                ..
            },
        ) => t1 == t2 && r1.keys().eq(r2.keys()) && i1.keys().eq(i2.keys()),
        (Write::Delete { table: t1, key: k1 }, Write::Delete { table: t2, key: k2 }) => {
            t1 == t2 && k1.keys().eq(k2.keys())
        }
        _ => false,
    }
}

/// Parses a stored JSON image.
pub(super) fn image(seq: i64, text: Option<String>) -> Result<Option<Row>, StoreError> {
    match text {
        None => Ok(None),
        Some(t) => match serde_json::from_str::<Value>(&t) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(StoreError::Image {
                seq,
                message: "not an object".into(),
            }),
            Err(e) => Err(StoreError::Image {
                seq,
                message: e.to_string(),
            }),
        },
    }
}

/// An identifier quoted for a database kind (`mysql`: backticks; others: double quotes).
pub fn quote(kind: &str, ident: &str) -> String {
    if kind == "mysql" {
        bq(ident)
    } else {
        dq(ident)
    }
}

/// A table name quoted for a database kind (`schema.table` in two parts on PostgreSQL).
pub fn quote_table(kind: &str, name: &str) -> String {
    match (kind, name.split_once('.')) {
        ("postgres", Some((s, t))) => format!("{}.{}", dq(s), dq(t)),
        _ => quote(kind, name),
    }
}

/// Quotes an identifier with double quotes (SQLite, PostgreSQL).
pub(super) fn dq(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes an identifier with backticks (MariaDB / MySQL).
pub(super) fn bq(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// Whether the race check finds a change on a written key that was not read this round.
pub(super) fn raced(
    written: &HashSet<(String, String)>,
    found: Vec<(i64, String, String)>,
    seen: &HashSet<i64>,
) -> bool {
    found
        .into_iter()
        .any(|(seq, tbl, pk)| !seen.contains(&seq) && written.contains(&(tbl, pk)))
}

/// A string as a standard SQL literal (PostgreSQL, SQLite).
pub(super) fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A string as a MariaDB / MySQL literal, where a backslash escapes by default.
pub(super) fn lit_backslash(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}
