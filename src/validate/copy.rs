//! One copy transaction of the initial copy: it holds the target side's gate alone, reads
//! the authority's next chunks inside it (the next one while the target writes the current
//! one), writes the rows the target lacks, each only where still absent, and stores the
//! progress, all in that transaction. See [`super::backfill`] for why this keeps the copy from
//! overwriting newer data.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::store::{Absent, ApplyBatch, Fault, Store, StoreError};
use crate::sync::mapping::Columnar;

use super::ValidateError;
use super::backfill::{Progress, Refusal};
use super::plan::{KeyKind, KeyPart, Plan};
use super::repair::{key_row, key_value};

/// How long one target transaction may hold the target side's gate (and so keep the sync
/// engine waiting there, and on SQLite the application's writers too) before it commits.
const SPAN: Duration = Duration::from_millis(25);

/// Refusals a report lists.
const LISTED: usize = 20;

/// An authority row read for the copy.
struct Prepared {
    key: Vec<KeyPart>,
    /// Its values in the target's columns, or why the mapping cannot carry it.
    mapped: Result<Vec<Value>, String>,
}

/// How one target transaction ended.
pub(super) enum Outcome {
    /// Committed, with the progress stored.
    Committed(Progress),
    /// Rolled back: changes on the target wait on these (table, key text) pairs.
    Raced(Vec<(String, String)>),
    /// Rolled back: the target refused a row of the chunk read after `before` rows.
    Refused {
        /// Rows read in the transaction's earlier chunks, which the target took.
        before: u64,
        /// The progress past the refused chunk.
        past: Progress,
        /// The refused chunk's first key.
        key: Vec<KeyPart>,
        /// The target's words.
        error: StoreError,
    },
}

/// One entity's copy: its plan and the rows it left out.
pub(super) struct Copy<'a> {
    pub(super) plan: &'a Plan,
    /// The authority's read rows mapped to the target's columns.
    pub(super) map: Columnar<'a>,
    /// Authority and target side indexes.
    pub(super) a: usize,
    pub(super) t: usize,
    pub(super) chunk: usize,
    /// Keys left to the sync engine, as (table, key text) on the target.
    pub(super) skip: HashSet<(String, String)>,
    pub(super) refusals: Vec<Refusal>,
}

