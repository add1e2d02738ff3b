//! The router: the current route table behind an `ArcSwap`, its version history, and every
//! way a new table gets published (split change, rollback, reload, rollout step, another
//! gateway's change seen in the control database).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::health::Health;
use super::split::{Allocation, BUCKETS};
use super::stats::GateStats;
use super::table::{BuildError, RouteTable, TableInputs, TableSpec, Upstream};
use crate::config::Config;
use crate::control::{ControlError, ControlStore, VersionRecord};
use crate::metrics as m;

/// Why a change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// No such route.
    #[error("unknown route {0:?}")]
    UnknownRoute(String),
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The table could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The control database failed; nothing was published.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// There is no earlier version to go back to.
    #[error("no earlier route table version to roll back to")]
    NoPrevious,
}

struct Inputs {
    config: Arc<Config>,
    upstreams: BTreeMap<String, Arc<Upstream>>,
    gate_stats: BTreeMap<String, Arc<GateStats>>,
}

/// Publishes and serves route tables.
pub struct Router {
    current: ArcSwap<RouteTable>,
    config: ArcSwap<Config>,
    history: Mutex<VecDeque<Arc<RouteTable>>>,
    inputs: tokio::sync::Mutex<Inputs>,
    control: Arc<ControlStore>,
    history_len: usize,
    /// The table in force was applied while the control database was unreachable and still
    /// has to be persisted.
    unpersisted: AtomicBool,
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn upstreams_for(
    cfg: &Config,
    old: &BTreeMap<String, Arc<Upstream>>,
) -> BTreeMap<String, Arc<Upstream>> {
    cfg.upstreams
        .iter()
        .map(|u| {
            let keep = old.get(&u.name).filter(|o| {
                o.authority == u.authority
                    && o.base_path == u.base_path
                    && o.rewrite_host == u.rewrite_host
            });
            let up = match keep {
                Some(o) => o.clone(),
                None => Arc::new(Upstream {
                    name: u.name.clone(),
                    authority: u.authority.clone(),
                    base_path: u.base_path.clone(),
                    rewrite_host: u.rewrite_host,
                    // An authority is always a valid header value.
                    host_header: http::HeaderValue::from_str(u.authority.as_str())
                        .unwrap_or_else(|_| http::HeaderValue::from_static("")),
                    health: Health::new(&u.name, u.passive.clone()),
                }),
            };
            (u.name.clone(), up)
        })
        .collect()
}

fn gate_stats_for(
    cfg: &Config,
    old: &BTreeMap<String, Arc<GateStats>>,
) -> BTreeMap<String, Arc<GateStats>> {
    cfg.routes
        .iter()
        .filter_map(|r| {
            let ro = r.rollout.as_ref()?;
            let keep = old
                .get(&r.name)
                .filter(|g| g.target == ro.target && g.fallback == r.fallback);
            let stats = keep
                .cloned()
                .unwrap_or_else(|| Arc::new(GateStats::new(&ro.target, &r.fallback, ro.window)));
            Some((r.name.clone(), stats))
        })
        .collect()
}

impl Router {
    /// Starts from the control database: resumes its newest table when it was built for this
    /// same config file, otherwise publishes the file's table (carrying over what it can).
    pub async fn start(config: Config, control: Arc<ControlStore>) -> Result<Router, RouterError> {
        let config = Arc::new(config);
        let upstreams = upstreams_for(&config, &BTreeMap::new());
        let gate_stats = gate_stats_for(&config, &BTreeMap::new());
        let latest = control.latest::<TableSpec>().await?;
        let inputs = Inputs {
            config: config.clone(),
            upstreams,
            gate_stats,
        };
        let t = TableInputs {
            config: &config,
            upstreams: &inputs.upstreams,
            gate_stats: &inputs.gate_stats,
        };
        let (table, publish_reason) = match latest {
            Some(rec) if rec.spec.config_fingerprint == config.fingerprint => {
                match RouteTable::build(
                    &t,
                    rec.spec.clone(),
                    rec.version,
                    rec.created_at_ms,
                    rec.reason.clone(),
                ) {
                    Ok(table) => (table, None),
                    Err(e) => {
                        tracing::warn!(error = %e, "stored route table does not fit the config; starting from the file");
                        let spec = TableSpec::from_config(&config);
                        (
                            RouteTable::build(&t, spec, 0, now_ms(), String::new())?,
                            Some("config loaded".to_string()),
                        )
                    }
                }
            }
            Some(rec) => {
                let spec = rec.spec.carry_over(&config);
                let reason = format!("config file changed since version {}", rec.version);
                (
                    RouteTable::build(&t, spec, rec.version, now_ms(), String::new())?,
                    Some(reason),
                )
            }
            None => {
                let spec = TableSpec::from_config(&config);
                (
                    RouteTable::build(&t, spec, 0, now_ms(), String::new())?,
                    Some("config loaded".to_string()),
                )
            }
        };
        let history_len = config.gateway.history;
        let router = Router {
            current: ArcSwap::from_pointee(table),
            config: ArcSwap::new(config.clone()),
            history: Mutex::new(VecDeque::new()),
            inputs: tokio::sync::Mutex::new(inputs),
            control,
            history_len,
            unpersisted: AtomicBool::new(false),
        };
        // Fill the in-memory history from the database so rollback works right after start.
        let mut stored = router.control.versions::<TableSpec>(history_len).await?;
        stored.reverse();
        {
            let inputs = router.inputs.lock().await;
            for rec in stored {
                if let Ok(t) = router.build(
                    &inputs,
                    rec.spec,
                    rec.version,
                    rec.created_at_ms,
                    rec.reason,
                ) {
                    router.remember(Arc::new(t));
                }
            }
            if let Some(reason) = publish_reason {
                let spec = router.current.load().spec.clone();
                router.publish(&inputs, spec, reason).await?;
            }
        }
        metrics::gauge!(m::TABLE_VERSION).set(router.current.load().version as f64);
        Ok(router)
    }

