//! A validation run over the config's entities: one key-ordered pass per entity, a second
//! look at differing keys under the eventual level, an optional repair and re-check, the
//! report, the metrics and the audit records.

use std::sync::Arc;
use std::time::Instant;

use crate::config::sync::{EntityConfig, Level, SyncConfig};
use crate::control::{AuditEntry, ControlStore};
use crate::store::Store;

use super::ValidateError;
use super::checksum::{Fallback, narrow};
use super::compare::{Kind, Tally, merge};
use super::plan::{KeyPart, Plan};
use super::repair::{key_row, repair};
use super::report::{EntityReport, Method, Report, SampleBound, examples, wilson_upper};
use super::scan::{Cursor, Sample, Source};

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only this entity (default: every one).
    pub entity: Option<String>,
    /// Make the non-authority side match the authority.
    pub repair: bool,
    /// With `repair`: only print the plan.
    pub dry_run: bool,
    /// Examples kept per kind.
    pub examples: usize,
    /// Rows per key-ordered page.
    pub page: usize,
    /// Seed of a sampled run (default: random).
    pub seed: Option<u64>,
    /// Where a run reports how far it is, for a progress bar.
    pub progress: Option<Arc<RunProgress>>,
}

/// How far a run is: the entity being compared, its left rows read and their count.
#[derive(Debug, Default)]
pub struct RunProgress {
    /// The entity being compared.
    pub entity: std::sync::Mutex<String>,
    /// Left rows read so far in its pass.
    pub rows: std::sync::atomic::AtomicU64,
    /// Left rows at the start of its pass.
    pub total: std::sync::atomic::AtomicU64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            entity: None,
            repair: false,
            dry_run: false,
            examples: 10,
            page: 10_000,
            seed: None,
            progress: None,
        }
    }
}