impl Copy<'_> {
    pub(super) fn refuse(&mut self, key: &[KeyPart], reason: String) {
        tracing::warn!(entity = %self.plan.entity.name, key = ?key_row(self.plan, key), %reason, "backfill: row left out");
        if self.refusals.len() < LISTED {
            self.refusals.push(Refusal {
                key: key_row(self.plan, key),
                reason,
            });
        }
    }

    /// Up to `limit` authority rows after `after`, in key order, mapped (while the target
    /// writes the chunk before).
    async fn read(
        &self,
        store: &mut Store,
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Vec<Prepared>, ValidateError> {
        let plan = self.plan;
        let after = after.map(|v| plan.key_of(v));
        let (sql, params) = plan.page_sql(self.a, after.as_deref(), limit, false);
        let rows = store
            .statements()
            .rows(&sql, &params)
            .await
            .map_err(self.plan.failed(self.a))?;
        Ok(rows
            .into_iter()
            .map(|mut values| {
                let key = plan.key_of(&values);
                plan.image(self.a, &mut values);
                Prepared {
                    key,
                    mapped: self.map.map(values),
                }
            })
            .collect())
    }

    /// Inside the target transaction: the rows the target lacks, to be inserted where still
    /// absent, and the rows the mapping cannot carry.
    async fn lacking(
        &self,
        target: &mut Store,
        rows: Vec<Prepared>,
    ) -> Result<(Absent, Vec<(Vec<KeyPart>, String)>), StoreError> {
        let plan = self.plan;
        let present: HashSet<Vec<KeyPart>> = match (rows.first(), rows.last()) {
            (Some(first), Some(last)) => {
                let (sql, params) = if plan.key_kinds.iter().all(|k| *k == KeyKind::Int) {
                    plan.range_sql(self.t, &first.key, &last.key)
                } else {
                    let keys: Vec<Vec<KeyPart>> = rows.iter().map(|r| r.key.clone()).collect();
                    plan.keys_sql(self.t, &keys, true)
                };
                target
                    .statements()
                    .rows(&sql, &params)
                    .await?
                    .iter()
                    .map(|r| plan.key_of(r))
                    .collect()
            }
            _ => HashSet::new(),
        };
        let mut absent = Absent {
            table: self.map.table.clone(),
            key: self.map.key.clone(),
            columns: self.map.columns.clone(),
            bytes: self.map.bytes.clone(),
            rows: Vec::with_capacity(rows.len()),
        };
        let mut refused = Vec::new();
        for p in rows {
            if present.contains(&p.key) {
                continue;
            }
            match p.mapped {
                Ok(values) => absent.rows.push(values),
                Err(m) => refused.push((p.key, format!("cannot be mapped: {m}"))),
            }
        }
        if !self.skip.is_empty() {
            let pks: Vec<String> = absent.pks().collect();
            let mut pks = pks.into_iter();
            let table = absent.table.clone();
            absent.rows.retain(|_| {
                let pk = pks.next().unwrap_or_default();
                !self.skip.contains(&(table.clone(), pk))
            });
        }
        Ok((absent, refused))
    }

    /// One target transaction: chunks of up to `limit` rows after `from`, until [`SPAN`] has
    /// passed, `max_rows` were read or the authority has no more.
    pub(super) async fn transaction(
        &mut self,
        stores: &mut [Store; 2],
        from: &Progress,
        limit: usize,
        max_rows: u64,
    ) -> Result<Outcome, ValidateError> {
        let [s0, s1] = stores;
        let (source, target) = if self.a == 0 { (s0, s1) } else { (s1, s0) };
        target
            .begin_alone()
            .await
            .map_err(self.plan.failed(self.t))?;
        let started = Instant::now();
        let mut next = from.clone();
        let outcome = async {
            // Read inside the gate: no sync engine transaction commits on the target until
            // this one has.
            let mut rows = self.read(source, next.after.as_deref(), limit).await?;
            loop {
                let before = next.read - from.read;
                let first = rows.first().map(|r| r.key.clone());
                next.read += rows.len() as u64;
                next.done = rows.len() < limit;
                if let Some(last) = rows.last() {
                    next.after = Some(last.key.iter().map(key_value).collect());
                }
                let more =
                    !next.done && next.read - from.read < max_rows && started.elapsed() < SPAN;
                let after = next.after.clone();
                let reading = async {
                    match more {
                        true => Some(self.read(source, after.as_deref(), limit).await),
                        false => None,
                    }
                };
                let writing = async {
                    let (absent, refused) = self.lacking(target, rows).await?;
                    let n = absent.rows.len() as u64;
                    let batch = ApplyBatch {
                        source: "strangler-backfill".into(),
                        absent: Some(absent),
                        ..Default::default()
                    };
                    let ok = target.write_batch(&batch).await?;
                    Ok::<_, StoreError>((ok, n, refused, batch))
                };
                // The target's statements go out first; the next chunk is read while the
                // target works.
                let (wrote, read) = tokio::join!(writing, reading);
                match wrote {
                    Ok((true, n, refused, _)) => {
                        next.copied += n;
                        next.refused += refused.len() as u64;
                        for (key, reason) in refused {
                            self.refuse(&key, reason);
                        }
                    }
                    Ok((false, _, _, batch)) => {
                        target
                            .finish(false)
                            .await
                            .map_err(self.plan.failed(self.t))?;
                        let found = target
                            .fetch_unseen(&batch.written_keys(), &HashSet::new(), None)
                            .await
                            .map_err(self.plan.failed(self.t))?;
                        return Ok(Outcome::Raced(
                            found.into_iter().map(|c| (c.table, c.pk)).collect(),
                        ));
                    }
                    Err(error) if row_fault(&error) => {
                        target
                            .finish(false)
                            .await
                            .map_err(self.plan.failed(self.t))?;
                        return Ok(Outcome::Refused {
                            before,
                            past: next,
                            key: first.unwrap_or_default(),
                            error,
                        });
                    }
                    Err(e) => return Err(self.plan.failed(self.t)(e)),
                }
                match read {
                    Some(r) => rows = r?,
                    None => break,
                }
            }
            let text = serde_json::to_string(&next).unwrap_or_default();
            target
                .save_progress(&self.plan.entity.name, &text)
                .await
                .map_err(self.plan.failed(self.t))?;
            target
                .finish(true)
                .await
                .map_err(self.plan.failed(self.t))?;
            Ok(Outcome::Committed(next))
        }
        .await;
        if outcome.is_err() {
            let _ = target.finish(false).await;
        }
        outcome
    }
}

/// A database's refusal of a row's values (rather than a failure of the database).
fn row_fault(e: &StoreError) -> bool {
    matches!(
        e.fault(),
        Fault::Unique | Fault::Reference | Fault::NotNull | Fault::Check | Fault::Value
    )
}
