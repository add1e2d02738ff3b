//! The relay: publishes each side's unpublished changelog rows, one message per source
//! transaction and group (split to fit the broker's payload limit), then flags them published.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::sync::{BrokerConfig, SyncConfig};
use crate::metrics as m;
use crate::store::{Change, Store};
use crate::sync::error::{SyncError, timed};
use crate::sync::shared::{Shared, connect};

/// The messages of one batch of changes from `side`: one per source transaction and group
/// (SQLite changes carry no transaction and go by runs), split further to fit `max_bytes`.
/// One message to publish: its group, its changes, and whether it carries them by reference
/// (a source transaction larger than `max_bytes`, read by the worker from the changelog so
/// that it is still applied in one target transaction).
pub(super) type Outgoing = (String, Vec<Change>, bool);

pub(super) fn messages(
    changes: &[Change],
    groups: &HashMap<String, Vec<String>>,
    max_bytes: usize,
) -> Vec<Outgoing> {
    let mut order: Vec<(String, Vec<Change>)> = Vec::new();
    let mut index: HashMap<(Option<String>, String), usize> = HashMap::new();
    for c in changes {
        for g in groups.get(&c.table).into_iter().flatten() {
            let at = *index.entry((c.tx.clone(), g.clone())).or_insert_with(|| {
                order.push((g.clone(), Vec::new()));
                order.len() - 1
            });
            order[at].1.push(c.clone());
        }
    }
    let mut out = Vec::new();
    for (g, cs) in order {
        if cs[0].tx.is_some() && size(&cs) > max_bytes {
            out.push((g, cs, true));
        } else {
            split(g, cs, max_bytes, &mut out);
        }
    }
    out
}

/// About how many bytes `changes` take in a message.
pub(super) fn size(changes: &[Change]) -> usize {
    changes
        .iter()
        .map(|c| {
            64 + c.pk.len()
                + [&c.old, &c.new]
                    .iter()
                    .filter_map(|r| r.as_ref())
                    .map(|r| serde_json::to_string(r).map(|s| s.len()).unwrap_or(0))
                    .sum::<usize>()
        })
        .sum()
}

/// Splits a run of changes that carry no transaction (SQLite) to fit `max_bytes`.
pub(super) fn split(
    group: String,
    changes: Vec<Change>,
    max_bytes: usize,
    out: &mut Vec<Outgoing>,
) {
    if size(&changes) <= max_bytes || changes.len() == 1 {
        out.push((group, changes, false));
        return;
    }
    let mut left = changes;
    let right = left.split_off(left.len() / 2);
    split(group.clone(), left, max_bytes, out);
    split(group, right, max_bytes, out);
}

