//! The engine seam: what every background engine hosted by `serve` implements (the sync
//! engine today; the validator, the analyzer and the API generator next). An engine runs until
//! shutdown, may listen to the gateway's write tap, and says why when it stops on its own.
//! `app.rs` starts engines from a list on its task tracker; an engine never sees the gateway.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tap::WriteEvent;

/// Why an engine stopped on its own.
pub type EngineError = Box<dyn std::error::Error + Send + Sync>;

/// Hears write events from the gateway's tap; called on the tap's task, so it must not block.
pub type TapListener = Arc<dyn Fn(&WriteEvent) + Send + Sync>;

/// A background engine.
#[async_trait::async_trait]
pub trait Engine: Send + 'static {
    /// Its name, for logs.
    fn name(&self) -> &'static str;

    /// What it wants to hear of the write tap, if anything.
    fn tap(&self) -> Option<TapListener> {
        None
    }

    /// Runs until `shutdown` fires (`Ok`) or it cannot go on (`Err`).
    async fn run(self: Box<Self>, shutdown: CancellationToken) -> Result<(), EngineError>;
}

/// Starts `engines` on `tasks` until `shutdown`, logging how each ended; returns the tap
/// listeners they asked for.
pub fn start(
    tasks: &TaskTracker,
    engines: Vec<Box<dyn Engine>>,
    shutdown: &CancellationToken,
) -> Vec<TapListener> {
    let mut taps = Vec::new();
    for engine in engines {
        taps.extend(engine.tap());
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let name = engine.name();
            match engine.run(shutdown).await {
                Ok(()) => tracing::debug!(engine = name, "engine stopped"),
                Err(e) => tracing::error!(engine = name, error = %e, "engine stopped on an error"),
            }
        });
    }
    taps
}
