//! What the engine hands down to every link and broker task: shared status, control store,
//! conflict rules and wake-ups, and how a side's database is connected.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::sync::SyncConfig;
use crate::control::ControlStore;
use crate::store::Store;
use crate::sync::conflict::Rules;
use crate::sync::error::{OP_TIMEOUT, SyncError};
use crate::sync::status::SyncStatus;

/// What every link of an engine shares.
pub(super) struct Shared {
    pub(super) status: Arc<SyncStatus>,
    pub(super) control: Option<Arc<ControlStore>>,
    pub(super) rules: Arc<Rules>,
    pub(super) wakes: HashMap<String, Arc<Notify>>,
}

/// The database URL of `side`.
pub(super) fn side_url<'a>(cfg: &'a SyncConfig, side: &str) -> Result<&'a str, SyncError> {
    cfg.sides
        .get(side)
        .map(|s| s.database.as_str())
        .ok_or_else(|| SyncError::UnknownSide(side.into()))
}

/// Connects to `side`'s database.
pub(super) async fn connect(cfg: &SyncConfig, side: &str) -> Result<Store, SyncError> {
    let url = side_url(cfg, side)?;
    match tokio::time::timeout(OP_TIMEOUT, Store::connect(url)).await {
        Ok(Ok(mut s)) => {
            let capture = s.capture().method();
            tracing::debug!(side, database = s.kind(), capture, "side connected");
            Ok(s)
        }
        Ok(Err(source)) => Err(SyncError::Store {
            side: side.into(),
            source,
        }),
        Err(_) => Err(SyncError::Timeout {
            side: side.into(),
            what: "connect",
        }),
    }
}
