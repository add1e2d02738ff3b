//! Continuous validation inside `serve` and `sync run`: each entity with a `validate.interval`
//! gets a full pass on that interval, and the keys the sync engine applied and the gateway's
//! write tap saw written are compared again once the entity's lag tolerance has passed. A
//! re-check that finds a difference starts a full pass, which sets the discrepancy gauges.
//! `POST /admin/validation/{entity}` asks for a pass now; `GET /admin/validation` shows the
//! latest outcome of each entity.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::sync::SyncConfig;
use crate::control::ControlStore;
use crate::engine::{Engine, EngineError, TapListener};
use crate::store::Row;
use crate::sync::status::SyncStatus;

use super::command::{Options, recheck, run};

/// How often keys due for a re-check are looked for.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// The latest outcome of one entity's validation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latest {
    /// A pass is running.
    pub running: bool,
    /// A pass was asked for and has not started.
    pub queued: bool,
    /// Why the last pass ran: `interval`, `request` or `recheck`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// When the last pass started and finished, Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// When the last pass finished, Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// The last full pass's report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Value>,
    /// Why the last pass failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last targeted re-check: keys compared, keys still different, when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recheck: Option<Value>,
    /// When the next interval pass is due, Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_at_ms: Option<u64>,
}

/// Validation state shared by the engine and the admin API.
#[derive(Debug, Default)]
pub struct Validations {
    latest: Mutex<BTreeMap<String, Latest>>,
    pending: Mutex<BTreeSet<String>>,
    wake: Notify,
}

/// Why a run cannot be asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownEntity(pub Vec<String>);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Validations {
    /// State for the entities of `sync`, none run yet.
    pub fn new(sync: &SyncConfig) -> Arc<Validations> {
        let v = Arc::new(Validations::default());
        v.set_entities(sync);
        v
    }

    /// Follows a reloaded config: new entities appear, removed ones go.
    pub fn set_entities(&self, sync: &SyncConfig) {
        let mut l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        l.retain(|name, _| sync.entities.iter().any(|e| e.name == *name));
        for e in &sync.entities {
            l.entry(e.name.clone()).or_default();
        }
    }

    fn update(&self, entity: &str, f: impl FnOnce(&mut Latest)) {
        let mut l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(x) = l.get_mut(entity) {
            f(x);
        }
    }

    /// Asks for a full pass of `entity` as soon as the engine is free.
    pub fn request(&self, entity: &str) -> Result<(), UnknownEntity> {
        {
            let l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
            if !l.contains_key(entity) {
                return Err(UnknownEntity(l.keys().cloned().collect()));
            }
        }
        self.update(entity, |x| x.queued = true);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entity.to_string());
        self.wake.notify_one();
        Ok(())
    }

    /// Every entity's latest outcome, for `GET /admin/validation`.
    pub fn snapshot(&self) -> Value {
        let l = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        json!({ "entities": &*l })
    }

    fn take_pending(&self) -> Vec<String> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect()
    }
}

/// The validator as an engine of `serve` or `sync run`.
pub struct ValidatorEngine {
    sync: SyncConfig,
    control: Option<Arc<ControlStore>>,
    state: Arc<Validations>,
    status: Arc<SyncStatus>,
}

impl ValidatorEngine {
    /// The engine for `sync`'s entities; `status` is the sync engine's, whose applied keys
    /// it re-checks.
    pub fn new(
        sync: &SyncConfig,
        control: Option<Arc<ControlStore>>,
        state: Arc<Validations>,
        status: Arc<SyncStatus>,
    ) -> ValidatorEngine {
        state.set_entities(sync);
        for e in sync
            .entities
            .iter()
            .filter(|e| e.validation.interval.is_some())
        {
            status.touched.watch(&e.name);
        }
        ValidatorEngine {
            sync: sync.clone(),
            control,
            state,
            status,
        }
    }

    async fn full(&self, entity: &str, trigger: &str) -> bool {
        self.state.update(entity, |x| {
            x.running = true;
            x.queued = false;
            x.trigger = Some(trigger.into());
            x.started_at_ms = Some(now_ms());
        });
        let opts = Options {
            entity: Some(entity.to_string()),
            ..Options::default()
        };
        let r = run(&self.sync, self.control.as_deref(), &opts).await;
        let consistent = matches!(&r, Ok(rep) if rep.consistent);
        self.state.update(entity, |x| {
            x.running = false;
            x.finished_at_ms = Some(now_ms());
            match r {
                Ok(rep) => {
                    x.report = rep
                        .entities
                        .first()
                        .and_then(|e| serde_json::to_value(e).ok());
                    x.error = None;
                }
                Err(e) => {
                    tracing::warn!(entity, error = %e, "validation pass failed");
                    x.error = Some(e.to_string());
                }
            }
        });
        consistent
    }

