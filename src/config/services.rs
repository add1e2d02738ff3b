//! `[services.NAME]`: services whose REST API Strangler generates and serves from their tables.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;

/// `[services.NAME]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Database URL.
    pub database: String,
    /// Tables to serve.
    pub tables: Option<Vec<String>>,
    /// Serve every table.
    pub all: Option<bool>,
    /// Own listener.
    pub listen: Option<String>,
    /// Path prefix on the gateway's listener.
    pub mount: Option<String>,
    /// Largest page.
    pub max_limit: Option<u64>,
    /// Reads only.
    pub read_only: Option<bool>,
    /// Deprecated API.
    pub deprecated: Option<bool>,
    /// Sunset date (HTTP date).
    pub sunset: Option<String>,
    /// Database connections at most.
    pub pool: Option<usize>,
}

/// A validated `[services.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Name.
    pub name: String,
    /// Database URL.
    pub database: String,
    /// Tables to serve; empty: all.
    pub tables: Vec<String>,
    /// Its listener: routes point at it like at any upstream.
    pub listen: SocketAddr,
    /// Path prefix under which the gateway's listener serves it too (a route of its own,
    /// `apigen.NAME`, to its listener).
    pub mount: Option<String>,
    /// Largest page.
    pub max_limit: u64,
    /// Reads only.
    pub read_only: bool,
    /// Deprecated API.
    pub deprecated: bool,
    /// Sunset date.
    pub sunset: Option<String>,
    /// Database connections at most.
    pub pool: usize,
}

/// Checks every `[services.NAME]`.
pub fn from_raw(
    file: &str,
    raw: &BTreeMap<String, RawService>,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    let mut out = Vec::new();
    for (name, s) in raw {
        let err = |message: String| ConfigError::Invalid {
            file: file.to_string(),
            place: format!("service {name:?}: "),
            message,
        };
        if !["sqlite://", "postgres://", "postgresql://", "mysql://"]
            .iter()
            .any(|p| s.database.starts_with(p))
        {
            return Err(err(format!(
                "database: {:?} is not a sqlite://, postgres:// or mysql:// URL",
                s.database
            )));
        }
        let all = s.all.unwrap_or(false);
        let tables = match (&s.tables, all) {
            (Some(_), true) => return Err(err("give tables or all = true, not both".into())),
            (None, false) => return Err(err("tables: missing (or set all = true)".into())),
            (Some(t), false) if t.is_empty() => {
                return Err(err("tables: empty (or set all = true)".into()));
            }
            (Some(t), false) => t.clone(),
            (None, true) => Vec::new(),
        };
        let Some(l) = &s.listen else {
            return Err(err(
                "listen: missing (the address the generated API answers on, e.g. \"127.0.0.1:8081\"; routes point at it like at any upstream)".into(),
            ));
        };
        let listen = l
            .parse::<SocketAddr>()
            .map_err(|e| err(format!("listen: {l:?} is not host:port ({e})")))?;
        let mount = match &s.mount {
            Some(m) if !m.starts_with('/') || m.ends_with('/') || m.contains(['?', '#', ' ']) => {
                return Err(err(format!(
                    "mount: {m:?} must start with / and not end with / (e.g. \"/api/orders\")"
                )));
            }
            Some(_) if listen.port() == 0 => {
                return Err(err(
                    "mount: the gateway forwards to the service's listen address, which needs a fixed port (not 0)".into(),
                ));
            }
            m => m.clone(),
        };
        let max_limit = s.max_limit.unwrap_or(1000);
        if max_limit == 0 || max_limit > 100_000 {
            return Err(err(format!("max_limit: {max_limit} must be 1 to 100000")));
        }
        let pool = s.pool.unwrap_or(8);
        if pool == 0 || pool > 1000 {
            return Err(err(format!("pool: {pool} must be 1 to 1000")));
        }
        out.push(ServiceConfig {
            name: name.clone(),
            database: s.database.clone(),
            tables,
            listen,
            mount,
            max_limit,
            read_only: s.read_only.unwrap_or(false),
            deprecated: s.deprecated.unwrap_or(false) || s.sunset.is_some(),
            sunset: s.sunset.clone(),
            pool,
        });
    }
    Ok(out)
}

/// The upstream and route through which the gateway serves a mounted service.
pub fn mount_routes(
    services: &[ServiceConfig],
) -> Vec<(String, super::raw::RawUpstream, super::raw::RawRoute)> {
    services
        .iter()
        .filter_map(|s| {
            let prefix = s.mount.clone()?;
            let name = format!("apigen.{}", s.name);
            let upstream = super::raw::RawUpstream {
                url: format!("http://{}", s.listen),
                health: None,
                passive: None,
                rewrite_host: None,
            };
            let route = super::raw::RawRoute {
                name: name.clone(),
                host: None,
                path_prefix: Some(prefix),
                methods: None,
                headers: None,
                split: [(name.clone(), 100.0)].into_iter().collect(),
                sticky: None,
                fallback: None,
                salt: None,
                pins: Vec::new(),
                entity: None,
                rollout: None,
            };
            Some((name, upstream, route))
        })
        .collect()
}
