//! The initial copy: the authority's rows that the other side lacks, read in key-ordered
//! chunks and put into the authority's own change capture as inserts, in the transaction that
//! reads them, with the chunk's progress. The sync engine then carries the copies in capture
//! order: a row changed on the authority after its chunk was read is captured after its copy
//! and applied after it; a row changed on the other side meanwhile meets the copy as a
//! conflict, settled by the entity's policy like any other. After `kill -9` the copy resumes
//! after the last committed chunk, and nothing is captured twice.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::sync::{EntityConfig, SyncConfig};
use crate::control::AuditEntry;
use crate::store::{CaptureSpec, Row};

use super::ValidateError;
use super::command::plan;
use super::plan::{KeyPart, Plan, key_part};
use super::repair::key_value;

/// Where a backfill stands, as stored with each chunk.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// The last key read, in the authority's key order (`None`: not started).
    pub after: Option<Vec<Value>>,
    /// Authority rows read so far.
    pub read: u64,
    /// Rows copied (captured for the other side) so far.
    pub copied: u64,
    /// Every chunk is done.
    pub done: bool,
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
}

/// Rows per chunk unless told otherwise.
pub const CHUNK: usize = 2_000;

fn side_key(plan: &Plan, side: usize, key: &[KeyPart]) -> Row {
    plan.sides[side]
        .key
        .iter()
        .cloned()
        .zip(key.iter().map(key_value))
        .collect()
}

fn parse_after(plan: &Plan, after: &[Value]) -> Vec<KeyPart> {
    after
        .iter()
        .zip(&plan.key_kinds)
        .map(|(v, k)| key_part(v, *k))
        .collect()
}

/// Copies what the other side lacks of `e`, reporting progress after each chunk.
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
    let db = |side: usize| {
        let (entity, name) = (e.name.clone(), plan.sides[side].side.clone());
        move |source| ValidateError::Database {
            entity,
            side: name,
            source,
        }
    };
    for side in [a, t] {
        if !stores[side].installed().await.map_err(db(side))? {
            return Err(ValidateError::Schema {
                entity: e.name.clone(),
                side: plan.sides[side].side.clone(),
                message: "capture is not installed: the copy travels through the sync engine; run `strangler sync install` first".into(),
            });
        }
    }
    let stored = stores[a]
        .capture()
        .backfill_progress(&e.name)
        .await
        .map_err(db(a))?;
    let mut progress: Progress = match stored {
        Some(text) => serde_json::from_str(&text).map_err(|err| ValidateError::Schema {
            entity: e.name.clone(),
            side: plan.sides[a].side.clone(),
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
        .map_err(db(a))?
        .first()
        .and_then(|r| r.first())
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(0);
    let spec = CaptureSpec {
        table: plan.sides[a].table.clone(),
        key: plan.sides[a].key.clone(),
    };
    let report = |p: &Progress| BackfillReport {
        entity: e.name.clone(),
        from: plan.sides[a].side.clone(),
        to: plan.sides[t].side.clone(),
        total,
        progress: p.clone(),
        resumed,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    while !progress.done {
        let after = progress.after.as_ref().map(|v| parse_after(&plan, v));
        // Keys only: the copy's rows are read by the statement that captures them.
        let (sql, params) = plan.page_sql(a, after.as_deref(), chunk, true);
        let rows = stores[a]
            .statements()
            .rows(&sql, &params)
            .await
            .map_err(db(a))?;
        let keys: Vec<Vec<KeyPart>> = rows.iter().map(|r| plan.key_of(r)).collect();
        let (sql, params) = plan.keys_sql(t, &keys, true);
        let present: HashSet<Vec<KeyPart>> = if keys.is_empty() {
            HashSet::new()
        } else {
            stores[t]
                .statements()
                .rows(&sql, &params)
                .await
                .map_err(db(t))?
                .iter()
                .map(|r| plan.key_of(r))
                .collect()
        };
        let lacking: Vec<Row> = keys
            .iter()
            .filter(|k| !present.contains(*k))
            .map(|k| side_key(&plan, a, k))
            .collect();
        let mut next = progress.clone();
        next.read += keys.len() as u64;
        next.done = keys.len() < chunk;
        if let Some(last) = keys.last() {
            next.after = Some(last.iter().map(key_value).collect());
        }
        let mut stored = next.clone();
        stored.copied += lacking.len() as u64;
        let text = serde_json::to_string(&stored).unwrap_or_default();
        let n = stores[a]
            .capture()
            .snapshot(&spec, &lacking, &e.name, &text)
            .await
            .map_err(db(a))?;
        next.copied += n;
        progress = next;
        on_chunk(&report(&progress));
    }
    Ok(report(&progress))
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
        let n = stores[a]
            .backlog()
            .await
            .map_err(|source| ValidateError::Database {
                entity: e.name.clone(),
                side: side.clone(),
                source,
            })?;
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
            done: false,
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Progress>(&text).unwrap(), p);
    }
}
