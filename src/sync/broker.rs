//! Broker mode: captured changes travel through NATS JetStream, and several workers share the
//! work. Each side's changelog doubles as an outbox: a relay publishes unpublished rows, one
//! message per source transaction and group, to `PREFIX.GROUP.SIDE` with a `Nats-Msg-Id`
//! made of the rows it carries (a re-publish after a crash is de-duplicated by the stream),
//! then flags them published. Each group of entities has a durable pull consumer; the worker
//! that holds the group's lease (a key in a JetStream key-value bucket that expires unless
//! renewed) runs the group's apply loop on the messages and acknowledges them once applied.
//! A worker that dies stops renewing; a standby that sees the key unrenewed for a whole lease
//! takes it over by compare-and-set and carries on from the consumer's unacknowledged messages. The lease's revision is a fencing token written in
//! every apply transaction, so a worker that lost its lease but has not noticed yet cannot
//! commit after its successor. Changes are applied exactly once in effect because a message
//! whose changelog row is gone was already applied and is skipped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, kv, stream};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::engine::{Shared, connect};
use super::error::{SyncError, timed};
use super::link::Link;
use crate::config::sync::{BrokerConfig, EntityConfig, SyncConfig};
use crate::metrics as m;
use crate::store::{Change, Store};

fn broker_err(e: impl std::fmt::Display) -> SyncError {
    SyncError::Broker(e.to_string())
}

/// A change message's payload, as published.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    changes: Vec<Change>,
    /// Set, with no `changes`, for a source transaction too large for one message: the
    /// worker reads it whole from the source changelog, where it stays until applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tx: Option<String>,
}

