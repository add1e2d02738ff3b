//! Composition root: builds the router, gateway, admin API and background tasks, wires them,
//! and owns their shutdown.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState, ReloadRequest};
use crate::config::{Config, ConfigError};
use crate::control::{ControlError, ControlStore};
use crate::engine::{self, Engine, TapListener};
use crate::gateway::{self, Gateway, ServerSettings};
use crate::routing::rollout::Rollouts;
use crate::routing::{Router, RouterError, probe};
use crate::sync::conflict::Rules;
use crate::sync::status::SyncStatus;
use crate::sync::{SyncEngine, SyncError};
use crate::tap::{self, WriteEvent};
use crate::validate::continuous::{Validations, ValidatorEngine};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Control database unavailable.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// Route table could not be built.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// TLS files unusable.
    #[error(transparent)]
    Tls(#[from] gateway::tls::TlsError),
    /// The sync engine cannot start (side unreachable, mapping wrong, capture missing).
    #[error("sync: {0}")]
    Sync(#[from] SyncError),
    /// A generated API could not start.
    #[error("services: {0}")]
    ApiGen(#[from] crate::apigen::ApiGenError),
}

/// Recent write-tap events kept for `GET /admin/tap`.
const RECENT_WRITES: usize = 256;

/// A running gateway.
pub struct Running {
    /// Data-plane address actually bound.
    pub addr: SocketAddr,
    /// Admin address actually bound.
    pub admin_addr: SocketAddr,
    /// The router (for embedding and tests).
    pub router: Arc<Router>,
    /// Asks for a config reload.
    pub reload: mpsc::Sender<ReloadRequest>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    data_plane: tokio::task::JoinHandle<bool>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

fn spawn_probes(
    tasks: &TaskTracker,
    router: &Router,
    upstreams: Vec<Arc<crate::routing::Upstream>>,
    token: &CancellationToken,
) {
    let cfg = router.config();
    for up in upstreams {
        if let Some(h) = cfg.upstream(&up.name).and_then(|u| u.health.clone()) {
            tasks.spawn(probe::run(up, h, token.clone()));
        }
    }
}

/// Starts every part of the gateway for `config`.
pub async fn start(config: Config) -> Result<Running, AppError> {
    start_with_rules(config, Rules::new()).await
}

/// Starts every part of the gateway for `config`, the sync engine knowing the custom conflict
/// rules an embedding program registers (`custom:NAME` policies).
pub async fn start_with_rules(config: Config, rules: Rules) -> Result<Running, AppError> {
    let rules = Arc::new(rules);
    let prometheus = crate::metrics::install();
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let gw_cfg = config.gateway.clone();
    let (addr, listeners) =
        gateway::shards::bind(gw_cfg.listen, gw_cfg.threads).map_err(|source| AppError::Bind {
            addr: gw_cfg.listen,
            source,
        })?;
    let admin_listener = bind(gw_cfg.admin_listen).await?;
    let tls = match &gw_cfg.tls {
        Some(t) => Some(gateway::tls::acceptor(&t.cert, &t.key)?),
        None => None,
    };
    let control = Arc::new(ControlStore::open(&gw_cfg.control).await?);
    let router = Arc::new(Router::start(config, control.clone()).await?);

    let sync_status = Arc::new(SyncStatus::default());
    let evidence = Arc::new(crate::analyze::live::LiveEvidence::default());
    let validation = Validations::new(&router.config().sync);
    // The engines hear the write tap through listeners that a reload replaces.
    let taps: Arc<ArcSwap<Vec<TapListener>>> = Arc::new(ArcSwap::from_pointee(Vec::new()));
    let mut engine_token = shutdown.child_token();
    let first = engines(
        &router.config().sync,
        &rules,
        &control,
        &sync_status,
        &evidence,
        &validation,
    )
    .await?;
    taps.store(Arc::new(engine::start(&tasks, first, &engine_token)));

    let (tap, mut tap_rx) = tap::channel(gw_cfg.tap_capacity);
    let recent_writes: Arc<Mutex<VecDeque<WriteEvent>>> = Arc::new(Mutex::new(VecDeque::new()));
    {
        // Each write goes to every engine that listens; the newest are kept for operators.
        let recent = recent_writes.clone();
        let token = shutdown.clone();
        let taps = taps.clone();
        tasks.spawn(async move {
            loop {
                let ev =
                    tokio::select! { _ = token.cancelled() => return, ev = tap_rx.recv() => ev };
                let Some(ev) = ev else { return };
                for listen in taps.load().iter() {
                    listen(&ev);
                }
                if let Ok(mut q) = recent.lock() {
                    if q.len() == RECENT_WRITES {
                        q.pop_front();
                    }
                    q.push_back(ev);
                }
            }
        });
    }

    {
        // Generated APIs on their own listeners; their writes reach the engines like routed
        // ones, named by the entity their table belongs to.
        let cfg = router.config();
        let running = crate::apigen::command::serve_own(
            &cfg.services,
            Some(tap.clone()),
            &cfg.sync,
            &shutdown,
        )
        .await?;
        for (name, addr, task) in running {
            tracing::info!(service = %name, %addr, "generated API listening");
            tasks.spawn(async move {
                let _ = task.await;
            });
        }
    }

    let mut probe_token = shutdown.child_token();
    spawn_probes(&tasks, &router, router.upstreams().await, &probe_token);

    let rollouts = Rollouts::new(router.clone());
    tasks.spawn(rollouts.clone().run(shutdown.clone()));

    {
        let router = router.clone();
        let token = shutdown.clone();
        let period = gw_cfg.control_poll;
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! { _ = token.cancelled() => return, _ = tick.tick() => {} }
                if let Err(e) = router.sync_from_control().await {
                    metrics::counter!(crate::metrics::CONTROL_ERRORS).increment(1);
                    tracing::warn!(error = %e, "cannot read the control database");
                }
            }
        });
    }

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(8);
    {
        let (control, sync_status, taps, rules, evidence, validation) = (
            control.clone(),
            sync_status.clone(),
            taps.clone(),
            rules.clone(),
            evidence.clone(),
            validation.clone(),
        );
        let router = router.clone();
        let token = shutdown.clone();
        let tasks2 = tasks.clone();
        tasks.spawn(async move {
            loop {
                let req = tokio::select! { _ = token.cancelled() => return, r = reload_rx.recv() => r };
                let Some(reply) = req else { return };
                let path = router.config().file.clone();
                let result = match Config::load(&path) {
                    Err(e) => Err(e.to_string()),
                    Ok(cfg) => {
                        let sync = cfg.sync.clone();
                        let table = router.reload(cfg).await.map_err(|e| format!("{}: {e}", path.display()));
                        if table.is_ok() {
                            // Restart the engines on the new config: a paused entity resumes once it fits.
                            engine_token.cancel();
                            engine_token = token.child_token();
                            match engines(&sync, &rules, &control, &sync_status, &evidence, &validation).await {
                                Ok(list) => taps.store(Arc::new(engine::start(&tasks2, list, &engine_token))),
                                Err(e) => tracing::error!(error = %e, "sync engine not restarted after reload"),
                            }
                        }
                        table
                    }
                };
                match &result {
                    Ok(table) => {
                        probe_token.cancel();
                        probe_token = token.child_token();
                        spawn_probes(&tasks2, &router, router.upstreams().await, &probe_token);
                        tracing::info!(version = table.version, "config reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "config reload rejected; the running table keeps serving"),
                }
                let _ = reply.send(result.map(|t| t.version));
            }
        });
    }

    let settings = ServerSettings {
        header_read: gw_cfg.timeouts.header_read,
        max_header_bytes: gw_cfg.max_header_bytes,
        max_connections: gw_cfg.max_connections,
        tls,
        drain_grace: gw_cfg.drain_grace,
        park: gw_cfg.timeouts.park,
        http2_header_table: gw_cfg.tls.as_ref().map_or(0, |t| t.http2_header_table),
    };
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|source| AppError::Bind {
            addr: gw_cfg.admin_listen,
            source,
        })?;
    let make_gateway = {
        let (router, gw_cfg) = (router.clone(), gw_cfg.clone());
        Arc::new(move || Gateway::new(router.clone(), tap.clone(), &gw_cfg))
    };
    let data_plane = gateway::shards::spawn(listeners, make_gateway, settings, shutdown.clone())
        .map_err(|source| AppError::Bind { addr, source })?;
    let state = Arc::new(AdminState {
        router: router.clone(),
        rollouts,
        metrics: prometheus,
        token: gw_cfg.admin_token.clone(),
        reload: reload_tx.clone(),
        recent_writes,
        sync: sync_status,
        evidence,
        validation,
    });
    // The admin API outlives the data plane's drain so operators can watch it.
    let admin_token = CancellationToken::new();
    {
        let admin_token2 = admin_token.clone();
        tasks.spawn(async move { admin::serve(admin_listener, state, admin_token2).await });
        let token = shutdown.clone();
        tasks.spawn(async move {
            token.cancelled().await;
            admin_token.cancel();
        });
    }
    tracing::info!(%addr, %admin_addr, version = router.current().version, "strangler gateway listening");
    Ok(Running {
        addr,
        admin_addr,
        router,
        reload: reload_tx,
        shutdown,
        tasks,
        data_plane,
    })
}

/// A checked sync engine for `strangler sync run`, storing conflicts in the control database.
pub async fn sync_engine(config: &Config) -> Result<SyncEngine, AppError> {
    crate::metrics::install();
    let control = Arc::new(ControlStore::open(&config.gateway.control).await?);
    let engine = SyncEngine::new(config.sync.clone(), Some(control));
    for w in engine.check().await? {
        tracing::warn!("{w}");
    }
    Ok(engine)
}

/// Serves `strangler sync run`'s admin API (health, metrics, sync status, conflicts) on
/// `addr` until `shutdown`; off loopback it needs the config's `admin_token`. Returns the
/// bound address and the server's task, to be awaited after `shutdown`.
pub async fn sync_admin(
    config: &Config,
    addr: SocketAddr,
    engine: &SyncEngine,
    validation: Arc<Validations>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AppError> {
    let token = config.gateway.admin_token.clone();
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(AppError::Config(ConfigError::Invalid {
            file: config.file.display().to_string(),
            place: "gateway: ".into(),
            message: format!(
                "admin_token must be set: --admin-listen {addr} is not a loopback address"
            ),
        }));
    }
    let listener = bind(addr).await?;
    let bound = listener
        .local_addr()
        .map_err(|source| AppError::Bind { addr, source })?;
    let state = Arc::new(admin::SyncAdmin {
        metrics: crate::metrics::install(),
        token,
        sync: engine.status(),
        control: Arc::new(ControlStore::open(&config.gateway.control).await?),
        validation,
    });
    Ok((bound, tokio::spawn(admin::serve(listener, state, shutdown))))
}

/// The engines `cfg` asks for, checked: the analyzer's recorder always, the sync engine when
/// there are entities.
async fn engines(
    cfg: &crate::config::sync::SyncConfig,
    rules: &Rules,
    control: &Arc<ControlStore>,
    status: &Arc<SyncStatus>,
    evidence: &Arc<crate::analyze::live::LiveEvidence>,
    validation: &Arc<Validations>,
) -> Result<Vec<Box<dyn Engine>>, SyncError> {
    let side = crate::admin::analysis_side(cfg);
    let tables = cfg
        .entities
        .iter()
        .filter_map(|e| {
            [&e.left, &e.right]
                .into_iter()
                .find(|t| Some(&t.side) == side.as_ref())
                .map(|t| (e.name.clone(), t.table.clone()))
        })
        .collect();
    let mut out: Vec<Box<dyn Engine>> = vec![Box::new(crate::analyze::live::AnalyzerEngine::new(
        evidence.clone(),
        tables,
    ))];
    if !cfg.entities.is_empty() {
        let sync = SyncEngine::new(cfg.clone(), Some(control.clone()))
            .with_status(status.clone())
            .with_rules(rules);
        for w in sync.check().await? {
            tracing::warn!("{w}");
        }
        out.push(Box::new(sync));
    }
    out.extend(validation_engines(cfg, control, status, validation));
    Ok(out)
}

/// The initial copy (for entities that ask for one) and the continuous validator.
fn validation_engines(
    cfg: &crate::config::sync::SyncConfig,
    control: &Arc<ControlStore>,
    status: &Arc<SyncStatus>,
    validation: &Arc<Validations>,
) -> Vec<Box<dyn Engine>> {
    let mut out: Vec<Box<dyn Engine>> = Vec::new();
    if let Some(b) = crate::validate::backfill::BackfillEngine::new(cfg, Some(control.clone())) {
        out.push(Box::new(b));
    }
    if !cfg.entities.is_empty() {
        out.push(Box::new(ValidatorEngine::new(
            cfg,
            Some(control.clone()),
            validation.clone(),
            status.clone(),
        )));
    }
    out
}

/// The engines `strangler sync run` hosts beside `engine`: the initial copy for entities that
/// ask for one, and the continuous validator reporting into `validation`.
pub async fn side_engines(
    config: &Config,
    engine: &SyncEngine,
    validation: &Arc<Validations>,
) -> Result<Vec<Box<dyn Engine>>, AppError> {
    let control = Arc::new(ControlStore::open(&config.gateway.control).await?);
    Ok(validation_engines(
        &config.sync,
        &control,
        &engine.status(),
        validation,
    ))
}

impl Running {
    /// Stops accepting, drains in-flight requests for up to the grace period, stops every
    /// task. Returns whether the drain finished in time.
    pub async fn shutdown(self) -> bool {
        self.shutdown.cancel();
        let drained = self.data_plane.await.unwrap_or(false);
        self.tasks.close();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.tasks.wait()).await;
        drained
    }

    /// Asks for a reload and waits for its outcome.
    pub async fn reload(&self) -> Result<u64, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.reload
            .send(tx)
            .await
            .map_err(|_| "shutting down".to_string())?;
        rx.await.map_err(|_| "reload interrupted".to_string())?
    }
}
