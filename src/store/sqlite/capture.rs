//! SqliteStore's change capture: installing and removing the triggers and changelog, reading
//! and publishing captured changes.

use super::*;

#[async_trait::async_trait]
impl Capture for SqliteStore {
    fn method(&self) -> &'static str {
        "triggers"
    }

    async fn backfill_progress(&mut self, entity: &str) -> Result<Option<String>, StoreError> {
        self.stored_progress(entity).await
    }

    async fn install(&mut self, specs: &[CaptureSpec], outbox: bool) -> Result<(), StoreError> {
        let specs = specs.to_vec();
        let mut infos = Vec::new();
        for s in &specs {
            let info = self.table_info(&s.table).await?.ok_or_else(|| {
                StoreError::Value(format!("sqlite: table {:?} does not exist", s.table))
            })?;
            infos.push(info);
        }
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute_batch(SCHEMA)?;
            if outbox {
                let has: i64 = tx.query_row(
                    "SELECT count(*) FROM pragma_table_info('_strangler_changes') WHERE name = 'pub'",
                    [],
                    |r| r.get(0),
                )?;
                if has == 0 {
                    tx.execute_batch(
                        "ALTER TABLE _strangler_changes ADD COLUMN pub INTEGER NOT NULL DEFAULT 0;
                         CREATE INDEX IF NOT EXISTS _strangler_changes_unpub ON _strangler_changes (seq) WHERE pub = 0;",
                    )?;
                }
            }
            for (s, info) in specs.iter().zip(&infos) {
                let obj = |row: &str| image_object(info, row);
                let pk = |row: &str| key_expr(&s.key, row);
                let name = s.table.replace('\'', "''");
                for (suffix, event, op, old, new, row) in [
                    ("ai", "INSERT", "I", "NULL".to_string(), obj("NEW"), "NEW"),
                    ("au", "UPDATE", "U", obj("OLD"), obj("NEW"), "NEW"),
                    ("ad", "DELETE", "D", obj("OLD"), "NULL".to_string(), "OLD"),
                ] {
                    let trig = dq(&format!("_strangler_{}_{suffix}", s.table));
                    tx.execute_batch(&format!(
                        "DROP TRIGGER IF EXISTS {trig};
                         CREATE TRIGGER {trig} AFTER {event} ON {t}
                         WHEN (SELECT applying FROM _strangler_guard) = 0
                         BEGIN
                           INSERT INTO _strangler_changes (tbl, op, old, new, tx, ts, pk)
                           VALUES ('{name}', '{op}', {old}, {new}, NULL, {NOW_US}, {pk});
                         END;",
                        t = dq(&s.table),
                        pk = pk(row),
                    ))?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn uninstall(&mut self, tables: &[String]) -> Result<(), StoreError> {
        let tables = tables.to_vec();
        self.with(move |c| {
            let tx = c.transaction()?;
            for t in &tables {
                for suffix in ["ai", "au", "ad"] {
                    tx.execute_batch(&format!(
                        "DROP TRIGGER IF EXISTS {};",
                        dq(&format!("_strangler_{t}_{suffix}"))
                    ))?;
                }
            }
            // Triggers of tables no longer in the config.
            let left: Vec<String> = tx
                .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '\\_strangler\\_%' ESCAPE '\\'")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for t in left {
                tx.execute_batch(&format!("DROP TRIGGER IF EXISTS {};", dq(&t)))?;
            }
            tx.execute_batch(
                "DROP TABLE IF EXISTS _strangler_changes;
                 DROP TABLE IF EXISTS _strangler_applied;
                 DROP TABLE IF EXISTS _strangler_guard;
                 DROP TABLE IF EXISTS _strangler_fence;
                 DROP TABLE IF EXISTS _strangler_backfill;",
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn installed(&mut self) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT 1 FROM sqlite_master WHERE name = '_strangler_changes'",
                [],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
        .await
    }

    async fn read_changes(
        &mut self,
        limit: usize,
        tables: &[String],
        unpublished: bool,
    ) -> Result<Vec<Change>, StoreError> {
        let tables = Value::from(tables.to_vec()).to_string();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(if unpublished {
                "SELECT seq, tbl, op, old, new, tx, ts, pk FROM _strangler_changes \
                 WHERE pub = 0 AND tbl IN (SELECT value FROM json_each(?2)) ORDER BY seq LIMIT ?1"
            } else {
                "SELECT seq, tbl, op, old, new, tx, ts, pk FROM _strangler_changes \
                 WHERE tbl IN (SELECT value FROM json_each(?2)) ORDER BY seq LIMIT ?1"
            })?;
            let rows = stmt.query_map(rusqlite::params![limit as i64, tables], change_row)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(to_change(r?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn mark_published(&mut self, seqs: &[i64]) -> Result<(), StoreError> {
        let seqs = Value::from(seqs.to_vec()).to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE _strangler_changes SET pub = 1 WHERE seq IN (SELECT value FROM json_each(?1))",
                [seqs],
            )?;
            Ok(())
        })
        .await
    }

    async fn existing(&mut self, seqs: &[i64]) -> Result<HashSet<i64>, StoreError> {
        let seqs = Value::from(seqs.to_vec()).to_string();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq FROM _strangler_changes WHERE seq IN (SELECT value FROM json_each(?1))",
            )?;
            let out = stmt
                .query_map([seqs], |r| r.get(0))?
                .collect::<Result<HashSet<i64>, _>>()?;
            Ok(out)
        })
        .await
    }

    async fn read_tx(&mut self, _tx: &str) -> Result<Vec<Change>, StoreError> {
        // SQLite triggers cannot see a transaction id; changes carry none.
        Ok(Vec::new())
    }

    async fn fetch_keys(
        &mut self,
        keys: &HashSet<(String, String)>,
        after: Option<i64>,
    ) -> Result<Vec<Change>, StoreError> {
        let keys: Vec<(String, String)> = keys.iter().cloned().collect();
        self.with(move |c| {
            // One writer at a time and AUTOINCREMENT: anything committed since the read has a
            // higher sequence number. Usually few rows; read them at once when they are.
            const AT_ONCE: i64 = 20_000;
            if let Some(after) = after {
                let mut recent = c.prepare_cached(
                    "SELECT seq, tbl, op, old, new, tx, ts, pk FROM _strangler_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let rows: Vec<ChangeRow> = recent
                    .query_map([after, AT_ONCE + 1], change_row)?
                    .collect::<Result<_, _>>()?;
                if (rows.len() as i64) <= AT_ONCE {
                    return rows.into_iter().map(to_change).collect();
                }
            }
            let mut stmt = c.prepare_cached(
                "SELECT seq, tbl, op, old, new, tx, ts, pk FROM _strangler_changes WHERE tbl = ?1 AND pk = ?2",
            )?;
            let mut out = Vec::new();
            for (t, pk) in &keys {
                let rows = stmt.query_map([t, pk], change_row)?;
                for r in rows {
                    out.push(to_change(r?)?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn backlog(&mut self) -> Result<i64, StoreError> {
        self.with(|c| Ok(c.query_row("SELECT count(*) FROM _strangler_changes", [], |r| r.get(0))?))
            .await
    }

    fn notified(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        // A watch thread, started on first use: SQLite has no cross-process notification, and
        // without it an idle engine would notice another connection's commit only at its poll.
        let watch = self.watch.get_or_init(|| {
            let notify = Arc::new(tokio::sync::Notify::new());
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (n, halt, path) = (notify.clone(), stop.clone(), self.path.clone());
            let watcher = move || {
                let Ok(c) = Connection::open(&path) else {
                    return;
                };
                let version = |c: &Connection| {
                    c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
                        .ok()
                };
                let mut last = version(&c);
                while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(WATCH_EVERY);
                    let now = version(&c);
                    if now != last {
                        last = now;
                        n.notify_one();
                    }
                }
            };
            if let Err(e) = std::thread::Builder::new()
                .name("strangler-sqlite-watch".into())
                .spawn(watcher)
            {
                tracing::warn!(error = %e, "no SQLite watch thread; the engine polls");
            }
            Watch { notify, stop }
        });
        Some(watch.notify.clone())
    }
}

/// The SQL of a row's image as the triggers write it (`row`: the row's alias).
fn image_object(info: &TableInfo, row: &str) -> String {
    let parts: Vec<String> = info
        .columns
        .iter()
        .map(|col| image_member(row, &col.name, col.family == TypeFamily::Json))
        .collect();
    format!("'{{' || {} || '}}'", parts.join(" || ',' || "))
}

/// The SQL of a row's key text as the triggers write it.
fn key_expr(key: &[String], row: &str) -> String {
    key.iter()
        .map(|k| format!("COALESCE(CAST({row}.{} AS TEXT), '')", dq(k)))
        .collect::<Vec<_>>()
        .join(" || char(31) || ")
}

impl SqliteStore {
    /// Inside the open transaction: stores the backfill progress of `entity`.
    pub(super) async fn store_progress(
        &mut self,
        entity: &str,
        progress: &str,
    ) -> Result<(), StoreError> {
        let (entity, progress) = (entity.to_string(), progress.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO _strangler_backfill (entity, progress) VALUES (?1, ?2) \
                 ON CONFLICT (entity) DO UPDATE SET progress = excluded.progress",
                rusqlite::params![entity, progress],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn stored_progress(
        &mut self,
        entity: &str,
    ) -> Result<Option<String>, StoreError> {
        let entity = entity.to_string();
        self.with(move |c| {
            c.execute_batch(BACKFILL)?;
            Ok(c.query_row(
                "SELECT progress FROM _strangler_backfill WHERE entity = ?1",
                [entity],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }
}

/// The backfill progress table, made when first needed.
const BACKFILL: &str = "CREATE TABLE IF NOT EXISTS _strangler_backfill (entity TEXT PRIMARY KEY, progress TEXT NOT NULL);";