/// One delivered message and the changes it carries.
struct Held {
    stream_seq: u64,
    side: String,
    changes: Vec<Change>,
    /// A transaction sent by reference, not read from its changelog yet.
    unread: Option<String>,
    msg: jetstream::Message,
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
    /// The next round also reads the changelogs directly (set when the group is taken over).
    pub(super) sweep: bool,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    messages: Option<pull::Stream>,
    held: Vec<Held>,
    batch: usize,
    stalled: bool,
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
                .map_err(broker_err)?;
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
                    return Err(broker_err(e));
                }
                None => {
                    self.messages = None;
                    return Err(broker_err("the consumer's message stream ended"));
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

/// Connected JetStream handles.
struct Broker {
    js: jetstream::Context,
    stream: stream::Stream,
    leases: kv::Store,
    max_payload: usize,
}

async fn setup(b: &BrokerConfig) -> Result<Broker, SyncError> {
    let client = async_nats::ConnectOptions::new()
        .name(format!("strangler-sync {}", b.worker))
        .connection_timeout(Duration::from_secs(5))
        .connect(b.url.as_str())
        .await
        .map_err(|e| broker_err(format!("{}: {e}", b.url)))?;
    let max_payload = client.server_info().max_payload;
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: b.stream.clone(),
            subjects: vec![format!("{}.>", b.subject)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: b.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(|e| broker_err(format!("stream {:?}: {e}", b.stream)))?;
    let leases = match js.get_key_value(&b.bucket).await {
        Ok(kv) => kv,
        Err(_) => {
            // The bucket's stream made by hand, as `create_key_value` would: that call first
            // reads the account info, whose shape NATS 2.9 servers answer in a form the
            // client cannot parse.
            js.get_or_create_stream(stream::Config {
                name: format!("KV_{}", b.bucket),
                subjects: vec![format!("$KV.{}.>", b.bucket)],
                max_messages_per_subject: 1,
                max_age: b.lease,
                duplicate_window: b.lease.min(Duration::from_secs(120)),
                discard: stream::DiscardPolicy::New,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                storage: stream::StorageType::File,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| broker_err(format!("bucket {:?}: {e}", b.bucket)))?;
            js.get_key_value(&b.bucket)
                .await
                .map_err(|e| broker_err(format!("bucket {:?}: {e}", b.bucket)))?
        }
    };
    Ok(Broker {
        js,
        stream,
        leases,
        max_payload,
    })
}

/// Runs broker mode until `shutdown`: competes for every relay and group lease and runs the
/// units it wins.
pub(super) async fn run(
    cfg: SyncConfig,
    b: BrokerConfig,
    shared: Shared,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    let broker = loop {
        match setup(&b).await {
            Ok(x) => break Arc::new(x),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "broker: cannot connect; retrying");
                metrics::counter!(m::SYNC_RETRIES, "link" => "broker").increment(1);
                shared.status.set_link("broker", format!("retrying: {e}"));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(cfg.settings.retry_max);
            }
        }
    };
    shared
        .status
        .set_link("broker", format!("connected as {}", b.worker));
    let shared = Arc::new(shared);
    let tasks = tokio_util::task::TaskTracker::new();
    let mut groups: HashMap<String, Vec<EntityConfig>> = HashMap::new();
    let mut sides: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
    for e in &cfg.entities {
        groups.entry(e.group.clone()).or_default().push(e.clone());
        for t in [&e.left, &e.right] {
            let gs = sides
                .entry(t.side.clone())
                .or_default()
                .entry(t.table.clone())
                .or_default();
            if !gs.contains(&e.group) {
                gs.push(e.group.clone());
            }
        }
    }
    for (side, tables) in sides {
        let unit = format!("relay.{side}");
        let wake = shared.wakes.get(&format!("side:{side}")).cloned();
        let ctx = (
            cfg.clone(),
            b.clone(),
            broker.clone(),
            shared.clone(),
            side,
            Arc::new(tables),
            wake.unwrap_or_default(),
        );
        tasks.spawn(hold(
            broker.clone(),
            b.clone(),
            unit,
            shared.clone(),
            shutdown.clone(),
            move |_token, cancel| {
                let (cfg, b, broker, shared, side, tables, wake) = ctx.clone();
                relay(cfg, b, broker, shared, side, tables, wake, cancel)
            },
        ));
    }
    for (group, entities) in groups {
        let unit = format!("group.{group}");
        let ctx = (cfg.clone(), b.clone(), broker.clone(), shared.clone());
        let unit_name = unit.clone();
        tasks.spawn(hold(
            broker.clone(),
            b.clone(),
            unit,
            shared.clone(),
            shutdown.clone(),
            move |token, cancel| {
                let (cfg, b, broker, shared) = ctx.clone();
                let (group, entities, unit) = (group.clone(), entities.clone(), unit_name.clone());
                async move {
                    let consumer = match group_consumer(&broker, &b, &group).await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(unit = %unit, error = %e, "broker: cannot open the group's consumer");
                            return;
                        }
                    };
                    let feed = Feed {
                        unit: unit.clone(),
                        group,
                        token,
                        worker: b.worker.clone(),
                        prune: [Vec::new(), Vec::new()],
                        sweep: true,
                        consumer,
                        messages: None,
                        held: Vec::new(),
                        batch: cfg.settings.batch,
                        stalled: false,
                    };
                    Link::build(unit, &cfg, entities, &shared, Some(feed))
                        .run(cancel)
                        .await;
                }
            },
        ));
    }
    tasks.close();
    tasks.wait().await;
}

async fn group_consumer(
    broker: &Broker,
    b: &BrokerConfig,
    group: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>, SyncError> {
    let durable = format!("{}_{group}", b.subject);
    broker
        .stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: format!("{}.{group}.*", b.subject),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: b.ack_wait,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| broker_err(format!("consumer {durable:?}: {e}")))
}

