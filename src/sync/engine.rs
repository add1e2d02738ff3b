//! The sync engine: its configuration checked against the databases, capture installed and
//! removed, and one loop (a link) started per pair of sides — or, in broker mode, the broker's
//! workers.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::sync::{EntityConfig, SyncConfig};
use crate::control::ControlStore;
use crate::store::{CaptureSpec, Store, TableInfo};
use crate::sync::conflict::rules_known;
use crate::sync::conflict::{ConflictRule, Rules};
use crate::sync::error::{SyncError, timed};
use crate::sync::link::{Direct, Link};
use crate::sync::mapping::Mapping;
use crate::sync::shared::{Shared, connect};
use crate::sync::status::{SyncStatus, link_name};

/// The changelog table every backend keeps.
pub(super) const CHANGELOG: &str = "_strangler_changes";

/// Wakes the links that carry an entity (fed by the gateway's write tap).
#[derive(Clone, Default)]
pub struct SyncWaker {
    by_entity: Arc<HashMap<String, Vec<Arc<Notify>>>>,
}

impl SyncWaker {
    /// Wakes what carries `entity` (its link, or in broker mode its sides' relays); false
    /// when nothing does.
    pub fn wake(&self, entity: &str) -> bool {
        match self.by_entity.get(entity) {
            Some(ns) => {
                for n in ns {
                    n.notify_one();
                }
                true
            }
            None => false,
        }
    }
}

/// The sync engine for one configuration.
pub struct SyncEngine {
    cfg: SyncConfig,
    status: Arc<SyncStatus>,
    control: Option<Arc<ControlStore>>,
    rules: Rules,
    wakes: HashMap<String, Arc<Notify>>,
    by_entity: HashMap<String, Vec<Arc<Notify>>>,
}

/// Checks every entity's mapping against its tables on the connected `stores`; returns the
/// warnings (unmapped columns).
async fn mappings_fit(
    cfg: &SyncConfig,
    stores: &mut HashMap<String, Store>,
) -> Result<Vec<String>, SyncError> {
    let mut warnings = Vec::new();
    for e in &cfg.entities {
        let (l, r) = infos(stores, e).await?;
        let (_, w) = Mapping::check(e, l.as_ref(), r.as_ref())?;
        warnings.extend(w);
    }
    Ok(warnings)
}

/// Tables (with keys) each side captures.
pub(super) fn capture_specs(cfg: &SyncConfig) -> HashMap<String, Vec<CaptureSpec>> {
    let mut out: HashMap<String, Vec<CaptureSpec>> = HashMap::new();
    for e in &cfg.entities {
        for t in [&e.left, &e.right] {
            let specs = out.entry(t.side.clone()).or_default();
            if !specs.iter().any(|s| s.table == t.table) {
                specs.push(CaptureSpec {
                    table: t.table.clone(),
                    key: t.key.clone(),
                });
            }
        }
    }
    out
}

impl SyncEngine {
    /// An engine for `cfg`; conflicts are also stored in `control` when given.
    pub fn new(cfg: SyncConfig, control: Option<Arc<ControlStore>>) -> SyncEngine {
        // Direct mode: one notify per link, under each entity's name. Broker mode: one per
        // side's relay, under `side:NAME`.
        let mut wakes: HashMap<String, Arc<Notify>> = HashMap::new();
        let mut by_entity: HashMap<String, Vec<Arc<Notify>>> = HashMap::new();
        for e in &cfg.entities {
            let keys = if cfg.broker.is_some() {
                vec![
                    format!("side:{}", e.left.side),
                    format!("side:{}", e.right.side),
                ]
            } else {
                vec![link_name(&e.left.side, &e.right.side)]
            };
            for k in keys {
                let n = wakes
                    .entry(k)
                    .or_insert_with(|| Arc::new(Notify::new()))
                    .clone();
                by_entity.entry(e.name.clone()).or_default().push(n);
            }
        }
        SyncEngine {
            cfg,
            status: Arc::new(SyncStatus::default()),
            control,
            rules: Rules::new(),
            wakes,
            by_entity,
        }
    }

    /// Reports into an existing status (kept across restarts of the engine).
    pub fn with_status(mut self, status: Arc<SyncStatus>) -> SyncEngine {
        self.status = status;
        self
    }

    /// Registers a custom conflict rule, used by `custom:NAME` policies.
    pub fn with_rule(mut self, name: &str, rule: Arc<dyn ConflictRule>) -> SyncEngine {
        self.rules.insert(name.to_string(), rule);
        self
    }

