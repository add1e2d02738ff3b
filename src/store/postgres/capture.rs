//! PgStore's change capture: installing and removing the triggers and changelog, reading
//! and publishing captured changes.

use super::*;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _strangler_changes (
    seq bigserial PRIMARY KEY,
    tbl text NOT NULL, op char(1) NOT NULL, old text, new text, tx text,
    ts bigint NOT NULL, pk text NOT NULL);
CREATE INDEX IF NOT EXISTS _strangler_changes_key ON _strangler_changes (tbl, pk);
CREATE TABLE IF NOT EXISTS _strangler_checkpoint (
    id bigserial PRIMARY KEY, src text NOT NULL, hi bigint NOT NULL, seqs bigint[] NOT NULL);
CREATE INDEX IF NOT EXISTS _strangler_checkpoint_src ON _strangler_checkpoint (src, hi);
DO $mig$ BEGIN
  IF to_regclass('_strangler_applied') IS NOT NULL THEN
    INSERT INTO _strangler_checkpoint (src, hi, seqs)
      SELECT src, max(seq), array_agg(seq) FROM _strangler_applied GROUP BY src;
    DROP TABLE _strangler_applied;
  END IF;
END $mig$;
CREATE TABLE IF NOT EXISTS _strangler_fence (unit text PRIMARY KEY, token bigint NOT NULL);
CREATE TABLE IF NOT EXISTS _strangler_backfill (entity text PRIMARY KEY, progress text NOT NULL);
CREATE OR REPLACE FUNCTION _strangler_capture() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  r jsonb;
  k text := NULL;
  i int;
BEGIN
  IF current_setting('strangler.applying', true) = 'on' THEN RETURN NULL; END IF;
  IF TG_OP = 'DELETE' THEN r := to_jsonb(OLD); ELSE r := to_jsonb(NEW); END IF;
  FOR i IN 0 .. TG_NARGS - 1 LOOP
    IF i = 0 THEN k := coalesce(r ->> TG_ARGV[i], '');
    ELSE k := k || chr(31) || coalesce(r ->> TG_ARGV[i], ''); END IF;
  END LOOP;
  INSERT INTO _strangler_changes (tbl, op, old, new, tx, ts, pk) VALUES (
    TG_TABLE_NAME, left(TG_OP, 1),
    CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD)::text END,
    CASE WHEN TG_OP <> 'DELETE' THEN r::text END,
    pg_current_xact_id()::text,
    (extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
    k);
  PERFORM pg_notify('strangler_changes', TG_TABLE_NAME);
  RETURN NULL;
END
$fn$;";

/// The backfill progress table, made when first needed.
const BACKFILL: &str = "CREATE TABLE IF NOT EXISTS _strangler_backfill (entity text PRIMARY KEY, progress text NOT NULL)";