/// Holds `unit`'s lease whenever it can and runs `start(token, cancel)` while it does.
async fn hold<F, Fut>(
    broker: Arc<Broker>,
    b: BrokerConfig,
    unit: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    start: F,
) where
    F: Fn(i64, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let kv = &broker.leases;
    let tick = (b.lease / 4).max(Duration::from_millis(50));
    // The holder's lease revision as this worker last saw it, and since when.
    let mut seen: Option<(u64, Instant)> = None;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let won = match kv.create(&unit, b.worker.clone().into()).await {
            Ok(rev) => Some(rev),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                standby(kv, &b, &unit, &shared, &mut seen).await
            }
            Err(e) => {
                tracing::warn!(unit = %unit, error = %e, "broker: lease request failed");
                shared.status.set_link(&unit, format!("retrying: {e}"));
                None
            }
        };
        if let Some(rev) = won {
            seen = None;
            tracing::info!(unit = %unit, worker = %b.worker, token = rev, "took ownership");
            metrics::gauge!(m::SYNC_OWNED, "unit" => unit.clone()).set(1.0);
            shared
                .status
                .set_link(&unit, format!("owned by {} (this worker)", b.worker));
            let cancel = shutdown.child_token();
            let mut task = tokio::spawn(start(rev as i64, cancel.clone()));
            let mut current = rev;
            let mut renewed = Instant::now();
            let lost = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break false,
                    _ = &mut task => break true,
                    _ = tokio::time::sleep(tick) => {
                        match kv.update(&unit, b.worker.clone().into(), current).await {
                            Ok(r) => {
                                current = r;
                                renewed = Instant::now();
                            }
                            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                                tracing::warn!(unit = %unit, "lease taken over by another worker");
                                break true;
                            }
                            Err(e) => {
                                if renewed.elapsed() >= b.lease {
                                    tracing::warn!(unit = %unit, error = %e, "could not renew the lease in time; letting go");
                                    break true;
                                }
                            }
                        }
                    }
                }
            };
            cancel.cancel();
            let _ = task.await;
            metrics::gauge!(m::SYNC_OWNED, "unit" => unit.clone()).set(0.0);
            // Hand over at once rather than after the lease runs out.
            let _ = kv.delete_expect_revision(&unit, Some(current)).await;
            if !lost {
                return;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// A standby worker's look at `unit`'s lease: takes it over (returning the new revision) when
/// its holder has not renewed it for a whole lease period as timed by this worker's own clock.
/// This does not wait for the broker to expire the dead holder's entry; the fencing token
/// stops a holder that is only slow.
async fn standby(
    kv: &kv::Store,
    b: &BrokerConfig,
    unit: &str,
    shared: &Shared,
    seen: &mut Option<(u64, Instant)>,
) -> Option<u64> {
    let entry = match kv.entry(unit).await {
        Ok(Some(entry)) => entry,
        // Gone or unreadable since the create: the next tick tries again.
        _ => return None,
    };
    let owner = String::from_utf8_lossy(&entry.value).into_owned();
    shared
        .status
        .set_link(unit, format!("standby (owned by {owner})"));
    match *seen {
        Some((rev, since)) if rev == entry.revision => {
            if since.elapsed() < b.lease {
                return None;
            }
            match kv
                .update(unit, b.worker.clone().into(), entry.revision)
                .await
            {
                Ok(r) => {
                    tracing::warn!(unit = %unit, holder = %owner, "lease not renewed for a whole period; taking it over");
                    Some(r)
                }
                // Renewed or taken by another standby in the meantime.
                Err(_) => None,
            }
        }
        _ => {
            *seen = Some((entry.revision, Instant::now()));
            None
        }
    }
}

/// The messages of one batch of changes from `side`: one per source transaction and group
/// (SQLite changes carry no transaction and go by runs), split further to fit `max_bytes`.
/// One message to publish: its group, its changes, and whether it carries them by reference
/// (a source transaction larger than `max_bytes`, read by the worker from the changelog so
/// that it is still applied in one target transaction).
type Outgoing = (String, Vec<Change>, bool);

fn messages(
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
fn size(changes: &[Change]) -> usize {
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
fn split(group: String, changes: Vec<Change>, max_bytes: usize, out: &mut Vec<Outgoing>) {
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
async fn relay(
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
                let payload = serde_json::to_vec(&body).map_err(broker_err)?;
                let ack = broker
                    .js
                    .send_publish(
                        format!("{}.{group}.{side}", b.subject),
                        jetstream::message::PublishMessage::build()
                            .payload(payload.into())
                            .message_id(id),
                    )
                    .await
                    .map_err(broker_err)?;
                acks.push(ack);
            }
            let mut duplicates = 0u64;
            for a in futures_util::future::join_all(
                acks.into_iter().map(std::future::IntoFuture::into_future),
            )
            .await
            {
                if a.map_err(broker_err)?.duplicate {
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
