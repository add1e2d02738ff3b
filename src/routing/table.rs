//! The immutable route table: request matching and target choice, read lock-free per request.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ahash::AHashMap;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use metrics::{Counter, Histogram};
use serde::{Deserialize, Serialize};

use super::health::Health;
use super::matching::{PrefixRoutes, boundaries, index, normalize_prefix, prefix_matches};
use super::split::{Allocation, bucket, salt_seed};
use super::stats::GateStats;
use super::sticky::{self, StickyKey};
use crate::config::{Config, PinSource, RouteConfig, StickyConfig};
use crate::metrics as m;

/// A backend as the data plane sees it.
#[derive(Debug)]
pub struct Upstream {
    /// Name from the config.
    pub name: String,
    /// `host:port`.
    pub authority: http::uri::Authority,
    /// Base path prepended to request paths.
    pub base_path: String,
    /// Whether `Host` is rewritten to the authority.
    pub rewrite_host: bool,
    /// The authority as a `Host` value, for rewriting.
    pub host_header: http::HeaderValue,
    /// Shared health state.
    pub health: Arc<Health>,
}

/// The persisted part of a route table: each route's bucket allocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSpec {
    /// Fingerprint of the config file the table was built against.
    pub config_fingerprint: u64,
    /// Route name → allocation.
    pub routes: BTreeMap<String, Allocation>,
    /// Route name → the split the config file gave when this lineage of tables began; a
    /// reload keeps a route's current allocation while the file's split is unchanged.
    #[serde(default)]
    pub file_splits: BTreeMap<String, Vec<(String, u32)>>,
    /// The version whose content this table restores (set by rollbacks).
    #[serde(default)]
    pub restores: Option<u64>,
}

impl TableSpec {
    /// The spec a config file describes on its own.
    pub fn from_config(cfg: &Config) -> TableSpec {
        TableSpec {
            config_fingerprint: cfg.fingerprint,
            routes: cfg
                .routes
                .iter()
                .map(|r| (r.name.clone(), Allocation::initial(&r.split, &r.fallback)))
                .collect(),
            file_splits: cfg
                .routes
                .iter()
                .map(|r| (r.name.clone(), r.split.clone()))
                .collect(),
            restores: None,
        }
    }

    /// This spec carried over to a new config: routes whose file split did not change keep
    /// their allocation; the others move monotonically to the file's split.
    pub fn carry_over(&self, cfg: &Config) -> TableSpec {
        let mut next = TableSpec::from_config(cfg);
        for r in &cfg.routes {
            if let Some(current) = self.routes.get(&r.name) {
                let alloc = if self.file_splits.get(&r.name) == Some(&r.split) {
                    current.clone()
                } else {
                    current.rebalance(&r.split, &r.fallback)
                };
                next.routes.insert(r.name.clone(), alloc);
            }
        }
        next
    }
}

/// Metric handles of one route target, resolved once per table.
#[derive(Debug)]
pub struct TargetMetrics {
    /// Requests by status class: 1xx..5xx, then gateway errors.
    pub by_class: [Counter; 6],
    /// Upstream latency.
    pub latency: Histogram,
}

/// One upstream a route can send to.
#[derive(Debug)]
pub struct Target {
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// Its metric handles under this route.
    pub metrics: TargetMetrics,
}

/// A matched and ready-to-pick route.
#[derive(Debug)]
pub struct Route {
    /// Route name.
    pub name: String,
    /// Lower-case host condition.
    pub(super) host: Option<String>,
    /// Normalized path prefix.
    pub(super) path_prefix: String,
    /// Method conditions; empty matches all.
    pub(super) methods: Vec<Method>,
    /// Exact header conditions.
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    /// Possible targets; indexes below point here.
    pub targets: Vec<Target>,
    lookup: super::split::Lookup,
    /// Bucket allocation in force.
    pub allocation: Allocation,
    seed: u64,
    /// Sticky key source.
    pub sticky: StickyConfig,
    /// Index of the fallback target.
    pub fallback: u8,
    pins: Vec<(PinSource, String, u8)>,
    /// Entity bound to this route's writes.
    pub entity: Option<String>,
    /// Gateway-added latency.
    pub added_latency: Histogram,
    /// Retries on the fallback.
    pub retries: Counter,
    /// Rollout gate statistics, when the route has a rollout plan.
    pub gate_stats: Option<Arc<GateStats>>,
}

