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
use crate::sync::link::{Origin, Want, delete_consumed, read_both};

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
pub(super) struct Feed {
    /// Lease and fence name (`group.NAME`).
    pub(super) unit: String,
    /// Group name.
    pub(super) group: String,
    /// Fencing token: the lease's revision when this worker took it.
    pub(super) token: i64,
    /// This worker's name.
    pub(super) worker: String,
    /// Changelog rows consumed by the last round, per side: their checkpoint entries can go.
    pub(super) prune: [Vec<i64>; 2],
    /// Delivered changes of the round in progress whose changelog rows were already gone
    /// (consumed by an earlier round), per side: acknowledged with the round's own.
    pub(super) gone: [Vec<i64>; 2],
    /// The next round also reads the changelogs directly (set when the group is taken over).
    pub(super) sweep: bool,
    pub(super) consumer: jetstream::consumer::Consumer<pull::Config>,
    pub(super) messages: Option<pull::Stream>,
    pub(super) held: Vec<Held>,
    pub(super) batch: usize,
    pub(super) stalled: bool,
}

impl Feed {
    /// Waits up to `wait` for a message when none is held (or the held ones made no progress
    /// last round), then takes whatever else is already delivered, up to the batch size.
    pub(super) async fn receive(&mut self, wait: Duration) -> Result<(), SyncError> {
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
    pub(super) async fn resolve(
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
    pub(super) fn changes(&self, side: &str) -> Vec<Change> {
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
    pub(super) async fn settle(
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

impl Origin for Feed {
    fn checkpoint(&self, side: &str) -> String {
        format!("{side}#{}", self.group)
    }

    fn state(&self) -> String {
        format!("running, owned by {} (this worker)", self.worker)
    }

    fn waits(&self) -> bool {
        true
    }

    fn reordered(&self) -> bool {
        true
    }

    async fn read(
        &mut self,
        [x, y]: [&mut Store; 2],
        want: [Want<'_>; 2],
        poll: Duration,
    ) -> Result<[Vec<Change>; 2], SyncError> {
        let wait = if self.sweep { Duration::ZERO } else { poll };
        self.receive(wait).await?;
        self.resolve(want[0].side, x, want[0].tables).await?;
        self.resolve(want[1].side, y, want[1].tables).await?;
        let mut out = [self.changes(want[0].side), self.changes(want[1].side)];
        // Once after taking a group over, the changelogs are read directly too: what the last
        // owner had in flight is redelivered only after the ack wait.
        if self.sweep {
            let direct = read_both([x, y], want).await?;
            for (r, d) in out.iter_mut().zip(direct) {
                r.extend(d);
                r.sort_by_key(|c| c.seq);
                r.dedup_by_key(|c| c.seq);
            }
            self.sweep = false;
        }
        Ok(out)
    }

    /// Only the lease holder gets past the fence; a change whose changelog row is gone was
    /// consumed by an earlier round (changes may arrive more than once) and is dropped.
    async fn admit(
        &mut self,
        [sa, sb]: [&mut Store; 2],
        [a, b]: [&str; 2],
        changes: &mut [Vec<Change>; 2],
    ) -> Result<(), SyncError> {
        for (side, store) in [(b, &mut *sb), (a, &mut *sa)] {
            if !timed(side, "fence", store.fence(&self.unit, self.token)).await? {
                return Err(SyncError::Fenced {
                    unit: self.unit.clone(),
                });
            }
        }
        for (si, side, store) in [(0usize, a, sa), (1, b, sb)] {
            let r = &mut changes[si];
            let seqs: Vec<i64> = r.iter().map(|c| c.seq).collect();
            let live = timed(side, "existing", store.existing(&seqs)).await?;
            self.gone[si] = seqs.into_iter().filter(|q| !live.contains(q)).collect();
            r.retain(|c| live.contains(&c.seq));
        }
        Ok(())
    }

    fn in_flight(&self) -> impl Iterator<Item = i64> + '_ {
        std::iter::empty()
    }

    fn unapply(&mut self) -> [Vec<i64>; 2] {
        std::mem::take(&mut self.prune)
    }

    async fn idle(&mut self, _stores: [&mut Store; 2], _sides: [&str; 2]) -> Result<(), SyncError> {
        Ok(())
    }

    /// Messages are acknowledged only once their rows are gone, so the first side's consumed
    /// rows are deleted at once; then the messages of both sides' consumed rows are
    /// acknowledged, and the next round drops the checkpoint entries that guarded them.
    async fn committed(
        &mut self,
        [sa, _]: [&mut Store; 2],
        [a, b]: [&str; 2],
        [consumed_a, consumed_b]: [Vec<i64>; 2],
    ) -> Result<(), SyncError> {
        delete_consumed(sa, a, self.checkpoint(b), consumed_a.clone()).await?;
        let [gone_a, gone_b] = std::mem::take(&mut self.gone);
        let done_a: HashSet<i64> = consumed_a.iter().copied().chain(gone_a).collect();
        let done_b: HashSet<i64> = consumed_b.iter().copied().chain(gone_b).collect();
        self.settle(a, &done_a, b, &done_b).await;
        self.prune = [consumed_a, consumed_b];
        Ok(())
    }
}
