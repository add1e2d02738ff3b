//! Driving one HTTP connection to its end, or to a graceful close once shutdown fires: shared
//! by the admin API's listener and the generated API's, so neither imports the other.

use hyper_util::server::graceful::GracefulConnection;
use tokio_util::sync::CancellationToken;

/// Drives a connection to its end, or to a graceful close once `shutdown` fires.
pub async fn drive<C: GracefulConnection>(conn: C, shutdown: &CancellationToken) {
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
