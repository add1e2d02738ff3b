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
            max_limit,
            read_only: s.read_only.unwrap_or(false),
            deprecated: s.deprecated.unwrap_or(false) || s.sunset.is_some(),
            sunset: s.sunset.clone(),
            pool,
        });
    }
    Ok(out)
}
