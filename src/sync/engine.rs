//! The engine proper. Entities are grouped by the pair of sides they connect (a link); each
//! link runs one loop: read both changelogs, map every change to the entity's left form,
//! settle keys changed on both sides, then apply to the first side, apply to the second side
//! (deleting the second side's consumed changes in the same transaction) and finally delete
//! the first side's consumed changes. Each apply carries its checkpoint (`_strangler_applied`),
//! so a change re-read after a crash is recognised and not applied twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::conflict::{self, ConflictRule, Rules, SideChange};
use super::mapping::{Mapping, MappingError, used_columns};
use super::status::{Quarantined, SyncStatus, link_name};
use crate::config::sync::{EntityConfig, OnError, Policy, SyncConfig, SyncSettings};
use crate::control::ControlStore;
use crate::metrics as m;
use crate::store::{
    ApplyBatch, CaptureSpec, Change, Op, Row, Store, StoreError, TableInfo, Write, key_text,
};

/// The changelog table every backend keeps.
const CHANGELOG: &str = "_strangler_changes";

/// Longest a single database call may take before the round is retried.
const OP_TIMEOUT: Duration = Duration::from_secs(15);

/// A sync failure.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A mapping does not fit the databases.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// A database call failed.
    #[error("side {side:?}: {source}")]
    Store {
        /// Side.
        side: String,
        /// What the database said.
        #[source]
        source: StoreError,
    },
    /// A database call took too long.
    #[error("side {side:?}: {what} timed out after {}s", OP_TIMEOUT.as_secs())]
    Timeout {
        /// Side.
        side: String,
        /// The call.
        what: &'static str,
    },
    /// Capture has not been installed on a side.
    #[error("side {side:?}: capture is not installed; run `strangler sync install --config FILE`")]
    NotInstalled {
        /// Side.
        side: String,
    },
    /// Broker mode is configured but capture was installed without the relay's outbox flag.
    #[error(
        "side {side:?}: capture was installed without the broker outbox ([sync.broker] was added later); run `strangler sync install --config FILE` again"
    )]
    NoOutbox {
        /// Side.
        side: String,
    },
    /// The config names a side with no `[sides.NAME]`.
    #[error("side {0:?} is not configured")]
    UnknownSide(String),
    /// Another worker took over this unit (its lease expired here).
    #[error("{unit}: another worker holds a newer lease; stopping")]
    Fenced {
        /// The ownership unit.
        unit: String,
    },
    /// The broker failed.
    #[error("broker: {0}")]
    Broker(String),
    /// A `custom:NAME` policy names a rule nobody registered.
    #[error(
        "entity {entity:?}: conflict rule \"custom:{rule}\" is not registered ({registered}); a program embedding Strangler registers it with SyncEngine::with_rule"
    )]
    UnknownRule {
        /// Entity.
        entity: String,
        /// The rule's name.
        rule: String,
        /// The rules that are registered.
        registered: String,
    },
}

/// Refuses a config whose `custom:NAME` policies name rules not in `rules`.
pub fn rules_known(cfg: &SyncConfig, rules: &Rules) -> Result<(), SyncError> {
    for e in &cfg.entities {
        let named = std::iter::once(&e.conflict).chain(e.column_conflict.values());
        for p in named {
            if let Policy::Custom(rule) = p
                && !rules.contains_key(rule)
            {
                let mut names: Vec<&str> = rules.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(SyncError::UnknownRule {
                    entity: e.name.clone(),
                    rule: rule.clone(),
                    registered: if names.is_empty() {
                        "none are".into()
                    } else {
                        format!("registered: {}", names.join(", "))
                    },
                });
            }
        }
    }
    Ok(())
}

pub(super) async fn timed<T>(
    side: &str,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, SyncError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|source| SyncError::Store {
            side: side.into(),
            source,
        }),
        Err(_) => Err(SyncError::Timeout {
            side: side.into(),
            what,
        }),
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

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

/// What every link of an engine shares.
pub(super) struct Shared {
    pub(super) status: Arc<SyncStatus>,
    pub(super) control: Option<Arc<ControlStore>>,
    pub(super) rules: Arc<Rules>,
    pub(super) wakes: HashMap<String, Arc<Notify>>,
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

fn side_url<'a>(cfg: &'a SyncConfig, side: &str) -> Result<&'a str, SyncError> {
    cfg.sides
        .get(side)
        .map(|s| s.database.as_str())
        .ok_or_else(|| SyncError::UnknownSide(side.into()))
}

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
            let url = side_url(cfg, side)?;
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
            let link = Link::build(name, &self.cfg, entities, &shared, None);
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

struct SideConn {
    name: String,
    store: Option<Store>,
}

impl SideConn {
    fn new(name: String) -> SideConn {
        SideConn { name, store: None }
    }
}

struct Ent {
    cfg: EntityConfig,
    mapping: Option<Mapping>,
    snapshot: Option<(TableInfo, TableInfo)>,
    paused: Option<String>,
    last_check: Option<Instant>,
    warned: HashSet<String>,
}

impl Ent {
    fn new(cfg: EntityConfig) -> Ent {
        Ent {
            cfg,
            mapping: None,
            snapshot: None,
            paused: None,
            last_check: None,
            warned: HashSet::new(),
        }
    }
}

enum Step {
    Idle,
    Busy,
    Again,
}

/// One change's effect on one key, in left form.
struct Piece {
    seq: i64,
    ts: i64,
    base: Option<Row>,
    row: Option<Row>,
}

struct Group {
    ent: usize,
    key: Row,
    a: Vec<Piece>,
    b: Vec<Piece>,
}

fn net(side: &str, pieces: &[Piece]) -> Option<SideChange> {
    let first = pieces.first()?;
    let last = pieces.last()?;
    let mut deltas = std::collections::BTreeMap::new();
    for p in pieces {
        for (c, v) in p.row.iter().flatten() {
            if let Some(n) = v.as_f64() {
                let o = p
                    .base
                    .as_ref()
                    .and_then(|b| b.get(c))
                    .and_then(Value::as_f64);
                *deltas.entry(c.clone()).or_insert(0.0) += n - o.unwrap_or(0.0);
            }
        }
    }
    Some(SideChange {
        side: side.to_string(),
        base: first.base.clone(),
        row: last.row.clone(),
        stamp: (last.ts, last.seq),
        deltas,
    })
}