    /// The table in force (an `Arc` clone: cheap, lock-free).
    #[inline]
    pub fn current(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Kept versions, oldest first.
    pub fn versions(&self) -> Vec<Arc<RouteTable>> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The upstreams of the config in force.
    pub async fn upstreams(&self) -> Vec<Arc<Upstream>> {
        self.inputs
            .lock()
            .await
            .upstreams
            .values()
            .cloned()
            .collect()
    }

    /// Gate statistics of a route with a rollout plan.
    pub async fn gate_stats(&self, route: &str) -> Option<Arc<GateStats>> {
        self.inputs.lock().await.gate_stats.get(route).cloned()
    }

    /// The control database.
    pub fn control(&self) -> &ControlStore {
        &self.control
    }

    fn build(
        &self,
        inputs: &Inputs,
        spec: TableSpec,
        version: u64,
        at: u64,
        reason: String,
    ) -> Result<RouteTable, BuildError> {
        let t = TableInputs {
            config: &inputs.config,
            upstreams: &inputs.upstreams,
            gate_stats: &inputs.gate_stats,
        };
        RouteTable::build(&t, spec, version, at, reason)
    }

    fn remember(&self, table: Arc<RouteTable>) {
        if let Ok(mut h) = self.history.lock() {
            if h.back().is_some_and(|b| b.version >= table.version) {
                return;
            }
            h.push_back(table);
            while h.len() > self.history_len {
                h.pop_front();
            }
        }
    }

    fn install(&self, table: Arc<RouteTable>) {
        metrics::gauge!(m::TABLE_VERSION).set(table.version as f64);
        self.current.store(table.clone());
        self.remember(table);
    }

    /// Persists then swaps in a new table; the version number is taken in the database so
    /// gateways sharing it never reuse one.
    async fn publish(
        &self,
        inputs: &Inputs,
        spec: TableSpec,
        reason: String,
    ) -> Result<Arc<RouteTable>, RouterError> {
        // Built before anything is stored, so an unbuildable spec is refused; the version,
        // time and reason are filled in once the database has given a version number.
        let mut table = self.build(inputs, spec.clone(), 0, 0, String::new())?;
        let mut version = self
            .control
            .latest_version()
            .await?
            .max(self.current.load().version)
            + 1;
        for _ in 0..10 {
            let rec = VersionRecord {
                version,
                created_at_ms: now_ms(),
                reason: reason.clone(),
                spec: spec.clone(),
            };
            if self.control.insert_version(&rec).await? {
                // Anything applied offline is part of what was just stored.
                self.unpersisted.store(false, Ordering::SeqCst);
                table.version = rec.version;
                table.created_at_ms = rec.created_at_ms;
                table.reason = rec.reason;
                let table = Arc::new(table);
                self.install(table.clone());
                tracing::info!(version, reason = %reason, "published route table");
                return Ok(table);
            }
            version = self.control.latest_version().await? + 1;
        }
        Err(RouterError::Invalid(
            "could not take a version number: too many concurrent publishers".into(),
        ))
    }

    /// The current spec with a route's split changed.
    fn split_spec(
        &self,
        inputs: &Inputs,
        route: &str,
        weights: &[(String, u32)],
    ) -> Result<TableSpec, RouterError> {
        let rc = inputs
            .config
            .route(route)
            .ok_or_else(|| RouterError::UnknownRoute(route.into()))?;
        let total: u32 = weights.iter().map(|(_, b)| b).sum();
        if total != BUCKETS {
            return Err(RouterError::Invalid(format!(
                "split sums to {}, must be 100",
                crate::config::percent(total)
            )));
        }
        if let Some((bad, _)) = weights
            .iter()
            .find(|(n, _)| !inputs.upstreams.contains_key(n))
        {
            return Err(RouterError::Invalid(format!("unknown upstream {bad:?}")));
        }
        let mut spec = self.current.load().spec.clone();
        let current = spec
            .routes
            .get(route)
            .cloned()
            .unwrap_or_else(|| Allocation::initial(&rc.split, &rc.fallback));
        spec.routes
            .insert(route.to_string(), current.rebalance(weights, &rc.fallback));
        spec.restores = None;
        Ok(spec)
    }

    /// Sets a route's split (upstream → buckets), moving only the buckets that change hands.
    pub async fn set_split(
        &self,
        route: &str,
        weights: Vec<(String, u32)>,
        reason: String,
    ) -> Result<Arc<RouteTable>, RouterError> {
        let inputs = self.inputs.lock().await;
        let spec = self.split_spec(&inputs, route, &weights)?;
        self.publish(&inputs, spec, reason).await
    }

    /// Publishes a rollback. If the control database cannot take it, the rollback still
    /// takes effect here at once and is persisted as soon as the database answers again:
    /// an outage must never block going back.
    async fn publish_rollback(
        &self,
        inputs: &Inputs,
        spec: TableSpec,
        reason: String,
    ) -> Result<Arc<RouteTable>, RouterError> {
        match self.publish(inputs, spec.clone(), reason.clone()).await {
            Err(RouterError::Control(e)) => {
                metrics::counter!(m::CONTROL_ERRORS).increment(1);
                tracing::error!(error = %e, "control database unavailable: rollback applied locally, to be persisted when it returns");
                let version = self.current.load().version + 1;
                let table = Arc::new(self.build(
                    inputs,
                    spec,
                    version,
                    now_ms(),
                    format!("{reason} (not yet persisted)"),
                )?);
                self.unpersisted.store(true, Ordering::SeqCst);
                self.install(table.clone());
                Ok(table)
            }
            other => other,
        }
    }

    /// Sends a route entirely to its fallback.
    pub async fn rollback_route(
        &self,
        route: &str,
        reason: String,
    ) -> Result<Arc<RouteTable>, RouterError> {
        let inputs = self.inputs.lock().await;
        let fallback = inputs
            .config
            .route(route)
            .ok_or_else(|| RouterError::UnknownRoute(route.into()))?
            .fallback
            .clone();
        let spec = self.split_spec(&inputs, route, &[(fallback, BUCKETS)])?;
        self.publish_rollback(&inputs, spec, reason).await
    }

    /// Publishes again the table that preceded the current one.
    pub async fn rollback(&self) -> Result<Arc<RouteTable>, RouterError> {
        let inputs = self.inputs.lock().await;
        let current = self.current.load_full();
        let base = current.spec.restores.unwrap_or(current.version);
        let previous = self
            .versions()
            .into_iter()
            .rev()
            .find(|t| t.version < base)
            .ok_or(RouterError::NoPrevious)?;
        let mut spec = previous.spec.clone();
        spec.restores = Some(previous.version);
        spec.config_fingerprint = inputs.config.fingerprint;
        self.publish_rollback(
            &inputs,
            spec,
            format!("rollback to version {}", previous.version),
        )
        .await
    }

    /// Swaps in a new config: upstreams keep their health, routes whose file split did not
    /// change keep their current allocation.
    pub async fn reload(&self, config: Config) -> Result<Arc<RouteTable>, RouterError> {
        let mut inputs = self.inputs.lock().await;
        let config = Arc::new(config);
        let next = Inputs {
            upstreams: upstreams_for(&config, &inputs.upstreams),
            gate_stats: gate_stats_for(&config, &inputs.gate_stats),
            config: config.clone(),
        };
        let spec = self.current.load().spec.carry_over(&config);
        let table = self
            .publish(
                &next,
                spec,
                format!("config reload of {}", config.file.display()),
            )
            .await?;
        *inputs = next;
        self.config.store(config);
        Ok(table)
    }

    /// Adopts a newer version published by another gateway; true when one was adopted.
    pub async fn sync_from_control(&self) -> Result<bool, RouterError> {
        if self.unpersisted.load(Ordering::SeqCst) {
            // Never adopt the database's older view over a rollback made while it was away.
            let inputs = self.inputs.lock().await;
            let current = self.current.load_full();
            let reason = current
                .reason
                .trim_end_matches(" (not yet persisted)")
                .to_string();
            self.publish(
                &inputs,
                current.spec.clone(),
                format!("{reason} (persisted after a control database outage)"),
            )
            .await?;
            self.unpersisted.store(false, Ordering::SeqCst);
            return Ok(false);
        }
        let latest = self.control.latest_version().await?;
        if latest <= self.current.load().version {
            return Ok(false);
        }
        let Some(rec) = self.control.latest::<TableSpec>().await? else {
            return Ok(false);
        };
        let inputs = self.inputs.lock().await;
        if rec.version <= self.current.load().version {
            return Ok(false);
        }
        let table = self.build(
            &inputs,
            rec.spec,
            rec.version,
            rec.created_at_ms,
            rec.reason,
        )?;
        tracing::info!(version = table.version, reason = %table.reason, "adopted route table from the control database");
        self.install(Arc::new(table));
        Ok(true)
    }
}