/// Publishes one side's unpublished changes until cancelled.
#[allow(clippy::too_many_arguments)]
pub(super) async fn relay(
    cfg: SyncConfig,
    b: BrokerConfig,
    broker: Arc<Broker>,
    shared: Arc<Shared>,
    side: String,
    groups: Arc<HashMap<String, Vec<String>>>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let unit = format!("relay.{side}");
    let tables: Vec<String> = groups.keys().cloned().collect();
    let mut store: Option<Store> = None;
    let mut backoff = Duration::from_millis(100);
    let max_bytes = broker.max_payload.saturating_sub(16 * 1024).max(4096);
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let step = async {
            if store.is_none() {
                let mut s = connect(&cfg, &side).await?;
                if !timed(&side, "installed", s.installed()).await? {
                    return Err(SyncError::NotInstalled { side: side.clone() });
                }
                store = Some(s);
            }
            let s = store.as_mut().expect("connected above");
            let changes = timed(
                &side,
                "read_unpublished",
                s.read_unpublished(cfg.settings.batch, &tables),
            )
            .await?;
            if changes.is_empty() {
                return Ok(false);
            }
            let mut acks = Vec::new();
            for (group, cs, by_ref) in messages(&changes, &groups, max_bytes) {
                let (first, last) = (&cs[0], &cs[cs.len() - 1]);
                let id = format!("{side}.{}-{}.{}", first.seq, last.seq, first.ts_us);
                let body = if by_ref {
                    Payload {
                        tx: first.tx.clone(),
                        changes: Vec::new(),
                    }
                } else {
                    Payload {
                        changes: cs,
                        tx: None,
                    }
                };
                let payload =
                    serde_json::to_vec(&body).map_err(broker_err("encoding a message"))?;
                let ack = broker
                    .js
                    .send_publish(
                        format!("{}.{group}.{side}", b.subject),
                        jetstream::message::PublishMessage::build()
                            .payload(payload.into())
                            .message_id(id),
                    )
                    .await
                    .map_err(broker_err(format!(
                        "publishing to {}.{group}.{side}",
                        b.subject
                    )))?;
                acks.push(ack);
            }
            let mut duplicates = 0u64;
            for a in futures_util::future::join_all(
                acks.into_iter().map(std::future::IntoFuture::into_future),
            )
            .await
            {
                if a.map_err(broker_err("waiting for a publish acknowledgement"))?
                    .duplicate
                {
                    duplicates += 1;
                }
            }
            let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
            timed(&side, "mark_published", s.mark_published(&seqs)).await?;
            metrics::counter!(m::SYNC_PUBLISHED, "side" => side.clone())
                .increment(seqs.len() as u64);
            if duplicates > 0 {
                metrics::counter!(m::SYNC_PUBLISH_DUPLICATES, "side" => side.clone())
                    .increment(duplicates);
            }
            Ok::<bool, SyncError>(true)
        };
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = step => r,
        };
        match r {
            Ok(true) => {
                backoff = Duration::from_millis(100);
                shared
                    .status
                    .set_link(&unit, format!("owned by {} (this worker)", b.worker));
            }
            Ok(false) => {
                let notified = store.as_ref().and_then(Store::notified);
                let wait_db = async move {
                    match notified {
                        Some(n) => n.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = wake.notified() => {}
                    _ = wait_db => {}
                    _ = tokio::time::sleep(cfg.settings.poll) => {}
                }
            }
            Err(e) => {
                tracing::warn!(unit = %unit, error = %e, retry_in_ms = backoff.as_millis() as u64, "relay failed; retrying");
                metrics::counter!(m::SYNC_RETRIES, "link" => unit.clone()).increment(1);
                shared.status.set_link(&unit, format!("retrying: {e}"));
                store = None;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(cfg.settings.retry_max);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Op;

    fn change(seq: i64, table: &str, tx: Option<&str>) -> Change {
        Change {
            seq,
            table: table.into(),
            op: Op::Insert,
            old: None,
            new: Some(
                serde_json::json!({"id": seq, "pad": "x".repeat(100)})
                    .as_object()
                    .cloned()
                    .unwrap(),
            ),
            tx: tx.map(String::from),
            ts_us: 1,
            pk: seq.to_string(),
            poison: None,
        }
    }

    #[test]
    fn one_message_per_transaction_and_group() {
        let groups: HashMap<String, Vec<String>> = [
            ("orders".to_string(), vec!["o".to_string()]),
            ("items".to_string(), vec!["o".to_string()]),
            ("users".to_string(), vec!["u".to_string()]),
        ]
        .into();
        let cs = vec![
            change(1, "orders", Some("t1")),
            change(2, "users", Some("t2")),
            change(3, "items", Some("t1")),
            change(4, "users", Some("t1")),
        ];
        let m = messages(&cs, &groups, 1 << 20);
        let got: Vec<(String, Vec<i64>)> = m
            .iter()
            .map(|(g, cs, _)| (g.clone(), cs.iter().map(|c| c.seq).collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("o".to_string(), vec![1, 3]),
                ("u".to_string(), vec![2]),
                ("u".to_string(), vec![4]),
            ]
        );
    }

    #[test]
    fn oversized_transactions_go_by_reference_and_runs_are_split_in_order() {
        let groups: HashMap<String, Vec<String>> =
            [("t".to_string(), vec!["g".to_string()])].into();
        let cs: Vec<Change> = (1..=10).map(|i| change(i, "t", Some("tx"))).collect();
        let m = messages(&cs, &groups, 600);
        assert_eq!(m.len(), 1, "one transaction, one message");
        assert!(m[0].2, "carried by reference");
        assert_eq!(m[0].1.len(), 10);
        let fits = messages(&cs, &groups, 1 << 20);
        assert_eq!(fits.len(), 1);
        assert!(!fits[0].2, "carried whole");
        // SQLite runs name no transaction: they are split, in order.
        let runs: Vec<Change> = (1..=10).map(|i| change(i, "t", None)).collect();
        let m = messages(&runs, &groups, 600);
        assert!(m.len() > 1 && m.iter().all(|(_, _, r)| !r));
        let seqs: Vec<i64> = m
            .iter()
            .flat_map(|(_, cs, _)| cs.iter().map(|c| c.seq))
            .collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    }
}
