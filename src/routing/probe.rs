//! Active health probes: one loop per upstream with a `health` section, feeding its
//! [`Health`](super::health::Health) state.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;

use super::table::Upstream;
use crate::config::HealthConfig;
use crate::metrics as m;

/// A small client for probes, separate from the data plane's pool.
pub fn probe_client() -> Client<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector)
}

/// One probe: `GET base_path + path`, healthy on any 2xx or 3xx within the timeout.
pub async fn probe_once(
    client: &Client<HttpConnector, Empty<Bytes>>,
    up: &Upstream,
    cfg: &HealthConfig,
) -> bool {
    let uri = format!("http://{}{}{}", up.authority, up.base_path, cfg.path);
    let Ok(req) = http::Request::get(uri)
        .header("user-agent", "strangler-health")
        .body(Empty::new())
    else {
        return false;
    };
    match tokio::time::timeout(cfg.timeout, client.request(req)).await {
        Ok(Ok(resp)) => resp.status().is_success() || resp.status().is_redirection(),
        _ => false,
    }
}

/// Probes `up` every interval until cancelled.
pub async fn run(up: Arc<Upstream>, cfg: HealthConfig, shutdown: CancellationToken) {
    let client = probe_client();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ok = probe_once(&client, &up, &cfg).await;
        if let Some(state) = up.health.record_probe(ok, &cfg) {
            if state {
                tracing::info!(upstream = %up.name, "upstream healthy again");
            } else {
                tracing::warn!(upstream = %up.name, "upstream unhealthy: active probes failing");
            }
        }
        metrics::gauge!(m::UPSTREAM_HEALTHY, "target" => up.name.clone())
            .set(if up.health.is_available() { 1.0 } else { 0.0 });
    }
}
