//! The initial copy: the authority's rows that the other side lacks, read in key-ordered
//! chunks and written to the other side through the sync engine's apply path, each only
//! where the row is still absent (a row the other side has, however it got there, is never
//! overwritten by the copy).
//!
//! Every target transaction holds the target side's gate alone (see
//! [`crate::store::Store::begin_alone`]); the sync engine's transactions there share the gate,
//! so none commits between the copy's read of the authority and its commit. A change to a
//! copied row that the sync engine applied before that read is in the copy; any other is
//! applied after the copy, on top of it: a row changed or deleted on the authority meanwhile
//! ends as the authority has it. A key with changes on the target that the sync engine has not
//! carried yet is left to the engine (the apply path's race check finds it), so the conflict
//! policy settles it. The chunk's progress is stored in the same target transaction: after
//! `kill -9` the copy resumes after the last committed chunk and writes no row twice.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ValidateError;
use super::command::plan;
use super::copy::{Copy, Outcome};
use crate::config::sync::{EntityConfig, SyncConfig};
use crate::control::AuditEntry;

/// Where a backfill stands, as stored with each chunk.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// The last key read, in the authority's key order (`None`: not started).
    pub after: Option<Vec<Value>>,
    /// Authority rows read so far.
    pub read: u64,
    /// Rows copied (written to the other side) so far.
    pub copied: u64,
    /// Rows the other side refused or the mapping could not carry, left out of the copy.
    #[serde(default)]
    pub refused: u64,
    /// Every chunk is done.
    pub done: bool,
}

/// A row left out of the copy, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refusal {
    /// The row's key, in left-side column names.
    pub key: serde_json::Map<String, Value>,
    /// Why: the mapping's or the target database's words.
    pub reason: String,
}

/// What a backfill of one entity did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackfillReport {
    /// Entity.
    pub entity: String,
    /// The side copied from (the authority).
    pub from: String,
    /// The side copied to.
    pub to: String,
    /// Authority rows at the start (for the progress estimate).
    pub total: u64,
    /// Progress when this run ended.
    pub progress: Progress,
    /// Whether it continued an earlier, interrupted run.
    pub resumed: bool,
    /// Wall time of this run.
    pub duration_ms: u64,
    /// The first rows this run left out, and why.
    pub refusals: Vec<Refusal>,
}

/// Rows per chunk unless told otherwise.
pub const CHUNK: usize = 5_000;

/// Copies what the other side lacks of `e`, reporting progress after each target
/// transaction.
pub async fn backfill(
    sync: &SyncConfig,
    e: &EntityConfig,
    chunk: usize,
    mut on_chunk: impl FnMut(&BackfillReport),
) -> Result<BackfillReport, ValidateError> {
    let started = Instant::now();
    let (plan, mut stores) = plan(sync, e).await?;
    let a = usize::from(e.authority != plan.sides[0].side);
    let t = 1 - a;
    let map = plan
        .mapping
        .columnar(&plan.sides[a].side, &plan.sides[a].columns)
        .ok_or_else(|| {
            ValidateError::Usage(format!(
                "entity {:?}: no side {:?}",
                e.name, plan.sides[a].side
            ))
        })?;
    let mut copy = Copy {
        plan: &plan,
        map,
        a,
        t,
        chunk: chunk.max(1),
        skip: HashSet::new(),
        refusals: Vec::new(),
    };
    for side in [a, t] {
        if !stores[side].installed().await.map_err(plan.failed(side))? {
            return Err(ValidateError::Schema {
                entity: e.name.clone(),
                side: plan.sides[side].side.clone(),
                message: "capture is not installed: the copy writes through the sync engine's apply path; run `strangler sync install` first".into(),
            });
        }
    }
    let stored = stores[t]
        .capture()
        .backfill_progress(&e.name)
        .await
        .map_err(plan.failed(t))?;
    let mut progress: Progress = match stored {
        Some(text) => serde_json::from_str(&text).map_err(|err| ValidateError::Schema {
            entity: e.name.clone(),
            side: plan.sides[t].side.clone(),
            message: format!("stored backfill progress is unreadable ({err}): {text}"),
        })?,
        None => Progress::default(),
    };
    let resumed = progress.after.is_some() && !progress.done;
    let count = format!(
        "SELECT count(*) FROM {}",
        crate::store::quote_table(plan.sides[a].kind, &plan.sides[a].table)
    );
    let total = stores[a]
        .statements()
        .rows(&count, &[])
        .await
        .map_err(plan.failed(a))?
        .first()
        .and_then(|r| r.first())
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(0);
    let report = |p: &Progress, refusals: &[Refusal]| BackfillReport {
        entity: e.name.clone(),
        from: plan.sides[a].side.clone(),
        to: plan.sides[t].side.clone(),
        total,
        progress: p.clone(),
        resumed,
        duration_ms: started.elapsed().as_millis() as u64,
        refusals: refusals.to_vec(),
    };
    // After the target refused a row, chunks are halved until the row is alone (and left
    // out), then doubled back: a few bad rows cost a few transactions each.
    let mut size = copy.chunk;
    // Rows the next transaction may read (those before a refused chunk).
    let mut max_rows = u64::MAX;
    while !progress.done {
        let cap = if size < copy.chunk {
            size as u64
        } else {
            max_rows
        };
        let held = Instant::now();
        match copy.transaction(&mut stores, &progress, size, cap).await? {
            Outcome::Committed(p) => {
                if plan.sides[t].kind == "sqlite" {
                    // SQLite's writers do not queue for its lock; they retry after sleeps of
                    // up to 100 ms. Leaving the lock free as long as the copy held it lets
                    // the sync engine and the application in.
                    tokio::time::sleep(held.elapsed()).await;
                }
                size = (size * 2).min(copy.chunk);
                max_rows = u64::MAX;
                progress = p;
                on_chunk(&report(&progress, &copy.refusals));
            }
            Outcome::Raced(pks) => copy.skip.extend(pks),
            Outcome::Refused { before, .. } if before > 0 => max_rows = before,
            Outcome::Refused { .. } if size > 1 => size /= 2,
            Outcome::Refused {
                past, key, error, ..
            } => {
                copy.refuse(&key, error.to_string());
                progress = Progress {
                    refused: progress.refused + 1,
                    ..past
                };
            }
        }
    }
    Ok(report(&progress, &copy.refusals))
}