pub(super) struct Link {
    name: String,
    cfg: SyncConfig,
    settings: SyncSettings,
    sides: [SideConn; 2],
    entities: Vec<Ent>,
    status: Arc<SyncStatus>,
    control: Option<Arc<ControlStore>>,
    rules: Arc<Rules>,
    wake: Arc<Notify>,
    force_check: bool,
    feed: Option<super::broker::Feed>,
    /// Direct mode: the first side's changelog rows applied to the second side and not yet
    /// deleted; the next round's transaction on the first side deletes them.
    pending: HashSet<i64>,
    /// Capture time (µs) of the oldest change known not yet applied, by entity index and
    /// the index of the side it comes from: what lag is measured from while the link is
    /// retrying, whatever stops it.
    waiting: HashMap<(usize, usize), i64>,
    /// Keys of quarantined changes, by side index, table and key text: their changes are
    /// skipped (left in the changelog) until the quarantined one is retried.
    held: HashMap<(usize, String, String), u64>,
    /// Held changelog rows the last read of each side skipped: the next read goes past them.
    skipped: [usize; 2],
    /// Whether the round in progress has begun writing.
    writing: bool,
    /// Consecutive rounds that failed while writing.
    write_failures: u32,
    /// Looking for a change the other side refuses, by halving the batch of one side
    /// (side index, changes read per round); a success doubles it back.
    isolate: Option<(usize, usize)>,
    /// The side the next isolation starts with: sides take turns.
    isolate_next: usize,
    /// How many changes of each side the round being written carries.
    round_len: [usize; 2],
    /// Quarantined changes by id: entity index, side index, capture time. They count in the
    /// lag until they are applied.
    quarantined: HashMap<u64, (usize, usize, i64)>,
    /// While isolating: the changes of the round being written (side index, change).
    round_changes: Vec<(usize, Change)>,
}

/// Attempts a change gets before it is quarantined.
const QUARANTINE_AFTER: u32 = 3;

impl Link {
    /// Builds the loop for one pair of sides (one group's entities in broker mode).
    pub(super) fn build(
        name: String,
        cfg: &SyncConfig,
        entities: Vec<EntityConfig>,
        shared: &Shared,
        feed: Option<super::broker::Feed>,
    ) -> Link {
        let mut s = [
            entities[0].left.side.clone(),
            entities[0].right.side.clone(),
        ];
        s.sort();
        let [a, b] = s;
        Link {
            name,
            cfg: cfg.clone(),
            settings: cfg.settings.clone(),
            sides: [SideConn::new(a), SideConn::new(b)],
            wake: shared
                .wakes
                .get(&link_name(&entities[0].left.side, &entities[0].right.side))
                .cloned()
                .unwrap_or_default(),
            entities: entities.into_iter().map(Ent::new).collect(),
            status: shared.status.clone(),
            control: shared.control.clone(),
            rules: shared.rules.clone(),
            force_check: true,
            feed,
            pending: HashSet::new(),
            waiting: HashMap::new(),
            held: HashMap::new(),
            skipped: [0, 0],
            writing: false,
            write_failures: 0,
            isolate: None,
            isolate_next: 0,
            round_len: [0, 0],
            quarantined: HashMap::new(),
            round_changes: Vec::new(),
        }
    }

