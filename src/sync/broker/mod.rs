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

mod feed;
mod lease;
mod relay;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv, stream};
use tokio_util::sync::CancellationToken;

use crate::config::sync::{BrokerConfig, EntityConfig, SyncConfig};
use crate::metrics as m;
use crate::sync::error::SyncError;
use crate::sync::link::Link;
use crate::sync::shared::Shared;
use feed::*;
use lease::*;
use relay::*;

/// Maps a broker client's error to a [`SyncError`] saying what was being done.
fn broker_err<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> SyncError {
    let what = what.into();
    move |e| SyncError::Broker {
        what,
        source: e.into(),
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
        .map_err(broker_err(format!("connecting to {}", b.url)))?;
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
        .map_err(broker_err(format!("stream {:?}", b.stream)))?;
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
            .map_err(broker_err(format!("bucket {:?}", b.bucket)))?;
            js.get_key_value(&b.bucket)
                .await
                .map_err(broker_err(format!("bucket {:?}", b.bucket)))?
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
                        gone: [Vec::new(), Vec::new()],
                        sweep: true,
                        consumer,
                        messages: None,
                        held: Vec::new(),
                        batch: cfg.settings.batch,
                        stalled: false,
                    };
                    Link::build(unit, &cfg, entities, &shared, feed)
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
        .map_err(broker_err(format!("consumer {durable:?}")))
}