/// The entities a run covers; an unknown name is an error naming the known ones.
pub fn entities<'a>(
    sync: &'a SyncConfig,
    only: Option<&str>,
) -> Result<Vec<&'a EntityConfig>, ValidateError> {
    match only {
        None if sync.entities.is_empty() => Err(ValidateError::Usage(
            "the config has no [[entities]]".into(),
        )),
        None => Ok(sync.entities.iter().collect()),
        Some(name) => sync
            .entities
            .iter()
            .find(|e| e.name == name)
            .map(|e| vec![e])
            .ok_or_else(|| {
                ValidateError::Usage(format!(
                    "entity {name:?} is not in the config (entities: {})",
                    sync.entities
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }),
    }
}

async fn connect(sync: &SyncConfig, entity: &str, side: &str) -> Result<Store, ValidateError> {
    let url = sync
        .sides
        .get(side)
        .map(|s| s.database.clone())
        .ok_or_else(|| ValidateError::Schema {
            entity: entity.into(),
            side: side.into(),
            message: "no such side in [sides]".into(),
        })?;
    Store::connect(&url)
        .await
        .map_err(|source| ValidateError::Database {
            entity: entity.into(),
            side: side.into(),
            source,
        })
}

/// Connects to both sides of an entity and plans its comparison against the live schemas.
pub async fn plan(
    sync: &SyncConfig,
    e: &EntityConfig,
) -> Result<(Plan, [Store; 2]), ValidateError> {
    let mut l = connect(sync, &e.name, &e.left.side).await?;
    let mut r = connect(sync, &e.name, &e.right.side).await?;
    let db = |side: &str| {
        let (entity, side) = (e.name.clone(), side.to_string());
        move |source| ValidateError::Database {
            entity,
            side,
            source,
        }
    };
    let li = l
        .table_info(&e.left.table)
        .await
        .map_err(db(&e.left.side))?;
    let ri = r
        .table_info(&e.right.table)
        .await
        .map_err(db(&e.right.side))?;
    let plan = Plan::new(e, [l.kind(), r.kind()], li.as_ref(), ri.as_ref())?;
    Ok((plan, [l, r]))
}

/// One comparison pass of `source` with fresh connections.
pub async fn pass(
    sync: &SyncConfig,
    plan: &Arc<Plan>,
    source: Source,
    sample: Option<Sample>,
    opts: &Options,
) -> Result<Tally, ValidateError> {
    let e = &plan.entity;
    let l = connect(sync, &e.name, &e.left.side).await?;
    let r = connect(sync, &e.name, &e.right.side).await?;
    let mut lc = Cursor::open(plan.clone(), 0, l, source.clone(), sample, opts.page);
    let mut rc = Cursor::open(plan.clone(), 1, r, source, sample, opts.page);
    merge(
        plan,
        &mut lc,
        &mut rc,
        opts.examples,
        opts.progress.as_deref().map(|p| &p.rows),
    )
    .await
}

fn merged(fallback: Option<&str>, rows: u64) -> Method {
    Method {
        by: "merge".into(),
        fallback: fallback.map(str::to_string),
        hashes_compared: 0,
        rows_compared: rows,
    }
}

/// Connection pairs a checksum pass splits the key range among (each database then works
/// on two ranges at once).
const LANES: usize = 2;

/// The first pass by segment checksums: only the keys they cannot settle are read in full.
async fn checked(
    sync: &SyncConfig,
    plan: &Arc<Plan>,
    opts: &Options,
) -> Result<(Tally, Method), ValidateError> {
    let e = &plan.entity;
    let mut lanes = Vec::with_capacity(LANES);
    for _ in 0..LANES {
        lanes.push([
            connect(sync, &e.name, &e.left.side).await?,
            connect(sync, &e.name, &e.right.side).await?,
        ]);
    }
    let progress = opts.progress.as_deref().map(|p| &p.rows);
    let why = match narrow(plan, lanes, progress).await? {
        Ok(n) => {
            let read = n.keys.len() as u64;
            let mut tally = if n.keys.is_empty() {
                Tally::default()
            } else {
                let quiet = Options {
                    progress: None,
                    ..opts.clone()
                };
                pass(sync, plan, Source::Keys(n.keys), None, &quiet).await?
            };
            tally.rows = n.rows;
            let method = Method {
                by: "checksum".into(),
                fallback: None,
                hashes_compared: n.streamed,
                rows_compared: read,
            };
            return Ok((tally, method));
        }
        Err(Fallback::Keys) => {
            "keys that are not 64-bit integers, or too far apart for 64-bit arithmetic"
        }
        Err(Fallback::Dense) => "more than a quarter of the streamed rows differ",
    };
    if let Some(p) = progress {
        p.store(0, std::sync::atomic::Ordering::Relaxed);
    }
    let t = pass(sync, plan, Source::All, None, opts).await?;
    let n = t.rows[0].max(t.rows[1]);
    Ok((t, merged(Some(why), n)))
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Strict => "strict",
        Level::Eventual => "eventual",
        Level::Sampled(_) => "sampled",
    }
}

/// Runs the validation; the report says what differs. Audit records go to `control`.
pub async fn run(
    sync: &SyncConfig,
    control: Option<&ControlStore>,
    opts: &Options,
) -> Result<Report, ValidateError> {
    let list = entities(sync, opts.entity.as_deref())?;
    let mut reports = Vec::with_capacity(list.len());
    for e in list {
        let r = entity(sync, control, e, opts, None).await;
        let result = match &r {
            Ok(rep) if rep.consistent => "consistent",
            Ok(_) => "different",
            Err(_) => "error",
        };
        metrics::counter!(crate::metrics::VALIDATE_RUNS, "entity" => e.name.clone(), "result" => result).increment(1);
        reports.push(r?);
    }
    Ok(Report {
        consistent: reports.iter().all(|r| r.consistent),
        entities: reports,
    })
}

/// Compares only these keys (left-side column names) of one entity: the validator's targeted
/// re-check of keys written lately. Sets no gauge (a full pass does); audits what it finds.
pub async fn recheck(
    sync: &SyncConfig,
    control: Option<&ControlStore>,
    name: &str,
    keys: &[crate::store::Row],
    opts: &Options,
) -> Result<EntityReport, ValidateError> {
    let e = entities(sync, Some(name))?[0];
    entity(sync, control, e, opts, Some(keys)).await
}