    /// Compares the keys written at least the lag tolerance ago; `true` when a full pass is
    /// needed (a key still differs, or keys were dropped).
    async fn recheck_due(&self, entity: &str, lag: Duration) -> bool {
        let due = self.status.touched.take(entity, lag);
        if due.keys.is_empty() {
            return due.overflowed;
        }
        let opts = Options {
            examples: 10,
            ..Options::default()
        };
        let r = recheck(
            &self.sync,
            self.control.as_deref(),
            entity,
            &due.keys,
            &opts,
        )
        .await;
        let mut again = due.overflowed;
        self.state.update(entity, |x| match r {
            Ok(rep) => {
                let differing = rep.only_in.values().sum::<u64>() + rep.changed;
                again |= differing > 0;
                x.recheck = Some(json!({
                    "keys": due.keys.len(),
                    "differing": differing,
                    "at_ms": now_ms(),
                }));
            }
            Err(e) => {
                tracing::warn!(entity, error = %e, "targeted re-check failed");
                x.recheck = Some(
                    json!({"keys": due.keys.len(), "error": e.to_string(), "at_ms": now_ms()}),
                );
            }
        });
        again
    }
}

/// The tap's write as a key of the entity's left side, when its key has one column.
fn tap_key(sync: &SyncConfig, entity: &str, key: &str) -> Option<Row> {
    let e = sync.entities.iter().find(|e| e.name == entity)?;
    let [col] = e.left.key.as_slice() else {
        return None;
    };
    Some(
        [(col.clone(), Value::String(key.to_string()))]
            .into_iter()
            .collect(),
    )
}

#[async_trait::async_trait]
impl Engine for ValidatorEngine {
    fn name(&self) -> &'static str {
        "validator"
    }

    fn tap(&self) -> Option<TapListener> {
        // Only continuous mode re-checks written keys: without it the tap owes us nothing.
        if self
            .sync
            .entities
            .iter()
            .all(|e| e.validation.interval.is_none())
        {
            return None;
        }
        let (sync, status) = (self.sync.clone(), self.status.clone());
        Some(Arc::new(move |w| {
            if let Some(key) = w.key.as_deref()
                && let Some(row) = tap_key(&sync, &w.entity, key)
            {
                status.touched.note(&w.entity, &row);
            }
        }))
    }

    async fn run(self: Box<Self>, shutdown: CancellationToken) -> Result<(), EngineError> {
        let start = Instant::now();
        let mut next: BTreeMap<String, Instant> = self
            .sync
            .entities
            .iter()
            .filter_map(|e| e.validation.interval.map(|i| (e.name.clone(), start + i)))
            .collect();
        loop {
            for (name, at) in &next {
                let ms = now_ms() + at.saturating_duration_since(Instant::now()).as_millis() as u64;
                self.state.update(name, |x| x.next_at_ms = Some(ms));
            }
            let soonest = next.values().min().copied();
            let wait = soonest.map_or(RECHECK_EVERY, |s| {
                s.saturating_duration_since(Instant::now())
                    .min(RECHECK_EVERY)
            });
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.state.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            let work = async {
                for name in self.state.take_pending() {
                    self.full(&name, "request").await;
                }
                for e in &self.sync.entities {
                    let Some(interval) = e.validation.interval else {
                        continue;
                    };
                    if next.get(&e.name).is_some_and(|at| *at <= Instant::now()) {
                        self.full(&e.name, "interval").await;
                        next.insert(e.name.clone(), Instant::now() + interval);
                    }
                    if self.recheck_due(&e.name, e.lag_tolerance).await {
                        self.full(&e.name, "recheck").await;
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = work => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(entities: &[&str]) -> SyncConfig {
        let mut text = String::from(
            "[gateway]\ncontrol = \"sqlite:///tmp/x.db\"\n[sides.a]\ndatabase = \"sqlite:///tmp/a.db\"\n[sides.b]\ndatabase = \"sqlite:///tmp/b.db\"\n",
        );
        for e in entities {
            text.push_str(&format!(
                "[[entities]]\nname = \"{e}\"\na = {{ table = \"{e}\", key = [\"id\"] }}\nb = {{ table = \"{e}\", key = [\"id\"] }}\ncolumns = {{ id = \"id\" }}\nauthority = \"a\"\n"
            ));
        }
        crate::config::Config::parse(std::path::Path::new("t.toml"), &text)
            .unwrap()
            .sync
    }

    #[test]
    fn runs_are_asked_for_known_entities_only() {
        let v = Validations::new(&sync(&["users", "orders"]));
        assert_eq!(
            v.request("nope"),
            Err(UnknownEntity(vec!["orders".into(), "users".into()]))
        );
        v.request("users").unwrap();
        assert_eq!(v.snapshot()["entities"]["users"]["queued"], true);
        assert_eq!(v.take_pending(), vec!["users".to_string()]);
        assert!(v.take_pending().is_empty());
        v.set_entities(&sync(&["orders"]));
        assert!(v.snapshot()["entities"].get("users").is_none());
        assert!(v.request("users").is_err());
        let cfg = sync(&["orders"]);
        assert_eq!(
            tap_key(&cfg, "orders", "42"),
            Some([("id".to_string(), json!("42"))].into_iter().collect())
        );
        assert_eq!(tap_key(&cfg, "users", "42"), None);
    }
}