    /// Checkpoint name for changes from `side` (per group in broker mode, where several
    /// groups' rounds write checkpoints into the same database).
    fn source(&self, side: &str) -> String {
        match &self.feed {
            Some(f) => format!("{side}#{}", f.group),
            None => side.to_string(),
        }
    }

    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let link_label = self.name.clone();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let step = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = self.step() => s,
            };
            if let Ok(done) = &step {
                self.write_failures = 0;
                if let Some((side, limit)) = self.isolate {
                    // A success doubles the batch back; whole batches again end the search
                    // (so does a side with nothing left to read).
                    let limit = limit * 2;
                    self.isolate = (limit < self.settings.batch && !matches!(done, Step::Idle))
                        .then_some((side, limit));
                }
            }
            match step {
                Ok(Step::Busy) => backoff = Duration::from_millis(100),
                Ok(Step::Again) => tokio::time::sleep(Duration::from_millis(5)).await,
                // The broker feed already waited for a message.
                Ok(Step::Idle) if self.feed.is_some() => backoff = Duration::from_millis(100),
                Err(e @ SyncError::Fenced { .. }) => {
                    tracing::warn!(link = %link_label, error = %e, "lost ownership");
                    return;
                }
                Ok(Step::Idle) => {
                    backoff = Duration::from_millis(100);
                    let na = self.sides[0].store.as_ref().and_then(Store::notified);
                    let nb = self.sides[1].store.as_ref().and_then(Store::notified);
                    let wait = |n: Option<Arc<Notify>>| async move {
                        match n {
                            Some(n) => n.notified().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = self.wake.notified() => {}
                        _ = wait(na) => {}
                        _ = wait(nb) => {}
                        _ = tokio::time::sleep(self.settings.poll) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(link = %link_label, error = %e, retry_in_ms = backoff.as_millis() as u64, "sync round failed; retrying");
                    metrics::counter!(m::SYNC_RETRIES, "link" => link_label.clone()).increment(1);
                    self.status.set_link(&link_label, format!("retrying: {e}"));
                    if std::mem::take(&mut self.writing) {
                        self.write_failed(&e);
                    }
                    self.stuck_lags();
                    for s in &mut self.sides {
                        s.store = None;
                    }
                    self.force_check = true;
                    // The lag of what waits goes on growing while the link backs off.
                    let until = tokio::time::Instant::now() + backoff;
                    while tokio::time::Instant::now() < until {
                        let slice = until
                            .saturating_duration_since(tokio::time::Instant::now())
                            .min(Duration::from_millis(250));
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(slice) => {}
                        }
                        self.stuck_lags();
                    }
                    // A search for a refused change fails on purpose: it keeps a short pace.
                    backoff = if self.isolate.is_some() {
                        Duration::from_millis(100)
                    } else {
                        (backoff * 2).min(self.settings.retry_max)
                    };
                }
            }
        }
    }

    fn side_index(&self, side: &str) -> usize {
        usize::from(self.sides[1].name == side)
    }

    async fn step(&mut self) -> Result<Step, SyncError> {
        let mut failed = None;
        for i in 0..2 {
            if self.sides[i].store.is_none() {
                let name = self.sides[i].name.clone();
                match self.open(&name).await {
                    Ok(s) => self.sides[i].store = Some(s),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
        }
        if let Some(e) = failed {
            // A side that answers still tells how long its changes have waited.
            for si in 0..2 {
                if self.sides[si].store.is_some()
                    && let Err(e) = self.peek(si, false).await
                {
                    tracing::debug!(error = %e, "cannot read the oldest waiting change");
                }
            }
            return Err(e);
        }
        let state = match &self.feed {
            Some(f) => format!("running, owned by {} (this worker)", f.worker),
            None => "running".into(),
        };
        self.status.set_link(&self.name, state);
        self.schema_checks().await?;
        self.round().await
    }

    /// Connects to `side` and checks that capture is installed there.
    async fn open(&self, side: &str) -> Result<Store, SyncError> {
        let mut s = connect(&self.cfg, side).await?;
        if !timed(side, "installed", s.installed()).await? {
            return Err(SyncError::NotInstalled { side: side.into() });
        }
        Ok(s)
    }

    /// Notes the oldest change waiting in side `si`'s changelog for each entity (all of them,
    /// or only the paused ones), for the lag of a link that cannot apply it.
    async fn peek(&mut self, si: usize, paused_only: bool) -> Result<(), SyncError> {
        let side = self.sides[si].name.clone();
        for ei in 0..self.entities.len() {
            let e = &self.entities[ei];
            if paused_only && e.paused.is_none() {
                continue;
            }
            let Some(t) = e.cfg.table(&side) else {
                continue;
            };
            let tables = [t.table.clone()];
            let oldest = timed(&side, "peek", self.store(&side).read_changes(1, &tables))
                .await?
                .first()
                .map(|c| c.ts_us);
            match oldest {
                Some(ts) => {
                    let w = self.waiting.entry((ei, si)).or_insert(ts);
                    *w = (*w).min(ts);
                }
                None => {
                    if self.waiting.remove(&(ei, si)).is_some() || paused_only {
                        let to = self.sides[1 - si].name.clone();
                        self.record_dir(&self.entities[ei], &side, &to, 0.0, None, 0);
                    }
                }
            }
        }
        Ok(())
    }

    /// A round failed while writing. After a few such rounds, the search for the change at
    /// fault halves one side's batch at each failure down to a single change; a change that
    /// fails alone that often is quarantined. A transient failure costs a few smaller rounds.
    fn write_failed(&mut self, e: &SyncError) {
        match self.isolate {
            Some((side, limit)) if limit > 1 => {
                self.isolate = Some((side, limit / 2));
                return;
            }
            _ => {}
        }
        self.write_failures += 1;
        if self.write_failures < QUARANTINE_AFTER {
            return;
        }
        self.write_failures = 0;
        if self.isolate.is_none() {
            tracing::warn!(link = %self.name, "writes keep failing: looking for the change at fault");
            let side = self.isolate_next;
            self.isolate_next = 1 - side;
            self.isolate = Some((side, (self.round_len[side] / 2).max(1)));
            return;
        }
        let changes = std::mem::take(&mut self.round_changes);
        // Found: the stream goes back to whole batches (and isolates again if need be).
        self.isolate = None;
        let Some((si, head)) = changes.first().cloned() else {
            return;
        };
        let ei = self.entity_of(si, &head.table);
        let reason = format!("the other side refused it: {e}");
        let id = match ei {
            Some(ei) => self.set_aside(si, ei, &head, reason, QUARANTINE_AFTER),
            None => return,
        };
        for (sj, c) in &changes[1..] {
            self.hold_with(id, *sj, c);
        }
    }

    /// The entity whose table on side `si` is `table`.
    fn entity_of(&self, si: usize, table: &str) -> Option<usize> {
        let side = &self.sides[si].name;
        self.entities
            .iter()
            .position(|e| e.cfg.table(side).is_some_and(|t| t.table == table))
    }

    /// Quarantines change `c` of side `si`: it stays in the changelog, skipped with every
    /// later change to its key until retried. Returns its id.
    fn set_aside(
        &mut self,
        si: usize,
        ei: usize,
        c: &Change,
        reason: String,
        attempts: u32,
    ) -> u64 {
        let side = self.sides[si].name.clone();
        let entity = self.entities[ei].cfg.name.clone();
        tracing::error!(link = %self.name, side = %side, entity = %entity, table = %c.table, key = %c.pk, seq = c.seq, reason = %reason,
            "change quarantined; later changes to its key wait with it");
        let id = self.status.quarantine(Quarantined {
            id: 0,
            link: self.name.clone(),
            side,
            entity,
            table: c.table.clone(),
            key: c.pk.clone(),
            seq: c.seq,
            reason,
            attempts,
            at_ms: (now_us() / 1000) as u64,
            held: Vec::new(),
        });
        self.held.insert((si, c.table.clone(), c.pk.clone()), id);
        self.quarantined.insert(id, (ei, si, c.ts_us));
        id
    }

    /// Makes change `c` of side `si`, and later ones to its key, wait with quarantined `id`.
    fn hold_with(&mut self, id: u64, si: usize, c: &Change) {
        self.held
            .entry((si, c.table.clone(), c.pk.clone()))
            .or_insert(id);
        self.status.hold(id, c.seq);
    }

    /// Drops held and poisoned changes from a round's read; poisoned ones are quarantined
    /// (or pause their entity when it says so).
    fn screen(&mut self, si: usize, changes: &mut Vec<Change>) -> usize {
        // The usual round: nothing held, nothing poisoned, nothing to allocate.
        if self.held.is_empty() && changes.iter().all(|c| c.poison.is_none()) {
            return 0;
        }
        let mut skipped = 0;
        let mut kept = Vec::with_capacity(changes.len());
        for c in changes.drain(..) {
            if let Some(&id) = self.held.get(&(si, c.table.clone(), c.pk.clone())) {
                self.status.hold(id, c.seq);
                skipped += 1;
                continue;
            }
            if let Some(reason) = &c.poison
                && let Some(ei) = self.entity_of(si, &c.table)
            {
                let reason = format!("cannot decode the change: {reason}");
                if self.entities[ei].cfg.on_error == OnError::Pause {
                    pause(&mut self.entities[ei], &self.status, reason);
                } else {
                    self.set_aside(si, ei, &c, reason, 1);
                }
                continue;
            }
            kept.push(c);
        }
        *changes = kept;
        skipped
    }

    /// Releases the quarantined changes an operator asked to retry.
    fn take_retries(&mut self) {
        for id in self.status.take_retries(&self.name) {
            self.quarantined.remove(&id);
            self.held.retain(|_, v| *v != id);
            tracing::info!(link = %self.name, id, "quarantined change released for another try");
        }
    }

    /// Records the lag of every direction holding a quarantined change: not applied yet, it
    /// is the oldest change waiting there.
    fn quarantine_lags(&self) {
        let mut oldest: HashMap<(usize, usize), i64> = HashMap::new();
        for &(ei, si, ts) in self.quarantined.values() {
            let o = oldest.entry((ei, si)).or_insert(ts);
            *o = (*o).min(ts);
        }
        self.record_ages(oldest);
    }

    /// Records the lag of every direction with a change known to be waiting.
    fn stuck_lags(&self) {
        self.record_ages(self.waiting.iter().map(|(k, ts)| (*k, *ts)));
        self.quarantine_lags();
    }

    /// Records, per (entity, side it comes from), the lag of a change captured at `ts` µs.
    fn record_ages(&self, oldest: impl IntoIterator<Item = ((usize, usize), i64)>) {
        let now = now_us();
        for ((ei, si), ts) in oldest {
            let (from, to) = (&self.sides[si].name, &self.sides[1 - si].name);
            let lag = ((now - ts).max(0) as f64) / 1e6;
            self.record_dir(&self.entities[ei], from, to, lag, None, 0);
        }
    }

    /// Both sides' stores at once (first side, second side), for calls made side by side.
    fn both(&mut self) -> (&mut Store, &mut Store) {
        let [x, y] = &mut self.sides;
        (
            x.store.as_mut().expect("connected before use"),
            y.store.as_mut().expect("connected before use"),
        )
    }

    fn store(&mut self, side: &str) -> &mut Store {
        let i = self.side_index(side);
        self.sides[i].store.as_mut().expect("connected before use")
    }

    async fn schema_checks(&mut self) -> Result<(), SyncError> {
        let force = std::mem::take(&mut self.force_check);
        for i in 0..self.entities.len() {
            let due = force
                || self.entities[i]
                    .last_check
                    .is_none_or(|t| t.elapsed() >= self.settings.schema_check);
            if !due {
                continue;
            }
            let e = self.entities[i].cfg.clone();
            let l = timed(
                &e.left.side,
                "table_info",
                self.store(&e.left.side).table_info(&e.left.table),
            )
            .await?;
            let r = timed(
                &e.right.side,
                "table_info",
                self.store(&e.right.side).table_info(&e.right.table),
            )
            .await?;
            let ent = &mut self.entities[i];
            ent.last_check = Some(Instant::now());
            match Mapping::check(&e, l.as_ref(), r.as_ref()) {
                Err(err) => pause(ent, &self.status, err.to_string()),
                Ok((mapping, _)) => {
                    let (l, r) = (l.unwrap_or_else(empty), r.unwrap_or_else(empty));
                    let snap = ent
                        .snapshot
                        .get_or_insert_with(|| (l.clone(), r.clone()))
                        .clone();
                    if let Some(msg) = retyped(&e, &snap, &l, &r) {
                        pause(ent, &self.status, msg);
                        continue;
                    }
                    for (t, old, now) in [(&e.left, &snap.0, &l), (&e.right, &snap.1, &r)] {
                        for c in &now.columns {
                            if old.column(&c.name).is_none()
                                && ent.warned.insert(format!("{}.{}", t.side, c.name))
                            {
                                tracing::warn!(entity = %e.name, side = %t.side, table = %t.table, column = %c.name,
                                    "schema change: new column not in the mapping; it is not synced");
                                metrics::counter!(m::SYNC_DRIFT, "entity" => e.name.clone())
                                    .increment(1);
                            }
                        }
                    }
                    if ent.paused.take().is_some() {
                        tracing::info!(entity = %e.name, "entity resumed: its schema matches the mapping again");
                        metrics::gauge!(m::SYNC_PAUSED, "entity" => e.name.clone()).set(0.0);
                        self.status.set_paused(&e.name, None);
                    }
                    ent.mapping = Some(mapping);
                }
            }
        }
        Ok(())
    }

    async fn round(&mut self) -> Result<Step, SyncError> {
        let (a, b) = (self.sides[0].name.clone(), self.sides[1].name.clone());
        let active: Vec<usize> = (0..self.entities.len())
            .filter(|i| self.entities[*i].paused.is_none() && self.entities[*i].mapping.is_some())
            .collect();
        let any_paused = active.len() < self.entities.len();
        let mut tables: [HashMap<String, usize>; 2] = [HashMap::new(), HashMap::new()];
        for &i in &active {
            let e = &self.entities[i].cfg;
            for t in [&e.left, &e.right] {
                tables[self.side_index(&t.side)]
                    .entry(t.table.clone())
                    .or_insert(i);
            }
        }
        let list = |m: &HashMap<String, usize>| m.keys().cloned().collect::<Vec<_>>();
        self.take_retries();
        let (mut ta, mut tb) = (list(&tables[0]), list(&tables[1]));
        // Held changes stay in the changelog: read past them. While isolating, part of one
        // side's batch.
        let (batch_a, batch_b) = match self.isolate {
            Some((0, limit)) => (limit + self.skipped[0], 0),
            Some((_, limit)) => (0, limit + self.skipped[1]),
            None => (
                self.settings.batch + self.skipped[0],
                self.settings.batch + self.skipped[1],
            ),
        };
        if batch_a == 0 {
            ta.clear();
        }
        if batch_b == 0 {
            tb.clear();
        }
        let (mut ra, mut rb) = match self.feed.as_mut() {
            Some(feed) => {
                let wait = if feed.sweep {
                    Duration::ZERO
                } else {
                    self.settings.poll
                };
                feed.receive(wait).await?;
                let [x, y] = &mut self.sides;
                for (conn, tabs) in [(x, &ta), (y, &tb)] {
                    let store = conn.store.as_mut().expect("connected before use");
                    feed.resolve(&conn.name, store, tabs).await?;
                }
                (feed.changes(&a), feed.changes(&b))
            }
            None => (Vec::new(), Vec::new()),
        };
        // Direct mode reads the changelogs every round; broker mode once after taking a group
        // over, because what the last owner had in flight is redelivered only after the ack wait.
        if self.feed.as_ref().is_none_or(|f| f.sweep) {
            let (sa, sb) = self.both();
            let (da, db) = tokio::join!(
                timed(&a, "read_changes", sa.read_changes(batch_a, &ta)),
                timed(&b, "read_changes", sb.read_changes(batch_b, &tb))
            );
            let (da, db) = (da?, db?);
            for (r, d) in [(&mut ra, da), (&mut rb, db)] {
                r.extend(d);
                r.sort_by_key(|c| c.seq);
                r.dedup_by_key(|c| c.seq);
            }
            if let Some(f) = self.feed.as_mut() {
                f.sweep = false;
            }
        }
        // Rows applied last round and deleted only in this round's transaction.
        ra.retain(|c| !self.pending.contains(&c.seq));
        self.skipped = [self.screen(0, &mut ra), self.screen(1, &mut rb)];
        if let Some((_, limit)) = self.isolate {
            // The isolating batch, whatever the read past held rows brought.
            ra.truncate(limit);
            rb.truncate(limit);
        }
        self.waiting
            .retain(|(ei, _), _| self.entities[*ei].paused.is_some());
        for (si, r) in [(0usize, &ra), (1, &rb)] {
            for c in r {
                if let Some(&ei) = tables[si].get(&c.table) {
                    let w = self.waiting.entry((ei, si)).or_insert(c.ts_us);
                    *w = (*w).min(c.ts_us);
                }
            }
        }
        if any_paused {
            // A paused entity's changes wait in the changelogs: its lag keeps growing.
            self.peek(0, true).await?;
            self.peek(1, true).await?;
            self.stuck_lags();
        }
        if ra.is_empty() && rb.is_empty() {
            if !self.pending.is_empty() {
                let pending: Vec<i64> = self.pending.iter().copied().collect();
                self.delete_consumed(&a, &b, pending).await?;
                self.pending.clear();
            }
            self.idle_lags(&a, &b);
            self.quarantine_lags();
            return Ok(Step::Idle);
        }
        let seqs = |r: &[Change]| r.iter().map(|c| c.seq).collect::<Vec<_>>();
        let (sa, sb) = self.both();
        let (ba, bb) = tokio::join!(
            timed(&a, "begin", sa.begin()),
            timed(&b, "begin", sb.begin())
        );
        ba.and(bb)?;
        // Broker mode: changes arrive through the stream, maybe more than once and out of
        // order. Only the lease holder gets past the fence; a change whose changelog row is
        // gone was consumed by an earlier round and is dropped.
        let mut gone: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
        if let Some((unit, token)) = self.feed.as_ref().map(|f| (f.unit.clone(), f.token)) {
            for side in [&b, &a] {
                if !timed(side, "fence", self.store(side).fence(&unit, token)).await? {
                    self.rollback(&a, &b).await?;
                    return Err(SyncError::Fenced { unit });
                }
            }
            for (si, side, r) in [(0usize, &a, &mut ra), (1, &b, &mut rb)] {
                let live = timed(side, "existing", self.store(side).existing(&seqs(r))).await?;
                gone[si] = r
                    .iter()
                    .filter(|c| !live.contains(&c.seq))
                    .map(|c| c.seq)
                    .collect();
                r.retain(|c| live.contains(&c.seq));
            }
        }
        let (src_a, src_b) = (self.source(&a), self.source(&b));
        let (qa, qb) = (seqs(&rb), seqs(&ra));
        let (sa, sb) = self.both();
        let (done_a, done_b) = tokio::join!(
            timed(&a, "applied", sa.applied(&src_b, &qa)),
            timed(&b, "applied", sb.applied(&src_a, &qb))
        );
        let (mut done_in_a, mut done_in_b) = (done_a?, done_b?);
        let anywhere = self.feed.is_some();
        let mut locked = false;
        let grouped = loop {
            let mut groups: Vec<Group> = Vec::new();
            let mut index: HashMap<(usize, String), usize> = HashMap::new();
            let mut processed: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
            let mut consumed: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
            let skew = self.settings.max_clock_skew.as_micros() as i64;
            let limit = now_us() + skew;
            for (si, changes, done) in [(0usize, &ra, &done_in_b), (1, &rb, &done_in_a)] {
                let side = &self.sides[si].name;
                for c in changes.iter() {
                    if done.contains(&c.seq) {
                        consumed[si].push(c.seq);
                        continue;
                    }
                    let Some(&ei) = tables[si].get(&c.table) else {
                        continue;
                    };
                    let Some(mapping) = self.entities[ei].mapping.as_ref() else {
                        continue;
                    };
                    let mut ts = c.ts_us;
                    if ts > limit {
                        metrics::counter!(m::SYNC_CLOCK_CLAMPED).increment(1);
                        ts = limit;
                    }
                    match pieces(mapping, side, c, ts) {
                        Ok(ps) => {
                            for (key, keyrow, p) in ps {
                                let gi = *index.entry((ei, key)).or_insert_with(|| {
                                    groups.push(Group {
                                        ent: ei,
                                        key: keyrow,
                                        a: Vec::new(),
                                        b: Vec::new(),
                                    });
                                    groups.len() - 1
                                });
                                if si == 0 {
                                    groups[gi].a.push(p)
                                } else {
                                    groups[gi].b.push(p)
                                }
                            }
                            processed[si].push(c.seq);
                        }
                        Err(msg) => {
                            let reason = format!(
                                "changelog row {} on side {side:?} (table {:?}): {msg}",
                                c.seq, c.table
                            );
                            if self.entities[ei].cfg.on_error == OnError::Pause {
                                pause(&mut self.entities[ei], &self.status, reason);
                            } else {
                                let c = c.clone();
                                self.set_aside(si, ei, &c, reason, 1);
                            }
                            self.rollback(&a, &b).await?;
                            return Ok(Step::Again);
                        }
                    }
                }
            }

            if !locked {
                // Lock every key of the round on both sides, then pick up changes to those keys
                // that committed after the read: from here on none can slip in unseen.
                locked = true;
                let mut work: [LockWork; 2] = Default::default();
                for (si, side) in [(0usize, &a), (1, &b)] {
                    let mut by_table: HashMap<String, Vec<Row>> = HashMap::new();
                    let mut pks: HashSet<(String, String)> = HashSet::new();
                    for g in &groups {
                        let Some(m) = self.entities[g.ent].mapping.as_ref() else {
                            continue;
                        };
                        let Some(t) = m.entity.table(side) else {
                            continue;
                        };
                        if let Ok(k) = m.side_key(side, &g.key) {
                            pks.insert((t.table.clone(), key_text(t.key.iter().map(|c| k.get(c)))));
                            by_table.entry(t.table.clone()).or_default().push(k);
                        }
                    }
                    let mut seen: HashSet<i64> = [&ra, &rb][si].iter().map(|c| c.seq).collect();
                    if si == 0 {
                        seen.extend(&self.pending);
                    }
                    work[si] = LockWork {
                        by_table,
                        pks,
                        seen,
                    };
                }
                let [wa, wb] = work;
                let (sa, sb) = self.both();
                let (fa, fb) = tokio::join!(
                    lock_and_fetch(&a, sa, wa, anywhere),
                    lock_and_fetch(&b, sb, wb, anywhere)
                );
                let (mut fa, mut fb) = (fa?, fb?);
                // A held key's later changes stay held, however they were found.
                self.screen(0, &mut fa);
                self.screen(1, &mut fb);
                if !(fa.is_empty() && fb.is_empty()) {
                    // Out-of-order delivery (broker mode) can find old changes here that an
                    // interrupted round applied but did not get to delete.
                    let (qa, qb) = (seqs(&fb), seqs(&fa));
                    let (sa, sb) = self.both();
                    let (more_a, more_b) = tokio::join!(
                        timed(&a, "applied", sa.applied(&src_b, &qa)),
                        timed(&b, "applied", sb.applied(&src_a, &qb))
                    );
                    done_in_a.extend(more_a?);
                    done_in_b.extend(more_b?);
                    // Pieces of a key must stay in changelog order: the first one's old image is
                    // the base a counter's deltas are added to.
                    ra.extend(fa);
                    rb.extend(fb);
                    ra.sort_by_key(|c| c.seq);
                    rb.sort_by_key(|c| c.seq);
                    continue;
                }
            }
            break (groups, processed, consumed);
        };
        let (groups, processed, consumed) = grouped;

        let mut to_a: Vec<(i64, Write)> = Vec::new();
        let mut to_b: Vec<(i64, Write)> = Vec::new();
        let mut conflicted_b: HashSet<i64> = HashSet::new();
        let mut conflicts = Vec::new();
        let mut per_dir: HashMap<(usize, usize), (u64, i64, i64)> = HashMap::new();
        let now = now_us();
        let mut trail: Vec<String> = Vec::new();
        let built = (|| -> Result<(), (usize, String)> {
            for (gi, g) in groups.iter().enumerate() {
                let ent = &self.entities[g.ent];
                let mapping = ent.mapping.as_ref().expect("active entity");
                let (na, nb) = (net(&a, &g.a), net(&b, &g.b));
                if tracing::enabled!(tracing::Level::TRACE) {
                    trail.push(format!(
                        "{} {} a={:?} b={:?}",
                        ent.cfg.name,
                        Value::Object(g.key.clone()),
                        g.a.iter().map(|p| p.seq).collect::<Vec<_>>(),
                        g.b.iter().map(|p| p.seq).collect::<Vec<_>>()
                    ));
                }
                for (si, ps) in [(0usize, &g.a), (1, &g.b)] {
                    for p in ps {
                        let e = per_dir.entry((g.ent, si)).or_insert((0, i64::MAX, 0));
                        e.0 += 1;
                        e.1 = e.1.min(p.ts);
                        e.2 = e.2.max(p.seq);
                    }
                }
                let w = |side: &str, row: &Option<Row>| write(mapping, side, row, &g.key);
                match (&na, &nb) {
                    (Some(x), None) => to_b.push((g.a[0].seq, w(&b, &x.row).map_err(|m| (gi, m))?)),
                    (None, Some(y)) => to_a.push((g.b[0].seq, w(&a, &y.row).map_err(|m| (gi, m))?)),
                    (Some(x), Some(y)) => {
                        let (left, right) = if mapping.is_left(&a) { (x, y) } else { (y, x) };
                        let res = conflict::resolve(&ent.cfg, &self.rules, left, right);
                        to_a.push((g.b[0].seq, w(&a, &res.row).map_err(|m| (gi, m))?));
                        to_b.push((g.a[0].seq, w(&b, &res.row).map_err(|m| (gi, m))?));
                        conflicted_b.extend(g.b.iter().map(|p| p.seq));
                        let policy = ent.cfg.conflict.name();
                        metrics::counter!(m::SYNC_CONFLICTS, "entity" => ent.cfg.name.clone(), "policy" => policy.clone()).increment(1);
                        let img = |c: &SideChange| json!({"side": c.side, "base": c.base, "row": c.row, "stamp_us": c.stamp.0, "seq": c.stamp.1});
                        conflicts.push(json!({
                        "at_ms": now / 1000,
                        "entity": ent.cfg.name,
                        "key": g.key,
                        "policy": policy,
                        "column_policies": ent.cfg.column_conflict.iter().map(|(c, p)| (c.clone(), Value::from(p.name()))).collect::<serde_json::Map<_, _>>(),
                        "left": img(left),
                        "right": img(right),
                        "outcome": res.outcome,
                        "result": res.row,
                    }));
                    }
                    (None, None) => {}
                }
            }
            Ok(())
        })();
        if let Err((gi, msg)) = built {
            self.rollback(&a, &b).await?;
            let g = &groups[gi];
            if self.entities[g.ent].cfg.on_error == OnError::Pause {
                return Err(self.bad(g.ent, msg));
            }
            // The key's changes on both sides wait together; the first is the one listed.
            let find = |r: &[Change], seq: i64| r.iter().find(|c| c.seq == seq).cloned();
            let members: Vec<(usize, Change)> =
                g.a.iter()
                    .filter_map(|p| find(&ra, p.seq).map(|c| (0, c)))
                    .chain(g.b.iter().filter_map(|p| find(&rb, p.seq).map(|c| (1, c))))
                    .collect();
            if let Some((si, head)) = members.first() {
                let id =
                    self.set_aside(*si, g.ent, head, format!("cannot map the change: {msg}"), 1);
                for (sj, c) in &members[1..] {
                    self.hold_with(id, *sj, c);
                }
            }
            return Ok(Step::Again);
        }
        to_a.sort_by_key(|(s, _)| *s);
        to_b.sort_by_key(|(s, _)| *s);

        let seen = |r: &[Change]| r.iter().map(|c| c.seq).collect::<HashSet<_>>();
        let broker = self.feed.is_some();
        let first = |r: &[Change]| {
            if any_paused || broker || !self.held.is_empty() {
                None
            } else {
                r.first().map(|c| c.seq)
            }
        };
        let [unapply_a, unapply_b] = self
            .feed
            .as_mut()
            .map(|f| std::mem::take(&mut f.prune))
            .unwrap_or_default();
        let batch_a = ApplyBatch {
            writes: to_a.into_iter().map(|(_, w)| w).collect(),
            source: src_b.clone(),
            applied: processed[1]
                .iter()
                .copied()
                .filter(|s| !conflicted_b.contains(s))
                .collect(),
            prune_below: first(&rb),
            consumed: self.pending.iter().copied().collect(),
            seen: seen(&ra).union(&self.pending).copied().collect(),
            unapply: unapply_b,
        };
        let mut consumed_b = processed[1].clone();
        consumed_b.extend(&consumed[1]);
        let batch_b = ApplyBatch {
            writes: to_b.into_iter().map(|(_, w)| w).collect(),
            source: src_a.clone(),
            applied: processed[0].clone(),
            prune_below: first(&ra),
            consumed: consumed_b.clone(),
            seen: seen(&rb),
            unapply: unapply_a,
        };
        // Both transactions are open and hold their locks; a race that still got through
        // (a brand-new key inserted on both sides at once) rolls both back.
        self.writing = true;
        self.round_len = [ra.len(), rb.len()];
        if self.isolate.is_some() {
            self.round_changes = ra
                .iter()
                .map(|c| (0, c.clone()))
                .chain(rb.iter().map(|c| (1, c.clone())))
                .collect();
            // The isolated side's change first: it is the one read, the rest joined its key.
            if let Some((1, _)) = self.isolate {
                self.round_changes
                    .sort_by_key(|(si, _)| usize::from(*si == 0));
            }
        }
        let (sa, sb) = self.both();
        let (wa, wb) = tokio::join!(
            timed(&a, "apply", sa.write_batch(&batch_a)),
            timed(&b, "apply", sb.write_batch(&batch_b))
        );
        if !(wa? & wb?) {
            self.rollback(&a, &b).await?;
            return Ok(Step::Again);
        }
        timed(&a, "commit", self.store(&a).finish(true)).await?;
        timed(&b, "commit", self.store(&b).finish(true)).await?;
        self.writing = false;
        let mut consumed_a = processed[0].clone();
        consumed_a.extend(&consumed[0]);
        // The first side's consumed rows can go only now that the second side has committed.
        // Direct mode defers that to the next round's transaction (a crash in between leaves
        // them to be recognised by the second side's checkpoint); broker mode acknowledges
        // messages only once their rows are gone, so it deletes them at once.
        self.pending = if self.feed.is_none() {
            consumed_a.iter().copied().collect()
        } else {
            self.delete_consumed(&a, &b, consumed_a.clone()).await?;
            HashSet::new()
        };
        if let Some(feed) = self.feed.as_mut() {
            // Both sides' consumed rows are gone now: acknowledge their messages, and let the
            // next round drop the checkpoint entries that guarded them.
            let mut done_a: HashSet<i64> = consumed_a.iter().copied().collect();
            done_a.extend(&gone[0]);
            let mut done_b: HashSet<i64> = consumed_b.iter().copied().collect();
            done_b.extend(&gone[1]);
            feed.settle(&a, &done_a, &b, &done_b).await;
            feed.prune = [consumed_a, consumed_b];
        }

        if !trail.is_empty() {
            tracing::trace!(link = %self.name, keys = %trail.join("; "), "round committed");
        }
        let done = now_us();
        for (ei, ent) in self.entities.iter().enumerate() {
            for (si, from, to) in [(0usize, &a, &b), (1, &b, &a)] {
                let (n, oldest, pos) = per_dir.get(&(ei, si)).copied().unwrap_or((0, done, 0));
                let lag = ((done - oldest).max(0) as f64) / 1e6;
                self.record_dir(ent, from, to, lag, (n > 0).then_some(pos), n);
            }
        }
        self.quarantine_lags();
        for c in &conflicts {
            self.status.conflict(c.clone());
        }
        if let (Some(control), false) = (&self.control, conflicts.is_empty()) {
            let records = conflicts.iter().map(Value::to_string).collect();
            if let Err(e) = control.record_conflicts(records).await {
                metrics::counter!(m::CONTROL_ERRORS).increment(1);
                tracing::warn!(error = %e, "could not store conflict records in the control database");
            }
        }
        Ok(Step::Busy)
    }

    /// Deletes the first side's changelog rows `seqs` (applied to the second side) in a
    /// transaction of their own.
    async fn delete_consumed(&mut self, a: &str, b: &str, seqs: Vec<i64>) -> Result<(), SyncError> {
        let cleanup = ApplyBatch {
            source: self.source(b),
            consumed: seqs,
            ..ApplyBatch::default()
        };
        timed(a, "cleanup", self.store(a).apply(&cleanup)).await?;
        Ok(())
    }

    async fn rollback(&mut self, a: &str, b: &str) -> Result<(), SyncError> {
        timed(b, "rollback", self.store(b).finish(false)).await?;
        timed(a, "rollback", self.store(a).finish(false)).await
    }

    fn bad(&mut self, ent: usize, msg: String) -> SyncError {
        let e = &mut self.entities[ent];
        pause(e, &self.status, format!("cannot map a row: {msg}"));
        SyncError::Store {
            side: e.cfg.left.side.clone(),
            source: StoreError::Value(msg),
        }
    }

    fn record_dir(&self, ent: &Ent, from: &str, to: &str, lag: f64, pos: Option<i64>, n: u64) {
        let e = &ent.cfg;
        let dir = format!("{from}_to_{to}");
        metrics::gauge!(m::SYNC_LAG, "entity" => e.name.clone(), "direction" => dir.clone())
            .set(lag);
        metrics::gauge!(m::SYNC_LAG_EXCEEDED, "entity" => e.name.clone(), "direction" => dir.clone())
            .set(if lag > e.lag_tolerance.as_secs_f64() { 1.0 } else { 0.0 });
        if n > 0 {
            metrics::counter!(m::SYNC_APPLIED, "entity" => e.name.clone(), "direction" => dir)
                .increment(n);
        }
        self.status.applied(&e.name, from, to, lag, pos, n);
    }

    fn idle_lags(&self, a: &str, b: &str) {
        for ent in &self.entities {
            if ent.paused.is_none() {
                self.record_dir(ent, a, b, 0.0, None, 0);
                self.record_dir(ent, b, a, 0.0, None, 0);
            }
        }
    }
}

/// Inside the open transaction on one side: locks the round's keys, then reads the changes to
/// them that were not seen this round.
async fn lock_and_fetch(
    side: &str,
    store: &mut Store,
    work: LockWork,
    anywhere: bool,
) -> Result<Vec<Change>, SyncError> {
    for (table, keys) in work.by_table {
        timed(side, "lock", store.lock_keys(&table, &keys)).await?;
    }
    timed(
        side,
        "fetch",
        store.fetch_unseen(&work.pks, &work.seen, anywhere),
    )
    .await
}

/// One side's part of locking a round's keys.
#[derive(Default)]
struct LockWork {
    /// Keys to lock, by table.
    by_table: HashMap<String, Vec<Row>>,
    /// The same keys as (table, key text).
    pks: HashSet<(String, String)>,
    /// Changelog rows of this side already read this round.
    seen: HashSet<i64>,
}

fn empty() -> TableInfo {
    TableInfo {
        columns: Vec::new(),
        unique_keys: Vec::new(),
    }
}

fn pause(ent: &mut Ent, status: &SyncStatus, reason: String) {
    if ent.paused.as_deref() == Some(reason.as_str()) {
        return;
    }
    tracing::error!(entity = %ent.cfg.name, reason = %reason, "entity paused; fix the schema or the config and reload");
    metrics::gauge!(m::SYNC_PAUSED, "entity" => ent.cfg.name.clone()).set(1.0);
    metrics::counter!(m::SYNC_DRIFT, "entity" => ent.cfg.name.clone()).increment(1);
    status.set_paused(&ent.cfg.name, Some(reason.clone()));
    ent.paused = Some(reason);
}

/// A mapped column whose declared type changed since the link started.
fn retyped(
    e: &EntityConfig,
    snap: &(TableInfo, TableInfo),
    l: &TableInfo,
    r: &TableInfo,
) -> Option<String> {
    for (t, old, now, left) in [(&e.left, &snap.0, l, true), (&e.right, &snap.1, r, false)] {
        for c in used_columns(e, left) {
            if let (Some(o), Some(n)) = (old.column(&c), now.column(&c))
                && o.declared != n.declared
            {
                return Some(format!(
                    "side {:?}: table {:?}: column {c:?} changed type from {} to {}; fix the mapping and reload",
                    t.side, t.table, o.declared, n.declared
                ));
            }
        }
    }
    None
}

/// Splits a captured change into per-key pieces in left form (a key change is a delete
/// of the old key and an insert of the new one).
fn pieces(
    m: &Mapping,
    side: &str,
    c: &Change,
    ts: i64,
) -> Result<Vec<(String, Row, Piece)>, String> {
    let old = c
        .old
        .as_ref()
        .map(|r| m.to_left_form(side, r))
        .transpose()?;
    let new = c
        .new
        .as_ref()
        .map(|r| m.to_left_form(side, r))
        .transpose()?;
    let keyrow = |r: &Row| -> Row {
        m.entity
            .left
            .key
            .iter()
            .map(|k| (k.clone(), r.get(k).cloned().unwrap_or(Value::Null)))
            .collect()
    };
    let piece = |base: Option<Row>, row: Option<Row>| Piece {
        seq: c.seq,
        ts,
        base,
        row,
    };
    Ok(match (c.op, old, new) {
        (Op::Insert, _, Some(n)) => vec![(m.key(&n), keyrow(&n), piece(None, Some(n)))],
        (Op::Delete, Some(o), _) => vec![(m.key(&o), keyrow(&o), piece(Some(o), None))],
        (Op::Update, Some(o), Some(n)) => {
            let (ko, kn) = (m.key(&o), m.key(&n));
            if ko == kn {
                vec![(kn, keyrow(&n), piece(Some(o), Some(n)))]
            } else {
                vec![
                    (ko, keyrow(&o), piece(Some(o), None)),
                    (kn, keyrow(&n), piece(None, Some(n))),
                ]
            }
        }
        _ => return Err("image missing for its operation".into()),
    })
}

/// The write that makes `side` hold `row` (or not hold the key when `None`).
fn write(m: &Mapping, side: &str, row: &Option<Row>, key: &Row) -> Result<Write, String> {
    let t = m.entity.table(side).ok_or("unknown side")?;
    match row {
        Some(r) => {
            let (row, insert_only) = m.to_side(side, r)?;
            let bytes = m
                .binary_columns(side)
                .iter()
                .filter(|c| row.contains_key(*c) || insert_only.contains_key(*c))
                .cloned()
                .collect();
            Ok(Write::Upsert {
                table: t.table.clone(),
                key: t.key.clone(),
                row,
                insert_only,
                bytes,
            })
        }
        None => Ok(Write::Delete {
            table: t.table.clone(),
            key: m.side_key(side, key)?,
        }),
    }
}
