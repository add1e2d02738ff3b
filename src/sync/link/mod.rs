//! A link: the loop of one pair of sides. Entities are grouped by the pair of sides they connect (a link); each
//! link runs one loop: read both changelogs, map every change to the entity's left form,
//! settle keys changed on both sides, then apply to the first side, apply to the second side
//! (deleting the second side's consumed changes in the same transaction) and finally delete
//! the first side's consumed changes. Each apply carries its checkpoint (`_strangler_applied`),
//! so a change re-read after a crash is recognised and not applied twice.

mod finish;
mod group;
mod lag;
mod origin;
mod plan;
mod quarantine;
mod read;
mod round;
mod settle;
mod write;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::sync::{EntityConfig, SyncConfig, SyncSettings};
use crate::control::ControlStore;
use crate::metrics as m;
use crate::store::{Change, Store, TableInfo};
use crate::sync::conflict::Rules;
use crate::sync::error::{SyncError, timed};
use crate::sync::mapping::{Mapping, used_columns};
use crate::sync::shared::{Shared, connect};
use crate::sync::status::{SyncStatus, link_name};
pub(in crate::sync) use origin::{Direct, Origin, Want, delete_consumed, read_both};

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
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

pub(in crate::sync) struct Link<O: Origin> {
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
    /// Where the changes come from.
    origin: O,
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

impl<O: Origin> Link<O> {
    /// Builds the loop for one pair of sides (one group's entities in broker mode).
    pub(in crate::sync) fn build(
        name: String,
        cfg: &SyncConfig,
        entities: Vec<EntityConfig>,
        shared: &Shared,
        origin: O,
    ) -> Link<O> {
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
            origin,
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

    pub(in crate::sync) async fn run(mut self, shutdown: CancellationToken) {
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
                // The origin already waited for a change.
                Ok(Step::Idle) if self.origin.waits() => backoff = Duration::from_millis(100),
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
        self.status.set_link(&self.name, self.origin.state());
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
}

/// Both sides' stores (first side, second side).
fn stores(sides: &mut [SideConn; 2]) -> [&mut Store; 2] {
    let [x, y] = sides;
    [
        x.store.as_mut().expect("connected before use"),
        y.store.as_mut().expect("connected before use"),
    ]
}

fn empty() -> TableInfo {
    TableInfo {
        columns: Vec::new(),
        unique_keys: Vec::new(),
        primary_key: Vec::new(),
        checks: Vec::new(),
        foreign_keys: Vec::new(),
        indexes: Vec::new(),
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
