//! Control state in PostgreSQL, for gateways on several machines. The connection is
//! re-established on the next call after it drops.

use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls};

use super::{AuditEntry, AuditRecord, ControlError, VersionRecord};

/// A PostgreSQL control database.
pub struct PgControl {
    url: String,
    client: Mutex<Option<Client>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS strangler_route_versions (
    version BIGINT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL,
    reason TEXT NOT NULL,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS strangler_rollouts (
    route TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS strangler_conflicts (
    id BIGSERIAL PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS strangler_audit (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    entity TEXT NOT NULL,
    body TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);";

async fn connect(url: &str) -> Result<Client, ControlError> {
    // A partition that drops packets must not hold the control lock for minutes.
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(std::time::Duration::from_secs(3));
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "control database connection closed");
        }
    });
    Ok(client)
}

impl PgControl {
    /// Connects and creates the tables if needed.
    pub async fn open(url: &str) -> Result<PgControl, ControlError> {
        let client = connect(url).await?;
        // Two gateways starting together may race on CREATE TABLE IF NOT EXISTS.
        client
            .batch_execute("SELECT pg_advisory_lock(4242001)")
            .await?;
        let created = client.batch_execute(SCHEMA).await;
        client
            .batch_execute("SELECT pg_advisory_unlock(4242001)")
            .await?;
        created?;
        Ok(PgControl {
            url: url.to_string(),
            client: Mutex::new(Some(client)),
        })
    }

    /// The connection, re-established first if it dropped.
    async fn client(&self) -> Result<MappedMutexGuard<'_, Client>, ControlError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(connect(&self.url).await?);
        }
        MutexGuard::try_map(guard, Option::as_mut).map_err(|_| ControlError::Disconnected)
    }

    pub(super) async fn insert_version<S: serde::Serialize>(
        &self,
        rec: &VersionRecord<S>,
    ) -> Result<bool, ControlError> {
        let spec = serde_json::to_string(&rec.spec)?;
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO strangler_route_versions (version, created_at_ms, reason, spec) VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO NOTHING",
                &[&(rec.version as i64), &(rec.created_at_ms as i64), &rec.reason, &spec],
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn versions<S: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        limit: usize,
    ) -> Result<Vec<VersionRecord<S>>, ControlError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT version, created_at_ms, reason, spec FROM strangler_route_versions ORDER BY version DESC LIMIT $1",
                &[&(limit as i64)],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let spec: String = row.try_get(3)?;
            out.push(VersionRecord {
                version: row.try_get::<_, i64>(0)? as u64,
                created_at_ms: row.try_get::<_, i64>(1)? as u64,
                reason: row.try_get(2)?,
                spec: serde_json::from_str(&spec)?,
            });
        }
        Ok(out)
    }

    pub(super) async fn latest_version(&self) -> Result<u64, ControlError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT coalesce(max(version), 0) FROM strangler_route_versions",
                &[],
            )
            .await?;
        Ok(row.try_get::<_, i64>(0)? as u64)
    }

    pub(super) async fn save_rollout(&self, route: &str, state: &str) -> Result<(), ControlError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO strangler_rollouts (route, state) VALUES ($1, $2) ON CONFLICT (route) DO UPDATE SET state = excluded.state",
            &[&route, &state],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn rollouts(&self) -> Result<Vec<(String, String)>, ControlError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT route, state FROM strangler_rollouts ORDER BY route",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub(super) async fn record_conflicts(&self, records: Vec<String>) -> Result<(), ControlError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO strangler_conflicts (record) SELECT unnest($1::text[])",
            &[&records],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn conflicts(&self, limit: usize) -> Result<Vec<String>, ControlError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT record FROM strangler_conflicts ORDER BY id DESC LIMIT $1",
                &[&(limit as i64)],
            )
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    pub(super) async fn append_audit(
        &self,
        entries: Vec<AuditEntry>,
        now: i64,
    ) -> Result<Vec<AuditRecord>, ControlError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // One appender at a time across every process sharing the database.
        tx.batch_execute("SELECT pg_advisory_xact_lock(4242002)")
            .await?;
        let mut last: Option<(i64, String)> = tx
            .query_opt(
                "SELECT seq, hash FROM strangler_audit ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await?
            .map(|r| Ok::<_, tokio_postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?;
        let stmt = tx
            .prepare(
                "INSERT INTO strangler_audit (seq, at_ms, kind, entity, body, prev, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let rec = AuditRecord::next(
                last.as_ref().map(|(s, h)| (*s, h.as_str())),
                now,
                &e.kind,
                &e.entity,
                e.body,
            );
            tx.execute(
                &stmt,
                &[
                    &rec.seq,
                    &rec.at_ms,
                    &rec.kind,
                    &rec.entity,
                    &rec.body,
                    &rec.prev,
                    &rec.hash,
                ],
            )
            .await?;
            last = Some((rec.seq, rec.hash.clone()));
            out.push(rec);
        }
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn audit(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, ControlError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT seq, at_ms, kind, entity, body, prev, hash FROM strangler_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    seq: r.try_get(0)?,
                    at_ms: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    entity: r.try_get(3)?,
                    body: r.try_get(4)?,
                    prev: r.try_get(5)?,
                    hash: r.try_get(6)?,
                })
            })
            .collect()
    }
}
