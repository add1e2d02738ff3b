//! The stream side of a group's apply loop: messages delivered and not yet acknowledged, read
//! as the round's changes, acknowledged once applied.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::{FutureExt, StreamExt};

use super::*;
use crate::metrics as m;
use crate::store::{Change, Store};
use crate::sync::error::{SyncError, timed};

/// A change message's payload, as published.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Payload {
    pub(super) changes: Vec<Change>,
    /// Set, with no `changes`, for a source transaction too large for one message: the
    /// worker reads it whole from the source changelog, where it stays until applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) tx: Option<String>,
}

/// One delivered message and the changes it carries.
pub(super) struct Held {
    pub(super) stream_seq: u64,
    pub(super) side: String,
    pub(super) changes: Vec<Change>,
    /// A transaction sent by reference, not read from its changelog yet.
    pub(super) unread: Option<String>,
    pub(super) msg: jetstream::Message,
}

/// The stream side of a group's apply loop: delivered, not yet acknowledged messages.
pub(in crate::sync) struct Feed {
    /// Lease and fence name (`group.NAME`).
    pub(in crate::sync) unit: String,
    /// Group name.
    pub(in crate::sync) group: String,
    /// Fencing token: the lease's revision when this worker took it.
    pub(in crate::sync) token: i64,
    /// This worker's name.
    pub(in crate::sync) worker: String,
    /// Changelog rows consumed by the last round, per side: their checkpoint entries can go.
    pub(in crate::sync) prune: [Vec<i64>; 2],
    /// The next round also reads the changelogs directly (set when the group is taken over).
    pub(in crate::sync) sweep: bool,
    pub(super) consumer: jetstream::consumer::Consumer<pull::Config>,
    pub(super) messages: Option<pull::Stream>,
    pub(super) held: Vec<Held>,
    pub(super) batch: usize,
    pub(super) stalled: bool,
}

impl Feed {
    /// Waits up to `wait` for a message when none is held (or the held ones made no progress
    /// last round), then takes whatever else is already delivered, up to the batch size.
    pub(in crate::sync) async fn receive(&mut self, wait: Duration) -> Result<(), SyncError> {
        if self.messages.is_none() {
            let s = self
                .consumer
                .stream()
                .max_messages_per_batch(self.batch.clamp(1, 1000))
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map_err(broker_err("opening the consumer's message stream"))?;
            self.messages = Some(s);
        }
        let mut count: usize = self.held.iter().map(|h| h.changes.len()).sum();
        let mut block = self.held.is_empty() || self.stalled;
        while count < self.batch {
            let stream = self.messages.as_mut().expect("opened above");
            let next = if block {
                block = false;
                match tokio::time::timeout(wait, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                }
            } else {
                match stream.next().now_or_never() {
                    Some(n) => n,
                    None => break,
                }
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    self.messages = None;
                    return Err(broker_err("reading the consumer's messages")(e));
                }
                None => {
                    self.messages = None;
                    return Err(broker_err("reading the consumer's messages")(
                        "the message stream ended",
                    ));
                }
            };
            let stream_seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            let side = msg
                .subject
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_string();
            match serde_json::from_slice::<Payload>(&msg.payload) {
                Ok(p) => {
                    if let Some(h) = self.held.iter_mut().find(|h| h.stream_seq == stream_seq) {
                        // Redelivered while held: answer the newest delivery.
                        h.msg = msg;
                        continue;
                    }
                    count += p.changes.len().max(1);
                    self.held.push(Held {
                        stream_seq,
                        side,
                        changes: p.changes,
                        unread: p.tx,
                        msg,
                    });
                }
                Err(e) => {
                    // Not ours (or corrupt): the rows it claims to carry are still in their
                    // changelog, so nothing is lost by refusing it.
                    tracing::error!(subject = %msg.subject, stream_seq, error = %e,
                        "broker: undecodable change message; terminating it");
                    metrics::counter!(m::SYNC_BAD_MESSAGES).increment(1);
                    let _ = msg.ack_with(jetstream::AckKind::Term).await;
                }
            }
        }
        Ok(())
    }

    /// Reads the transactions sent by reference from `side`'s changelog (the rows of
    /// `tables`). One whose rows are gone was applied and consumed already: its message is
    /// acknowledged at once.
    pub(in crate::sync) async fn resolve(
        &mut self,
        side: &str,
        store: &mut Store,
        tables: &[String],
    ) -> Result<(), SyncError> {
        let mut i = 0;
        while i < self.held.len() {
            let h = &mut self.held[i];
            if let (true, Some(tx)) = (h.side == side, h.unread.clone()) {
                let mut cs = timed(side, "read_tx", store.read_transaction(&tx)).await?;
                cs.retain(|c| tables.contains(&c.table));
                h.unread = None;
                if cs.is_empty() {
                    let h = self.held.remove(i);
                    let _ = h.msg.ack().await;
                    continue;
                }
                h.changes = cs;
            }
            i += 1;
        }
        Ok(())
    }

    /// The held changes from `side`, in changelog order, each once.
    pub(in crate::sync) fn changes(&self, side: &str) -> Vec<Change> {
        let mut out: Vec<Change> = self
            .held
            .iter()
            .filter(|h| h.side == side)
            .flat_map(|h| h.changes.iter().cloned())
            .collect();
        out.sort_by_key(|c| c.seq);
        out.dedup_by_key(|c| c.seq);
        out
    }

    /// Acknowledges every held message whose changes are all settled (`done_*` by side).
    pub(in crate::sync) async fn settle(
        &mut self,
        a: &str,
        done_a: &HashSet<i64>,
        b: &str,
        done_b: &HashSet<i64>,
    ) {
        let mut acks = Vec::new();
        let mut keep = Vec::new();
        for h in self.held.drain(..) {
            let done = if h.side == a {
                done_a
            } else if h.side == b {
                done_b
            } else {
                tracing::error!(side = %h.side, "broker: message for a side this group does not join; terminating it");
                let _ = h.msg.ack_with(jetstream::AckKind::Term).await;
                continue;
            };
            if h.changes.iter().all(|c| done.contains(&c.seq)) {
                acks.push(h.msg);
            } else {
                keep.push(h);
            }
        }
        self.stalled = acks.is_empty();
        // A lost acknowledgement only means a redelivery, which the next round drops.
        let results = futures_util::future::join_all(acks.iter().map(|m| m.ack())).await;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            tracing::warn!(unit = %self.unit, error = %e, "broker: acknowledgement failed; the message will be redelivered and skipped");
        }
        self.held = keep;
    }
}
