//! An application's statements on a side: parameterized SQL run the way the application itself
//! would run it (its writes are captured, its constraints enforced), with rows read back as
//! JSON values. The API generator serves its endpoints through this.

use async_trait::async_trait;
use serde_json::Value;

use super::StoreError;

/// A value bound to a statement's placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// SQL NULL.
    Null,
    /// A whole number.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text (also the exact text of decimals, dates and JSON documents).
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl Param {
    /// The value as text, for a database that takes every parameter as text and casts it in
    /// the statement (PostgreSQL here): bytes as `\x` and hex, NULL as `None`.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Param::Null => None,
            Param::Int(i) => Some(i.to_string()),
            Param::Real(f) => Some(f.to_string()),
            Param::Text(t) => Some(t.clone()),
            Param::Bytes(b) => {
                let mut s = String::with_capacity(2 + b.len() * 2);
                s.push_str("\\x");
                for byte in b {
                    s.push_str(&format!("{byte:02x}"));
                }
                Some(s)
            }
        }
    }
}

/// Why a statement failed, as a client of the API should hear it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A unique key (primary key included) already holds the value.
    Unique,
    /// A foreign key: the referenced row is missing, or rows still reference this one.
    Reference,
    /// A NOT NULL column was given no value.
    NotNull,
    /// A check constraint refused the row.
    Check,
    /// A value the column cannot hold (out of range, too long, malformed).
    Value,
    /// The database cannot be reached, or is shutting down.
    Unavailable,
    /// Anything else: the server's fault, not the client's.
    Other,
}

/// The statements an application runs on a side.
#[async_trait]
pub trait Statements: Send {
    /// Makes this connection an application's: its writes are captured like any other
    /// application's and foreign keys are enforced.
    async fn as_application(&mut self) -> Result<(), StoreError>;

    /// Runs one statement with `?` (SQLite, MariaDB) or `$n` (PostgreSQL, every parameter
    /// as text) placeholders; each row's columns as JSON: numbers, text, `\x`-hex bytes,
    /// NULL; date-times and decimals in the database's text form.
    async fn rows(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>, StoreError>;

    /// Runs one statement; the number of rows it changed.
    async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, StoreError>;

    /// Runs transaction control or other parameterless statements (`BEGIN`, `COMMIT`).
    async fn control(&mut self, sql: &str) -> Result<(), StoreError>;
}

impl StoreError {
    /// What kind of failure this was, for telling a client's mistake from a server's.
    pub fn fault(&self) -> Fault {
        match self {
            StoreError::Postgres(e) => match e.as_db_error() {
                Some(db) => {
                    let code = db.code().code();
                    match code {
                        "23505" => Fault::Unique,
                        "23503" => Fault::Reference,
                        "23502" => Fault::NotNull,
                        "23514" => Fault::Check,
                        _ if code.starts_with("22") => Fault::Value,
                        _ if code.starts_with("08") || code.starts_with("57") => Fault::Unavailable,
                        _ => Fault::Other,
                    }
                }
                None if e.is_closed() => Fault::Unavailable,
                None => Fault::Unavailable,
            },
            StoreError::Mysql(e) => match e {
                mysql_async::Error::Server(s) => match s.code {
                    1062 | 1586 => Fault::Unique,
                    1216 | 1217 | 1451 | 1452 => Fault::Reference,
                    1048 | 1364 => Fault::NotNull,
                    3819 | 4025 => Fault::Check,
                    1264 | 1265 | 1292 | 1366 | 1406 | 1411 | 1416 | 3140 | 4038 | 1690 => {
                        Fault::Value
                    }
                    _ => Fault::Other,
                },
                mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => Fault::Unavailable,
                _ => Fault::Other,
            },
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                use rusqlite::ffi;
                match f.extended_code {
                    ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                        Fault::Unique
                    }
                    ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Fault::Reference,
                    ffi::SQLITE_CONSTRAINT_NOTNULL => Fault::NotNull,
                    ffi::SQLITE_CONSTRAINT_CHECK => Fault::Check,
                    ffi::SQLITE_CONSTRAINT_DATATYPE | ffi::SQLITE_MISMATCH | ffi::SQLITE_TOOBIG => {
                        Fault::Value
                    }
                    ffi::SQLITE_BUSY
                    | ffi::SQLITE_LOCKED
                    | ffi::SQLITE_CANTOPEN
                    | ffi::SQLITE_IOERR => Fault::Unavailable,
                    _ => match f.code {
                        rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::SystemIoFailure => Fault::Unavailable,
                        _ => Fault::Other,
                    },
                }
            }
            StoreError::Worker(_) | StoreError::Poisoned => Fault::Other,
            StoreError::Value(_) => Fault::Value,
            _ => Fault::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_as_text() {
        assert_eq!(Param::Null.as_text(), None);
        assert_eq!(Param::Int(-7).as_text().as_deref(), Some("-7"));
        assert_eq!(Param::Real(0.1).as_text().as_deref(), Some("0.1"));
        assert_eq!(Param::Text("a'b".into()).as_text().as_deref(), Some("a'b"));
        assert_eq!(
            Param::Bytes(vec![0, 255, 16]).as_text().as_deref(),
            Some("\\x00ff10")
        );
    }
}
