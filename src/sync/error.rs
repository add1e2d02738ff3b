//! Why a sync round or the engine failed, and the deadline every database call runs under.

use std::time::Duration;

use crate::store::StoreError;
use crate::sync::mapping::MappingError;

/// Longest a single database call may take before the round is retried.
pub(super) const OP_TIMEOUT: Duration = Duration::from_secs(15);

/// A sync failure.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A mapping does not fit the databases.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// A database call failed.
    #[error("side {side:?}: {source}")]
    Store {
        /// Side.
        side: String,
        /// What the database said.
        #[source]
        source: StoreError,
    },
    /// A database call took too long.
    #[error("side {side:?}: {what} timed out after {}s", OP_TIMEOUT.as_secs())]
    Timeout {
        /// Side.
        side: String,
        /// The call.
        what: &'static str,
    },
    /// Capture has not been installed on a side.
    #[error("side {side:?}: capture is not installed; run `strangler sync install --config FILE`")]
    NotInstalled {
        /// Side.
        side: String,
    },
    /// Broker mode is configured but capture was installed without the relay's outbox flag.
    #[error(
        "side {side:?}: capture was installed without the broker outbox ([sync.broker] was added later); run `strangler sync install --config FILE` again"
    )]
    NoOutbox {
        /// Side.
        side: String,
    },
    /// The config names a side with no `[sides.NAME]`.
    #[error("side {0:?} is not configured")]
    UnknownSide(String),
    /// Another worker took over this unit (its lease expired here).
    #[error("{unit}: another worker holds a newer lease; stopping")]
    Fenced {
        /// The ownership unit.
        unit: String,
    },
    /// The broker failed.
    #[error("broker: {what}: {source}")]
    Broker {
        /// What was being done.
        what: String,
        /// The broker client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A `custom:NAME` policy names a rule nobody registered.
    #[error(
        "entity {entity:?}: conflict rule \"custom:{rule}\" is not registered ({registered}); a program embedding Strangler registers it with SyncEngine::with_rule"
    )]
    UnknownRule {
        /// Entity.
        entity: String,
        /// The rule's name.
        rule: String,
        /// The rules that are registered.
        registered: String,
    },
}

pub(super) async fn timed<T>(
    side: &str,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, SyncError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|source| SyncError::Store {
            side: side.into(),
            source,
        }),
        Err(_) => Err(SyncError::Timeout {
            side: side.into(),
            what,
        }),
    }
}
