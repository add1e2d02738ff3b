//! Why a database call failed, in the database's own words.

/// PostgreSQL's own words for an error: the server's message and detail, where
/// `tokio_postgres` alone would say only "db error".
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({}): {d}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no.
    #[error("postgres: {}", pg_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// MariaDB / MySQL said no.
    #[error("mysql: {0}")]
    Mysql(#[from] mysql_async::Error),
    /// A stored image did not parse.
    #[error("changelog row {seq}: image is not a JSON object: {message}")]
    Image {
        /// Changelog sequence number.
        seq: i64,
        /// Parser message.
        message: String,
    },
    /// The blocking task running a SQLite call panicked or was cancelled.
    #[error("sqlite worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
    /// An earlier SQLite call panicked while holding the connection.
    #[error("sqlite: the connection's lock is poisoned (an earlier call panicked)")]
    Poisoned,
    /// The URL is not one we know.
    #[error("unsupported database URL {0:?}")]
    Url(String),
    /// A MariaDB / MySQL URL that does not parse.
    #[error("mysql URL: {0}")]
    MysqlUrl(#[from] mysql_async::UrlError),
    /// A value cannot be written to this database.
    #[error("{0}")]
    Value(String),
}
