//! Control state in a database: route table versions and rollout progress, so a restarted
//! gateway resumes where it was and several gateways serve the same table.

pub mod audit;
mod postgres;
mod sqlite;

pub use audit::{AuditEntry, AuditRecord};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A control database failure.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// SQLite said no.
    #[error("control database (sqlite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no.
    #[error("control database (postgres): {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A stored record did not parse.
    #[error("control database: stored record is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The blocking task running a SQLite call panicked or was cancelled.
    #[error("control database: worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
    /// An earlier SQLite call panicked while holding the connection.
    #[error("control database: the connection's lock is poisoned (an earlier call panicked)")]
    Poisoned,
    /// The PostgreSQL connection could not be (re-)established.
    #[error("control database: not connected")]
    Disconnected,
    /// The URL is not one we know.
    #[error("control database: unsupported URL {0:?}")]
    Url(String),
}

/// One published route table version; the table's spec is the router's data (`S`), kept as
/// JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord<S> {
    /// Version number, unique across all gateways sharing the database.
    pub version: u64,
    /// Publication time, Unix ms.
    pub created_at_ms: u64,
    /// Why it was published.
    pub reason: String,
    /// The allocations, as the router describes them.
    pub spec: S,
}

/// A control database, by backend.
pub enum ControlStore {
    /// Embedded SQLite file (or memory).
    Sqlite(sqlite::SqliteControl),
    /// PostgreSQL server.
    Postgres(Box<postgres::PgControl>),
}

impl ControlStore {
    /// Opens (and migrates) the control database at `url`.
    pub async fn open(url: &str) -> Result<ControlStore, ControlError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(ControlStore::Sqlite(
                sqlite::SqliteControl::open(path).await?,
            ))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(ControlStore::Postgres(Box::new(
                postgres::PgControl::open(url).await?,
            )))
        } else {
            Err(ControlError::Url(url.to_string()))
        }
    }

    /// Inserts a version; `false` when another gateway already took that number.
    pub async fn insert_version<S: Serialize>(
        &self,
        rec: &VersionRecord<S>,
    ) -> Result<bool, ControlError> {
        match self {
            ControlStore::Sqlite(s) => s.insert_version(rec).await,
            ControlStore::Postgres(p) => p.insert_version(rec).await,
        }
    }

    /// The newest version.
    pub async fn latest<S: DeserializeOwned + Send + 'static>(
        &self,
    ) -> Result<Option<VersionRecord<S>>, ControlError> {
        Ok(self.versions(1).await?.into_iter().next())
    }

    /// The newest `limit` versions, newest first.
    pub async fn versions<S: DeserializeOwned + Send + 'static>(
        &self,
        limit: usize,
    ) -> Result<Vec<VersionRecord<S>>, ControlError> {
        match self {
            ControlStore::Sqlite(s) => s.versions(limit).await,
            ControlStore::Postgres(p) => p.versions(limit).await,
        }
    }

    /// The newest version number only (cheap, for polling).
    pub async fn latest_version(&self) -> Result<u64, ControlError> {
        match self {
            ControlStore::Sqlite(s) => s.latest_version().await,
            ControlStore::Postgres(p) => p.latest_version().await,
        }
    }

    /// Stores a route's rollout state (JSON).
    pub async fn save_rollout(&self, route: &str, state: &str) -> Result<(), ControlError> {
        match self {
            ControlStore::Sqlite(s) => s.save_rollout(route, state).await,
            ControlStore::Postgres(p) => p.save_rollout(route, state).await,
        }
    }

    /// Every stored rollout state, by route.
    pub async fn rollouts(&self) -> Result<Vec<(String, String)>, ControlError> {
        match self {
            ControlStore::Sqlite(s) => s.rollouts().await,
            ControlStore::Postgres(p) => p.rollouts().await,
        }
    }

    /// Appends conflict records (JSON).
    pub async fn record_conflicts(&self, records: Vec<String>) -> Result<(), ControlError> {
        match self {
            ControlStore::Sqlite(s) => s.record_conflicts(records).await,
            ControlStore::Postgres(p) => p.record_conflicts(records).await,
        }
    }

    /// The newest `limit` conflict records (JSON), newest first.
    pub async fn conflicts(&self, limit: usize) -> Result<Vec<String>, ControlError> {
        match self {
            ControlStore::Sqlite(s) => s.conflicts(limit).await,
            ControlStore::Postgres(p) => p.conflicts(limit).await,
        }
    }

    /// Appends records to the audit log, each chained to the one before; returns them.
    pub async fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
    ) -> Result<Vec<AuditRecord>, ControlError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match self {
            ControlStore::Sqlite(s) => s.append_audit(entries, now).await,
            ControlStore::Postgres(p) => p.append_audit(entries, now).await,
        }
    }

    /// Audit records with `seq` above `after`, oldest first, at most `limit`.
    pub async fn audit(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, ControlError> {
        match self {
            ControlStore::Sqlite(s) => s.audit(after, limit).await,
            ControlStore::Postgres(p) => p.audit(after, limit).await,
        }
    }
}
