//! `strangler apigen`: the document of a service's tables, and `apigen serve`, which serves
//! the `[services.NAME]` of a config file on their own listeners.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::services::ServiceConfig;
use crate::config::sync::SyncConfig;
use crate::tap::Tap;

use super::{ApiGenError, Options, Service, introspect, openapi};

/// What `strangler apigen` was asked for.
#[derive(Debug, Clone)]
pub struct Generate {
    /// Database URL.
    pub database: String,
    /// Tables; empty: all.
    pub tables: Vec<String>,
    /// Service name (the document's title).
    pub service: String,
    /// Where to write the document; standard output when absent.
    pub out: Option<PathBuf>,
}

/// Writes the OpenAPI document; returns it when there is no `out`, otherwise a one-line
/// summary.
pub async fn generate(g: &Generate) -> Result<String, ApiGenError> {
    let started = Instant::now();
    let (db, resources) = introspect(&g.database, &g.tables).await?;
    let doc = openapi::document(&g.service, &resources, &Options::default(), db);
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    match &g.out {
        None => Ok(format!("{text}\n")),
        Some(path) => {
            std::fs::write(path, format!("{text}\n")).map_err(|e| {
                ApiGenError::Store(crate::store::StoreError::Value(format!(
                    "{}: cannot write: {e}",
                    path.display()
                )))
            })?;
            let read_only = resources.iter().filter(|r| r.read_only.is_some()).count();
            Ok(format!(
                "{}: {} resources ({read_only} read-only), {} paths, in {} ms\n",
                path.display(),
                resources.len(),
                doc["paths"].as_object().map_or(0, |p| p.len()),
                started.elapsed().as_millis()
            ))
        }
    }
}

/// A service of the config, introspected and ready to answer.
pub async fn prepare(
    cfg: &ServiceConfig,
    tap: Option<(Tap, HashMap<String, Arc<str>>)>,
) -> Result<Arc<Service>, ApiGenError> {
    let (db, resources) = introspect(&cfg.database, &cfg.tables).await?;
    let opts = Options {
        mount: cfg.mount.clone().unwrap_or_default(),
        max_limit: cfg.max_limit,
        read_only: cfg.read_only,
        deprecated: cfg.deprecated,
        sunset: cfg.sunset.clone(),
        pool: cfg.pool,
    };
    Ok(Arc::new(Service::new(
        &cfg.name,
        db,
        resources,
        opts,
        &cfg.database,
        tap,
    )))
}

/// The entity each table of `database` belongs to, from the sync config's sides.
pub fn entities_of(database: &str, sync: &SyncConfig) -> HashMap<String, Arc<str>> {
    let mut out = HashMap::new();
    for e in &sync.entities {
        for t in [&e.left, &e.right] {
            if sync
                .sides
                .get(&t.side)
                .is_some_and(|s| s.database == database)
            {
                out.insert(t.table.clone(), Arc::from(e.name.as_str()));
            }
        }
    }
    out
}

/// Serves every service until `shutdown`, each on its own listener; writes are offered to
/// `tap` named by their table's entity. Returns the bound addresses by service name and the
/// servers' tasks.
pub async fn serve_own(
    services: &[ServiceConfig],
    tap: Option<Tap>,
    sync: &SyncConfig,
    shutdown: &CancellationToken,
) -> Result<Vec<(String, SocketAddr, tokio::task::JoinHandle<()>)>, ApiGenError> {
    let mut out = Vec::new();
    for cfg in services {
        let addr = cfg.listen;
        let tap = tap.clone().map(|t| (t, entities_of(&cfg.database, sync)));
        let service = prepare(cfg, tap).await?;
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            ApiGenError::Store(crate::store::StoreError::Value(format!(
                "service {:?}: cannot listen on {addr}: {e}",
                cfg.name
            )))
        })?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(service = %cfg.name, %bound, resources = service.resources.len(), "generated API listening");
        out.push((
            cfg.name.clone(),
            bound,
            tokio::spawn(super::serve::serve(listener, service, shutdown.clone())),
        ));
    }
    Ok(out)
}
