//! The API generator: from the tables given to a service, an OpenAPI 3.1 document and the
//! REST endpoints it describes (list with keyset pagination, filters and sorting; create,
//! read, replace, update and delete by key), on SQLite, PostgreSQL and MariaDB.

mod checks;
pub mod clock;
pub mod command;
mod metrics;
pub mod model;
pub mod openapi;
mod pool;
pub mod query;
pub mod serve;
pub mod service;
pub mod sql;
pub mod types;

pub use model::{Resource, resources};
pub use service::Service;
pub use types::Db;

use crate::store::{Store, StoreError};

/// How a service is served.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Path prefix on a shared listener (`""` when the service has its own).
    pub mount: String,
    /// Largest `limit` a list takes.
    pub max_limit: u64,
    /// Only reads are served.
    pub read_only: bool,
    /// Answers carry `Deprecation: true`.
    pub deprecated: bool,
    /// Answers carry this `Sunset` date (an HTTP date).
    pub sunset: Option<String>,
    /// Database connections at most.
    pub pool: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mount: String::new(),
            max_limit: 1000,
            read_only: false,
            deprecated: false,
            sunset: None,
            pool: 8,
        }
    }
}

/// The query parameter filtering `column` with `op`: the bare column name for equality
/// (unless the name is a reserved parameter), `column[op]` otherwise.
pub fn filter_name(column: &str, op: &str) -> String {
    if op == "eq" && !query::RESERVED.contains(&column) && !column.contains('[') {
        column.to_string()
    } else {
        format!("{column}[{op}]")
    }
}

/// Why a service could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum ApiGenError {
    /// The database did not answer or refused.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A named table is not there.
    #[error("{0}")]
    Table(#[from] model::UnknownTable),
}

/// Reads the schema of `url` and the resources of `tables` (all when empty).
pub async fn introspect(url: &str, tables: &[String]) -> Result<(Db, Vec<Resource>), ApiGenError> {
    let mut store = Store::connect(url).await?;
    let db = Db::from_kind(store.kind());
    let catalog = store.catalog().await?;
    Ok((db, resources(&catalog, tables, db)?))
}