/// Waits until the authority's change capture has been drained by the sync engine (the
/// copies applied), or fails when nothing moves for `stall`.
pub async fn drained(
    sync: &SyncConfig,
    e: &EntityConfig,
    stall: Duration,
) -> Result<(), ValidateError> {
    let (plan, mut stores) = plan(sync, e).await?;
    let a = usize::from(e.authority != plan.sides[0].side);
    let side = plan.sides[a].side.clone();
    let mut last = i64::MAX;
    let mut since = Instant::now();
    loop {
        let n = stores[a].backlog().await.map_err(plan.failed(a))?;
        if n == 0 {
            return Ok(());
        }
        if n < last {
            last = n;
            since = Instant::now();
        } else if since.elapsed() > stall {
            return Err(ValidateError::Usage(format!(
                "entity {:?}: {n} changes wait in side {side:?}'s capture and none was applied for {}s: is the sync engine running (`strangler serve` or `strangler sync run`)?",
                e.name,
                stall.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The audit record of a backfill run.
pub fn audit_entry(r: &BackfillReport) -> AuditEntry {
    AuditEntry {
        kind: "backfill".into(),
        entity: r.entity.clone(),
        body: serde_json::to_string(r).unwrap_or_default(),
    }
}

/// The backfills of the entities marked `backfill = true`, as an engine of `serve` and `sync
/// run`: each runs to its end (resuming an interrupted one), retrying after failures, and is
/// recorded in the audit log; the copies travel through the sync engine running beside it.
pub struct BackfillEngine {
    sync: SyncConfig,
    control: Option<std::sync::Arc<crate::control::ControlStore>>,
}

impl BackfillEngine {
    /// The engine for `sync`'s entities marked `backfill = true`; `None` when there are none.
    pub fn new(
        sync: &SyncConfig,
        control: Option<std::sync::Arc<crate::control::ControlStore>>,
    ) -> Option<BackfillEngine> {
        sync.entities
            .iter()
            .any(|e| e.backfill)
            .then(|| BackfillEngine {
                sync: sync.clone(),
                control,
            })
    }
}

#[async_trait::async_trait]
impl crate::engine::Engine for BackfillEngine {
    fn name(&self) -> &'static str {
        "backfill"
    }

    async fn run(
        self: Box<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<(), crate::engine::EngineError> {
        for e in self.sync.entities.iter().filter(|e| e.backfill) {
            let mut wait = Duration::from_secs(1);
            loop {
                let run = backfill(&self.sync, e, CHUNK, |r| {
                    tracing::debug!(entity = %r.entity, read = r.progress.read, copied = r.progress.copied, "backfill chunk");
                });
                let outcome = tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    r = run => r,
                };
                match outcome {
                    Ok(r) => {
                        tracing::info!(entity = %r.entity, read = r.progress.read, copied = r.progress.copied, "backfill done");
                        if let Some(c) = &self.control
                            && let Err(err) = c.append_audit(vec![audit_entry(&r)]).await
                        {
                            tracing::warn!(error = %err, "backfill: audit record not written");
                        }
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(entity = %e.name, error = %err, retry_in = ?wait, "backfill failed; resuming later");
                        tokio::select! {
                            _ = shutdown.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(wait) => {}
                        }
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
        shutdown.cancelled().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_round_trips_as_stored() {
        let p = Progress {
            after: Some(vec![Value::from(7), Value::from("x")]),
            read: 10,
            copied: 3,
            refused: 1,
            done: false,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Progress>(&text).unwrap(), p);
        // Progress stored before `refused` existed still reads.
        let old: Progress =
            serde_json::from_str(r#"{"after":[7],"read":10,"copied":3,"done":false}"#).unwrap();
        assert_eq!(old.refused, 0);
    }
}