async fn entity(
    sync: &SyncConfig,
    control: Option<&ControlStore>,
    e: &EntityConfig,
    opts: &Options,
    only: Option<&[crate::store::Row]>,
) -> Result<EntityReport, ValidateError> {
    let started = Instant::now();
    let (plan, mut stores) = plan(sync, e).await?;
    let plan = Arc::new(plan);
    let only: Option<Vec<Vec<KeyPart>>> = only.map(|rows| {
        let mut keys: Vec<Vec<KeyPart>> = rows
            .iter()
            .map(|r| {
                e.left
                    .key
                    .iter()
                    .zip(&plan.key_kinds)
                    .map(|(c, k)| {
                        super::plan::key_part(r.get(c).unwrap_or(&serde_json::Value::Null), *k)
                    })
                    .collect()
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    });
    let sample = match e.validation.level {
        Level::Sampled(share) => Some(Sample::new(
            share,
            opts.seed.unwrap_or_else(|| fastrand::u64(..)),
        )),
        _ => None,
    };
    if let Some(p) = &opts.progress {
        let count = format!(
            "SELECT count(*) FROM {}",
            crate::store::quote_table(plan.sides[0].kind, &plan.sides[0].table)
        );
        let total = stores[0]
            .statements()
            .rows(&count, &[])
            .await
            .ok()
            .and_then(|r| r.first().and_then(|r| r.first()).cloned())
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(0);
        if let Ok(mut name) = p.entity.lock() {
            *name = e.name.clone();
        }
        p.total.store(total, std::sync::atomic::Ordering::Relaxed);
        p.rows.store(0, std::sync::atomic::Ordering::Relaxed);
    }
    let (mut tally, method) = match (only, sample) {
        (Some(keys), _) => {
            let n = keys.len() as u64;
            let t = pass(sync, &plan, Source::Keys(keys), None, opts).await?;
            let mut m = merged(None, n);
            m.by = "keys".into();
            (t, m)
        }
        (None, None) if plan.checksummable() => checked(sync, &plan, opts).await?,
        _ => {
            let t = pass(sync, &plan, Source::All, sample, opts).await?;
            let n = t.rows[0].max(t.rows[1]);
            (t, merged(None, n))
        }
    };
    let mut rechecked = None;
    if e.validation.level == Level::Eventual && !tally.keys.is_empty() {
        // Differences younger than the lag tolerance may be changes still in flight.
        tokio::time::sleep(e.lag_tolerance).await;
        let keys = tally.keys.iter().map(|(k, _)| k.clone()).collect();
        rechecked = Some(tally.keys.len() as u64);
        let again = pass(sync, &plan, Source::Keys(keys), None, opts).await?;
        tally = Tally {
            rows: tally.rows,
            duplicates: tally.duplicates,
            invalid: tally.invalid,
            examples: {
                let mut ex = again.examples.clone();
                for k in [Kind::DuplicateKey, Kind::Invalid] {
                    if let Some(v) = tally.examples.remove(&k) {
                        ex.insert(k, v);
                    }
                }
                ex
            },
            ..again
        };
    }
    let mut repaired = None;
    if opts.repair && !tally.keys.is_empty() {
        let mut rep = repair(&plan, &mut stores, &tally.keys, opts.dry_run).await?;
        if !opts.dry_run {
            let keys: Vec<Vec<KeyPart>> = tally.keys.iter().map(|(k, _)| k.clone()).collect();
            let after = pass(sync, &plan, Source::Keys(keys), None, opts).await?;
            rep.still_different = after.keys.len() as u64;
        }
        repaired = Some(rep);
    }
    let sides = [plan.sides[0].side.clone(), plan.sides[1].side.clone()];
    let by_side = |v: [u64; 2]| sides.iter().cloned().zip(v).collect();
    let differing = tally.keys.len() as u64
        + tally.duplicates.iter().sum::<u64>()
        + tally.invalid.iter().sum::<u64>();
    let rows_differ = match &repaired {
        Some(r) if !r.dry_run => {
            r.still_different > 0
                || tally.duplicates.iter().any(|n| *n > 0)
                || tally.invalid.iter().any(|n| *n > 0)
        }
        _ => tally.differs(),
    };
    let report = EntityReport {
        entity: e.name.clone(),
        consistent: !rows_differ && plan.drift.is_empty(),
        level: level_name(e.validation.level).into(),
        rows: by_side(tally.rows),
        only_in: by_side(tally.only_in),
        changed: tally.changed,
        changed_columns: tally.changed_columns.clone(),
        duplicate_keys: by_side(tally.duplicates),
        invalid: by_side(tally.invalid),
        drift: plan.drift.clone(),
        examples: examples(&tally.examples),
        rechecked,
        sample: sample.map(|_| {
            let compared = tally.rows[0].max(tally.rows[1]);
            SampleBound {
                share: match e.validation.level {
                    Level::Sampled(s) => s,
                    _ => 1.0,
                },
                compared,
                differing,
                upper_bound_95: wilson_upper(differing, compared),
            }
        }),
        repair: repaired,
        method,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    record(&plan, &report, &tally, control).await?;
    Ok(report)
}

/// Metrics and audit records of one entity's run.
async fn record(
    plan: &Plan,
    report: &EntityReport,
    tally: &Tally,
    control: Option<&ControlStore>,
) -> Result<(), ValidateError> {
    let name = &report.entity;
    if report.method.by == "keys" {
        return audit(plan, report, tally, control).await;
    }
    for (i, side) in plan.sides.iter().enumerate() {
        metrics::counter!(crate::metrics::VALIDATE_ROWS, "entity" => name.clone(), "side" => side.side.clone()).increment(tally.rows[i]);
    }
    for kind in [
        Kind::Missing,
        Kind::Extra,
        Kind::Changed,
        Kind::DuplicateKey,
        Kind::Invalid,
    ] {
        let n = match kind {
            Kind::Missing | Kind::Extra => {
                tally.keys.iter().filter(|(_, k)| *k == kind).count() as u64
            }
            Kind::Changed => tally.changed,
            Kind::DuplicateKey => tally.duplicates.iter().sum(),
            Kind::Invalid => tally.invalid.iter().sum(),
        };
        metrics::gauge!(crate::metrics::VALIDATE_DISCREPANCIES, "entity" => name.clone(), "kind" => kind.name()).set(n as f64);
    }
    metrics::gauge!(crate::metrics::VALIDATE_DISCREPANCIES, "entity" => name.clone(), "kind" => "drift").set(plan.drift.len() as f64);
    audit(plan, report, tally, control).await
}

/// The audit records of one entity's run.
async fn audit(
    plan: &Plan,
    report: &EntityReport,
    tally: &Tally,
    control: Option<&ControlStore>,
) -> Result<(), ValidateError> {
    let name = &report.entity;
    let Some(control) = control else {
        return Ok(());
    };
    let mut summary = serde_json::to_value(report).unwrap_or_default();
    if let Some(o) = summary.as_object_mut() {
        o.remove("examples");
        if let Some(r) = o.get_mut("repair").and_then(|r| r.as_object_mut()) {
            r.remove("actions");
        }
    }
    let mut entries = vec![AuditEntry {
        kind: "validation".into(),
        entity: name.clone(),
        body: summary.to_string(),
    }];
    // Every differing key, a thousand to a record.
    for chunk in tally.keys.chunks(1000) {
        let keys: Vec<serde_json::Value> = chunk
            .iter()
            .map(|(k, kind)| serde_json::json!({"key": key_row(plan, k), "kind": kind.name()}))
            .collect();
        entries.push(AuditEntry {
            kind: "discrepancy".into(),
            entity: name.clone(),
            body: serde_json::json!({ "keys": keys }).to_string(),
        });
    }
    if let Some(r) = report.repair.as_ref().filter(|r| !r.dry_run) {
        for chunk in tally.keys.chunks(1000) {
            let keys: Vec<serde_json::Value> = chunk
                .iter()
                .filter(|(_, k)| matches!(k, Kind::Missing | Kind::Extra | Kind::Changed))
                .map(|(k, kind)| {
                    let action = if *kind == Kind::Extra { "delete" } else { "upsert" };
                    serde_json::json!({"key": key_row(plan, k), "action": action, "to": r.target, "why": kind.name()})
                })
                .collect();
            entries.push(AuditEntry {
                kind: "repair".into(),
                entity: name.clone(),
                body: serde_json::json!({ "writes": keys }).to_string(),
            });
        }
    }
    control.append_audit(entries).await?;
    Ok(())
}
