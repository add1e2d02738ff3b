//! Leases: a worker holds a group's lease (a JetStream key-value entry that expires unless
//! renewed) while it runs the group; a standby takes over an unrenewed lease by
//! compare-and-set. The lease's revision fences the holder's writes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::sync::BrokerConfig;
use crate::metrics as m;
use crate::sync::shared::Shared;

/// Holds `unit`'s lease whenever it can and runs `start(token, cancel)` while it does.
pub(super) async fn hold<F, Fut>(
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
pub(super) async fn standby(
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
