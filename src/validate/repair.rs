//! Repair: the authority side's rows written to the other side through the sync engine's
//! apply path. The writes run in the engine's own transaction, so capture does not echo them
//! back, and the apply's race check refuses a key that changed on the target since: such a
//! key is left to the sync engine, which settles it by the entity's conflict policy.

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
    let db = |side: usize| {
        let name = plan.sides[side].side.clone();
        let entity = plan.entity.name.clone();
        move |source| ValidateError::Database {
            entity,
            side: name,
            source,
        }
    };
    if !dry_run && !stores[t].installed().await.map_err(db(t))? {
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
        let (sql, params) = plan.keys_sql(a, chunk, false);
        let rows = stores[a]
            .statements()
            .rows(&sql, &params)
            .await
            .map_err(db(a))?;
        let mut found: HashMap<Vec<KeyPart>, Row> = HashMap::with_capacity(rows.len());
        for values in rows {
            let item_key = plan.item(a, values.clone()).key;
            let row = plan.row(a, values);
            found.insert(item_key, row);
        }
        let mut writes: Vec<(Vec<KeyPart>, Write)> = Vec::with_capacity(chunk.len());
        for key in chunk {
            let kind = kinds.get(key.as_slice()).copied().unwrap_or(Kind::Changed);
            let source = found.get(key);
            let left = match source {
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
                "delete"
            } else {
                "upsert"
            };
            if action == "delete" {
                out.deletes += 1
            } else {
                out.upserts += 1
            }
            if out.actions.len() < LISTED {
                out.actions.push(Action {
                    key: key_row(plan, key),
                    action,
                    to: target.clone(),
                    why: kind.name(),
                });
            }
            writes.push((key.clone(), write));
        }
        if !dry_run {
            out.deferred += apply(&mut stores[t], writes).await.map_err(db(t))?;
        }
    }
    Ok(out)
}

/// Applies writes in one transaction; when a key raced, each write alone. Returns how many
/// keys were left to the sync engine.
async fn apply(
    store: &mut Store,
    writes: Vec<(Vec<KeyPart>, Write)>,
) -> Result<u64, crate::store::StoreError> {
    let batch = |w: Vec<Write>| ApplyBatch {
        writes: w,
        source: "strangler-validate".into(),
        ..Default::default()
    };
    if store
        .apply(&batch(writes.iter().map(|(_, w)| w.clone()).collect()))
        .await?
    {
        return Ok(0);
    }
    let mut deferred = 0;
    for (_, w) in writes {
        if !store.apply(&batch(vec![w])).await? {
            deferred += 1;
        }
    }
    Ok(deferred)
}
