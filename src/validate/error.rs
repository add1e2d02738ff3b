//! What can stop a validation, backfill or audit command: each names the entity and side.

use crate::control::ControlError;
use crate::store::StoreError;

/// A failure that stops the command (exit status 2); discrepancies are not errors.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The command named something the config does not have.
    #[error("{0}")]
    Usage(String),
    /// An entity's mapping does not fit the live schema.
    #[error("entity {entity:?}: side {side:?}: {message}")]
    Schema {
        /// Entity.
        entity: String,
        /// Side.
        side: String,
        /// What is wrong, naming the table or column.
        message: String,
    },
    /// A side's database failed or could not be reached.
    #[error("entity {entity:?}: side {side:?}: {source}")]
    Database {
        /// Entity.
        entity: String,
        /// Side.
        side: String,
        /// The database's error.
        #[source]
        source: StoreError,
    },
    /// The control database (audit log, backfill progress) failed.
    #[error(transparent)]
    Control(#[from] ControlError),
}
