//! Repair: the authority side's rows written to the other side through the sync engine's
//! apply path. The writes run in the engine's own transaction, so capture does not echo them
//! back, and the apply's race check refuses a key that changed on the target since: such a
//! key is left to the sync engine, which settles it by the entity's conflict policy. Like the
//! initial copy, each repair transaction holds the target's gate alone and reads the
//! authority inside it, so a change the sync engine applies meanwhile lands after the repair.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::store::{ApplyBatch, Row, Store, Write};

use super::ValidateError;
use super::compare::Kind;
use super::plan::{KeyPart, Plan};
use super::report::{Action, RepairReport};

/// Keys repaired per transaction.
const KEYS_PER_BATCH: usize = 500;
/// Actions a report lists.
const LISTED: usize = 1000;

/// A key value as JSON.
pub fn key_value(p: &KeyPart) -> Value {
    match p {
        KeyPart::Int(i) => {
            i64::try_from(*i).map_or_else(|_| Value::String(i.to_string()), Value::from)
        }
        KeyPart::Text(t) => Value::String(t.clone()),
    }
}

/// A key as a left-form row of its key columns.
pub fn key_row(plan: &Plan, key: &[KeyPart]) -> Map<String, Value> {
    plan.entity
        .left
        .key
        .iter()
        .cloned()
        .zip(key.iter().map(key_value))
        .collect()
}

/// Plans, and unless `dry_run` applies, the writes that make the target match the authority
/// for `keys` (sorted by key). `stores`: left, right.
pub async fn repair(
    plan: &Plan,
    stores: &mut [Store; 2],
    keys: &[(Vec<KeyPart>, Kind)],
    dry_run: bool,
) -> Result<RepairReport, ValidateError> {
    let a = usize::from(plan.entity.authority != plan.sides[0].side);
    let t = 1 - a;
    let target = plan.sides[t].side.clone();
    if !dry_run && !stores[t].installed().await.map_err(plan.failed(t))? {
        return Err(ValidateError::Schema {
            entity: plan.entity.name.clone(),
            side: target,
            message: "capture is not installed: repair writes through the sync engine's apply path; run `strangler sync install` first".into(),
        });
    }
    let mut out = RepairReport {
        dry_run,
        target: target.clone(),
        ..Default::default()
    };
    let only: Vec<Vec<KeyPart>> = keys
        .iter()
        .filter(|(_, k)| matches!(k, Kind::Missing | Kind::Extra | Kind::Changed))
        .map(|(k, _)| k.clone())
        .collect();
    let kinds: HashMap<&[KeyPart], Kind> =
        keys.iter().map(|(k, kind)| (k.as_slice(), *kind)).collect();
    for chunk in only.chunks(KEYS_PER_BATCH) {
        if dry_run {
            writes(plan, &mut stores[a], chunk, &kinds, &mut out).await?;
            continue;
        }
        // The authority is read inside a transaction that holds the target's gate alone: no
        // sync engine transaction commits on the target between the read and the repair, so
        // a change the engine applies meanwhile lands after the repair, not under it.
        let [s0, s1] = &mut *stores;
        let (source, target) = if a == 0 { (s0, s1) } else { (s1, s0) };
        target.begin_alone().await.map_err(plan.failed(t))?;
        let planned = writes(plan, source, chunk, &kinds, &mut out).await;
        let applied = match planned {
            Ok(w) => target.write_batch(&batch(w)).await.map_err(plan.failed(t)),
            Err(e) => Err(e),
        };
        match applied {
            Ok(true) => target.finish(true).await.map_err(plan.failed(t))?,
            Ok(false) => {
                // A key raced: each key alone, read again, so only the raced ones wait.
                target.finish(false).await.map_err(plan.failed(t))?;
                for key in chunk {
                    target.begin_alone().await.map_err(plan.failed(t))?;
                    let mut scratch = RepairReport::default();
                    let one = std::slice::from_ref(key);
                    let applied = match writes(plan, source, one, &kinds, &mut scratch).await {
                        Ok(w) => target.write_batch(&batch(w)).await.map_err(plan.failed(t)),
                        Err(e) => Err(e),
                    };
                    match applied {
                        Ok(ok) => {
                            target.finish(ok).await.map_err(plan.failed(t))?;
                            out.deferred += u64::from(!ok);
                        }
                        Err(e) => {
                            let _ = target.finish(false).await;
                            return Err(e);
                        }
                    }
                }
            }
            Err(e) => {
                let _ = target.finish(false).await;
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// A repair transaction's batch.
fn batch(writes: Vec<Write>) -> ApplyBatch {
    ApplyBatch {
        writes,
        source: "strangler-validate".into(),
        ..Default::default()
    }
}

/// The writes that make the target match the authority for `keys`, read from the authority
/// now; each is counted, and the first listed, in `out`.
async fn writes(
    plan: &Plan,
    source: &mut Store,
    keys: &[Vec<KeyPart>],
    kinds: &HashMap<&[KeyPart], Kind>,
    out: &mut RepairReport,
) -> Result<Vec<Write>, ValidateError> {
    let a = usize::from(plan.entity.authority != plan.sides[0].side);
    let target = plan.sides[1 - a].side.clone();
    let (sql, params) = plan.keys_sql(a, keys, false);
    let rows = source
        .statements()
        .rows(&sql, &params)
        .await
        .map_err(plan.failed(a))?;
    let mut found: HashMap<Vec<KeyPart>, Row> = HashMap::with_capacity(rows.len());
    for values in rows {
        let item_key = plan.item(a, values.clone()).key;
        let row = plan.row(a, values);
        found.insert(item_key, row);
    }
    let mut writes = Vec::with_capacity(keys.len());
    for key in keys {
        let kind = kinds.get(key.as_slice()).copied().unwrap_or(Kind::Changed);
        let left =
            match found.get(key) {
                Some(r) => Some(plan.mapping.to_left_form(&plan.sides[a].side, r).map_err(
                    |m| ValidateError::Schema {
                        entity: plan.entity.name.clone(),
                        side: plan.sides[a].side.clone(),
                        message: format!("row {:?} cannot be mapped: {m}", key_row(plan, key)),
                    },
                )?),
                None => None,
            };
        let write = plan
            .mapping
            .write(&target, left.as_ref(), &key_row(plan, key))
            .map_err(|m| ValidateError::Schema {
                entity: plan.entity.name.clone(),
                side: target.clone(),
                message: m,
            })?;
        let action = if matches!(write, Write::Delete { .. }) {
            out.deletes += 1;
            "delete"
        } else {
            out.upserts += 1;
            "upsert"
        };
        if out.actions.len() < LISTED {
            out.actions.push(Action {
                key: key_row(plan, key),
                action,
                to: target.clone(),
                why: kind.name(),
            });
        }
        writes.push(write);
    }
    Ok(writes)
}