/// Why a target was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickReason {
    /// By bucket.
    Split,
    /// By a pin rule.
    Pin,
    /// The chosen target was unavailable.
    Fallback,
}

/// The outcome of picking a target.
#[derive(Debug)]
pub struct Pick {
    /// Index into `Route::targets`.
    pub target: u8,
    /// Why.
    pub reason: PickReason,
    /// A sticky cookie value to set on the response.
    pub issue_cookie: Option<String>,
}

impl Route {
    fn matches(
        &self,
        method: &Method,
        host: Option<&str>,
        path: &str,
        headers: &HeaderMap,
    ) -> bool {
        if let Some(want) = &self.host {
            match host {
                Some(h) if h.eq_ignore_ascii_case(want) => {}
                _ => return false,
            }
        }
        prefix_matches(&self.path_prefix, path)
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.headers.iter().all(|(k, v)| headers.get(k) == Some(v))
    }

    /// Chooses the target for a request; `None` when neither the choice nor the fallback is
    /// available.
    pub fn pick(&self, headers: &HeaderMap, client: IpAddr) -> Option<Pick> {
        let mut issue_cookie = None;
        let (chosen, reason) = match self.pinned(headers) {
            Some(idx) => (idx, PickReason::Pin),
            None => {
                let b = match sticky::extract(&self.sticky, headers, client) {
                    StickyKey::Key(k) => bucket(self.seed, k.as_bytes()),
                    StickyKey::Issue(k) => {
                        let b = bucket(self.seed, k.as_bytes());
                        issue_cookie = Some(k);
                        b
                    }
                    StickyKey::Random => fastrand::u16(..super::split::BUCKETS as u16),
                };
                (self.lookup.get(b), PickReason::Split)
            }
        };
        let target = if self.targets[chosen as usize].upstream.health.is_available() {
            Pick {
                target: chosen,
                reason,
                issue_cookie,
            }
        } else if self.targets[self.fallback as usize]
            .upstream
            .health
            .is_available()
        {
            Pick {
                target: self.fallback,
                reason: PickReason::Fallback,
                issue_cookie,
            }
        } else {
            return None;
        };
        Some(target)
    }

    fn pinned(&self, headers: &HeaderMap) -> Option<u8> {
        self.pins.iter().find_map(|(source, value, idx)| {
            let got = match source {
                PinSource::Header(h) => headers.get(h).and_then(|v| v.to_str().ok()),
                PinSource::Cookie(c) => sticky::cookie(headers, c),
            };
            (got == Some(value.as_str())).then_some(*idx)
        })
    }

    /// The path prefix the route matches.
    pub fn path_prefix(&self) -> &str {
        &self.path_prefix
    }

    /// The target index of an upstream name.
    pub fn target_index(&self, name: &str) -> Option<u8> {
        self.targets
            .iter()
            .position(|t| t.upstream.name == name)
            .map(|i| i as u8)
    }
}

/// One published, immutable route table.
#[derive(Debug)]
pub struct RouteTable {
    /// Monotonic version number.
    pub version: u64,
    /// Publication time, Unix milliseconds.
    pub created_at_ms: u64,
    /// Why it was published.
    pub reason: String,
    /// Routes in config order.
    pub routes: Vec<Route>,
    /// What is persisted of this table.
    pub spec: TableSpec,
    by_prefix: AHashMap<String, PrefixRoutes>,
    has_host_routes: bool,
}

/// A table that could not be built from a spec.
#[derive(Debug, thiserror::Error)]
#[error("route {route:?}: {message}")]
pub struct BuildError {
    /// The route.
    pub route: String,
    /// What is wrong.
    pub message: String,
}

/// Inputs shared by every table built for one config.
pub struct TableInputs<'a> {
    /// The config.
    pub config: &'a Config,
    /// Upstreams by name.
    pub upstreams: &'a BTreeMap<String, Arc<Upstream>>,
    /// Gate statistics by route name.
    pub gate_stats: &'a BTreeMap<String, Arc<GateStats>>,
}