#[async_trait::async_trait]
impl Capture for PgStore {
    fn method(&self) -> &'static str {
        "triggers"
    }

    async fn backfill_progress(&mut self, entity: &str) -> Result<Option<String>, StoreError> {
        self.client.batch_execute(BACKFILL).await?;
        let row = self
            .client
            .query_opt(
                "SELECT progress FROM _strangler_backfill WHERE entity = $1",
                &[&entity],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn install(&mut self, specs: &[CaptureSpec], outbox: bool) -> Result<(), StoreError> {
        let tx = self.client.transaction().await?;
        // Serialize concurrent installs (CREATE OR REPLACE FUNCTION races otherwise).
        tx.batch_execute("SELECT pg_advisory_xact_lock(7305612)")
            .await?;
        tx.batch_execute(SCHEMA).await?;
        if outbox {
            tx.batch_execute(
                "ALTER TABLE _strangler_changes ADD COLUMN IF NOT EXISTS pub boolean NOT NULL DEFAULT false;
                 CREATE INDEX IF NOT EXISTS _strangler_changes_unpub ON _strangler_changes (seq) WHERE NOT pub;",
            )
            .await?;
        }
        // The WHEN condition keeps the engine's own writes from queueing a trigger call per
        // row at all (a fifth of a bulk copy's time in the server); the function checks too.
        for s in specs {
            let args: Vec<String> = s.key.iter().map(|k| lit(k)).collect();
            let trig = dq(&format!("_strangler_{}", s.table));
            tx.batch_execute(&format!(
                "DROP TRIGGER IF EXISTS {trig} ON {t};
                 CREATE TRIGGER {trig} AFTER INSERT OR UPDATE OR DELETE ON {t}
                 FOR EACH ROW WHEN (current_setting('strangler.applying', true) IS DISTINCT FROM 'on')
                 EXECUTE FUNCTION _strangler_capture({args});",
                t = dq(&s.table),
                args = args.join(", ")
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn uninstall(&mut self, _tables: &[String]) -> Result<(), StoreError> {
        let tx = self.client.transaction().await?;
        let rows = tx
            .query(
                "SELECT t.tgname::text, c.relname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
                 JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.proname = '_strangler_capture'",
                &[],
            )
            .await?;
        for r in rows {
            let (trig, table): (String, String) = (r.get(0), r.get(1));
            tx.batch_execute(&format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                dq(&trig),
                dq(&table)
            ))
            .await?;
        }
        tx.batch_execute(
            "DROP FUNCTION IF EXISTS _strangler_capture();
             DROP TABLE IF EXISTS _strangler_changes;
             DROP TABLE IF EXISTS _strangler_applied;
             DROP TABLE IF EXISTS _strangler_checkpoint;
             DROP TABLE IF EXISTS _strangler_fence;
             DROP TABLE IF EXISTS _strangler_backfill;",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn installed(&mut self) -> Result<bool, StoreError> {
        let r = self
            .client
            .query_one("SELECT to_regclass('_strangler_changes') IS NOT NULL", &[])
            .await?;
        Ok(r.get(0))
    }

    async fn read_changes(
        &mut self,
        limit: usize,
        tables: &[String],
        unpublished: bool,
    ) -> Result<Vec<Change>, StoreError> {
        let rows = self
            .query(
                if unpublished {
                    "SELECT seq, tbl, op::text, old, new, tx, ts, pk FROM _strangler_changes \
                     WHERE NOT pub AND tbl = ANY($2) ORDER BY seq LIMIT $1"
                } else {
                    "SELECT seq, tbl, op::text, old, new, tx, ts, pk FROM _strangler_changes \
                     WHERE tbl = ANY($2) ORDER BY seq LIMIT $1"
                },
                &[&(limit as i64), &tables],
            )
            .await?;
        Self::changes(rows)
    }

    async fn mark_published(&mut self, seqs: &[i64]) -> Result<(), StoreError> {
        self.execute(
            "UPDATE _strangler_changes SET pub = true WHERE seq = ANY($1)",
            &[&seqs],
        )
        .await?;
        Ok(())
    }

    async fn existing(&mut self, seqs: &[i64]) -> Result<HashSet<i64>, StoreError> {
        let rows = self
            .query(
                "SELECT seq FROM _strangler_changes WHERE seq = ANY($1)",
                &[&seqs],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn read_tx(&mut self, txid: &str) -> Result<Vec<Change>, StoreError> {
        let rows = self.query(
                "SELECT seq, tbl, op::text, old, new, tx, ts, pk FROM _strangler_changes WHERE tx = $1 ORDER BY seq",
                &[&txid],
            )
            .await?;
        Self::changes(rows)
    }

    async fn fetch_keys(
        &mut self,
        keys: &HashSet<(String, String)>,
        _after: Option<i64>,
    ) -> Result<Vec<Change>, StoreError> {
        let tables: Vec<&str> = keys
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let pks: Vec<&str> = keys.iter().map(|(_, p)| p.as_str()).collect();
        let rows = self
            .query(
                "SELECT seq, tbl, op::text, old, new, tx, ts, pk FROM _strangler_changes \
                 WHERE tbl = ANY($1) AND pk = ANY($2)",
                &[&tables, &pks],
            )
            .await?;
        Self::changes(rows)
    }

    async fn backlog(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .client
            .query_one("SELECT count(*) FROM _strangler_changes", &[])
            .await?
            .get(0))
    }

    fn notified(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        Some(self.notify.clone())
    }
}