    /// Registers custom conflict rules, by name.
    pub fn with_rules(mut self, rules: &Rules) -> SyncEngine {
        self.rules
            .extend(rules.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// The engine's status, shared with the admin API.
    pub fn status(&self) -> Arc<SyncStatus> {
        self.status.clone()
    }

    /// A handle that wakes the engine for an entity.
    pub fn waker(&self) -> SyncWaker {
        SyncWaker {
            by_entity: Arc::new(self.by_entity.clone()),
        }
    }

    /// Whether there is anything to sync.
    pub fn is_empty(&self) -> bool {
        self.cfg.entities.is_empty()
    }

    /// Connects to every side and checks every mapping against the real tables and that
    /// capture is installed; returns warnings.
    pub async fn check(&self) -> Result<Vec<String>, SyncError> {
        rules_known(&self.cfg, &self.rules)?;
        let mut stores = HashMap::new();
        for side in capture_specs(&self.cfg).keys() {
            let mut s = connect(&self.cfg, side).await?;
            if !timed(side, "installed", s.installed()).await? {
                return Err(SyncError::NotInstalled { side: side.clone() });
            }
            if self.cfg.broker.is_some() {
                let log = timed(side, "table_info", s.table_info(CHANGELOG)).await?;
                if log.as_ref().and_then(|t| t.column("pub")).is_none() {
                    return Err(SyncError::NoOutbox { side: side.clone() });
                }
            }
            stores.insert(side.clone(), s);
        }
        mappings_fit(&self.cfg, &mut stores).await
    }

    /// What `sync install` checks before installing, without changing anything: every side
    /// answers and every mapping fits its tables. `Ok(Err(reason))` when a side could not be
    /// reached (a SQLite file that does not exist counts as unreachable and is not created);
    /// `Err` when the databases answered and something does not fit.
    pub async fn check_databases(
        cfg: &SyncConfig,
    ) -> Result<Result<Vec<String>, String>, SyncError> {
        let mut stores = HashMap::new();
        for side in capture_specs(cfg).keys() {
            let url = crate::sync::shared::side_url(cfg, side)?;
            if let Some(path) = url.strip_prefix("sqlite://")
                && path != ":memory:"
                && !std::path::Path::new(path).exists()
            {
                return Ok(Err(format!("side {side:?}: {path} does not exist")));
            }
            match connect(cfg, side).await {
                Ok(s) => {
                    stores.insert(side.clone(), s);
                }
                Err(e) => return Ok(Err(e.to_string())),
            }
        }
        Ok(Ok(mappings_fit(cfg, &mut stores).await?))
    }

    /// Creates changelogs and triggers on every side (idempotent); checks mappings first.
    pub async fn install(cfg: &SyncConfig) -> Result<(), SyncError> {
        let mut stores = HashMap::new();
        for side in capture_specs(cfg).keys() {
            stores.insert(side.clone(), connect(cfg, side).await?);
        }
        mappings_fit(cfg, &mut stores).await?;
        for (side, specs) in capture_specs(cfg) {
            if let Some(s) = stores.get_mut(&side) {
                timed(&side, "install", s.install(&specs, cfg.broker.is_some())).await?;
            }
        }
        Ok(())
    }

    /// Removes every trace of capture from every side.
    pub async fn uninstall(cfg: &SyncConfig) -> Result<(), SyncError> {
        for (side, specs) in capture_specs(cfg) {
            let mut s = connect(cfg, &side).await?;
            let tables: Vec<String> = specs.into_iter().map(|s| s.table).collect();
            timed(&side, "uninstall", s.uninstall(&tables)).await?;
        }
        Ok(())
    }

    fn shared(&self) -> Shared {
        Shared {
            status: self.status.clone(),
            control: self.control.clone(),
            rules: Arc::new(self.rules.clone()),
            wakes: self.wakes.clone(),
        }
    }

    /// Runs every link until `shutdown`; in broker mode, runs the units this worker wins.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Some(b) = self.cfg.broker.clone() {
            let shared = self.shared();
            super::broker::run(self.cfg, b, shared, shutdown).await;
            return;
        }
        let mut links: HashMap<String, Vec<EntityConfig>> = HashMap::new();
        for e in &self.cfg.entities {
            links
                .entry(link_name(&e.left.side, &e.right.side))
                .or_default()
                .push(e.clone());
        }
        let tasks = tokio_util::task::TaskTracker::new();
        let shared = self.shared();
        for (name, entities) in links {
            let link = Link::build(name, &self.cfg, entities, &shared, Direct::default());
            tasks.spawn(link.run(shutdown.clone()));
        }
        tasks.close();
        tasks.wait().await;
    }
}

#[async_trait::async_trait]
impl crate::engine::Engine for SyncEngine {
    fn name(&self) -> &'static str {
        "sync"
    }

    /// Each write on an entity's route wakes that entity's link.
    fn tap(&self) -> Option<crate::engine::TapListener> {
        let waker = self.waker();
        Some(Arc::new(move |ev: &crate::tap::WriteEvent| {
            waker.wake(&ev.entity);
        }))
    }

    async fn run(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> Result<(), crate::engine::EngineError> {
        SyncEngine::run(*self, shutdown).await;
        Ok(())
    }
}

async fn infos(
    stores: &mut HashMap<String, Store>,
    e: &EntityConfig,
) -> Result<(Option<TableInfo>, Option<TableInfo>), SyncError> {
    let mut out = Vec::new();
    for t in [&e.left, &e.right] {
        let s = stores
            .get_mut(&t.side)
            .ok_or_else(|| SyncError::UnknownSide(t.side.clone()))?;
        out.push(timed(&t.side, "table_info", s.table_info(&t.table)).await?);
    }
    let r = out.pop().flatten();
    let l = out.pop().flatten();
    Ok((l, r))
}