impl RouteTable {
    /// Builds a table from the config and a spec (allocations).
    pub fn build(
        inputs: &TableInputs,
        spec: TableSpec,
        version: u64,
        created_at_ms: u64,
        reason: String,
    ) -> Result<RouteTable, BuildError> {
        let mut routes = Vec::with_capacity(inputs.config.routes.len());
        for rc in &inputs.config.routes {
            let allocation = spec
                .routes
                .get(&rc.name)
                .cloned()
                .unwrap_or_else(|| Allocation::initial(&rc.split, &rc.fallback));
            routes.push(build_route(inputs, rc, allocation)?);
        }
        let mut spec = spec;
        spec.routes = routes
            .iter()
            .map(|r| (r.name.clone(), r.allocation.clone()))
            .collect();
        let by_prefix = index(&routes);
        let has_host_routes = routes.iter().any(|r| r.host.is_some());
        Ok(RouteTable {
            version,
            created_at_ms,
            reason,
            routes,
            spec,
            by_prefix,
            has_host_routes,
        })
    }

    /// The route for a request, longest prefix first.
    #[inline]
    pub fn find(
        &self,
        method: &Method,
        host: Option<&str>,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<&Route> {
        // Host-specific routes first (like virtual hosts), then the rest; within each pass
        // the longest matching prefix wins, probed one segment boundary at a time.
        if self.has_host_routes && host.is_some() {
            let found = boundaries(path).find_map(|prefix| {
                let list = &self.by_prefix.get(prefix)?.with_host;
                list.iter()
                    .map(|i| &self.routes[*i])
                    .find(|r| r.matches(method, host, path, headers))
            });
            if found.is_some() {
                return found;
            }
        }
        boundaries(path).find_map(|prefix| {
            let list = &self.by_prefix.get(prefix)?.any_host;
            list.iter()
                .map(|i| &self.routes[*i])
                .find(|r| r.matches(method, host, path, headers))
        })
    }

    /// The route with this name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }
}

fn build_route(
    inputs: &TableInputs,
    rc: &RouteConfig,
    allocation: Allocation,
) -> Result<Route, BuildError> {
    let err = |message: String| BuildError {
        route: rc.name.clone(),
        message,
    };
    let mut names: Vec<&str> = vec![rc.fallback.as_str()];
    names.extend(rc.split.iter().map(|(n, _)| n.as_str()));
    names.extend(rc.pins.iter().map(|p| p.upstream.as_str()));
    names.extend(rc.rollout.iter().map(|r| r.target.as_str()));
    names.extend(allocation.spans.iter().map(|s| s.upstream.as_str()));
    let mut unique: Vec<String> = Vec::new();
    for n in names {
        if !unique.iter().any(|u| u == n) {
            unique.push(n.to_string());
        }
    }
    if unique.len() > 255 {
        return Err(err("more than 255 upstreams".into()));
    }
    let mut targets = Vec::with_capacity(unique.len());
    for name in &unique {
        let upstream = inputs
            .upstreams
            .get(name.as_str())
            .cloned()
            .ok_or_else(|| err(format!("unknown upstream {name:?}")))?;
        let class = |c: &'static str| metrics::counter!(m::REQUESTS, "route" => rc.name.clone(), "target" => name.to_string(), "class" => c);
        let metrics = TargetMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
                class("error"),
            ],
            latency: metrics::histogram!(m::UPSTREAM_LATENCY, "route" => rc.name.clone(), "target" => name.to_string()),
        };
        targets.push(Target { upstream, metrics });
    }
    let position = |n: &str| unique.iter().position(|u| *u == n).unwrap_or(0) as u8;
    let lookup = allocation.lookup(position);
    for (name, share) in allocation.shares() {
        metrics::gauge!(m::ROUTE_SHARE, "route" => rc.name.clone(), "target" => name)
            .set(f64::from(share) / 100.0);
    }
    Ok(Route {
        name: rc.name.clone(),
        host: rc.host.clone(),
        path_prefix: normalize_prefix(&rc.path_prefix).to_string(),
        methods: rc.methods.clone(),
        headers: rc.headers.clone(),
        lookup,
        allocation,
        seed: salt_seed(&rc.salt),
        sticky: rc.sticky.clone(),
        fallback: position(&rc.fallback),
        pins: rc
            .pins
            .iter()
            .map(|p| (p.source.clone(), p.value.clone(), position(&p.upstream)))
            .collect(),
        entity: rc.entity.clone(),
        added_latency: metrics::histogram!(m::ADDED_LATENCY, "route" => rc.name.clone()),
        retries: metrics::counter!(m::RETRIES, "route" => rc.name.clone()),
        gate_stats: inputs.gate_stats.get(&rc.name).cloned(),
        targets,
    })
}
