//! MyStore's change capture: installing and removing the triggers and changelog, reading
//! and publishing captured changes.

use super::*;

#[async_trait::async_trait]
impl Capture for MyStore {
    fn method(&self) -> &'static str {
        "triggers"
    }

    async fn backfill_progress(&mut self, entity: &str) -> Result<Option<String>, StoreError> {
        self.conn.query_drop(BACKFILL).await?;
        Ok(self
            .conn
            .exec_first(
                "SELECT progress FROM _strangler_backfill WHERE entity = ?",
                (entity,),
            )
            .await?)
    }

    async fn install(&mut self, specs: &[CaptureSpec], outbox: bool) -> Result<(), StoreError> {
        for s in SCHEMA {
            self.conn.query_drop(s).await?;
        }
        if outbox {
            // Portable between MariaDB and MySQL (MySQL has no ADD COLUMN IF NOT EXISTS).
            let has: Option<i64> = self
                .conn
                .query_first(
                    "SELECT count(*) FROM information_schema.columns WHERE table_schema = DATABASE() \
                     AND table_name = '_strangler_changes' AND column_name = 'pub'",
                )
                .await?;
            if has.unwrap_or(0) == 0 {
                self.conn
                    .query_drop(
                        "ALTER TABLE _strangler_changes ADD COLUMN pub TINYINT NOT NULL DEFAULT 0, \
                         ADD KEY _strangler_changes_unpub (pub, seq)",
                    )
                    .await?;
            }
        }
        let tx = self.tx_expression().await?;
        for s in specs {
            let info = self.table_info(&s.table).await?.ok_or_else(|| {
                StoreError::Value(format!("mysql: table {:?} does not exist", s.table))
            })?;
            let obj = |row: &str| image_object(&info, row);
            let pk = |row: &str| key_expr(&s.key, row);
            for (suffix, event, op, old, new, row) in [
                ("ai", "INSERT", "I", "NULL".to_string(), obj("NEW"), "NEW"),
                ("au", "UPDATE", "U", obj("OLD"), obj("NEW"), "NEW"),
                ("ad", "DELETE", "D", obj("OLD"), "NULL".to_string(), "OLD"),
            ] {
                let trig = bq(&format!("_strangler_{}_{suffix}", s.table));
                self.conn
                    .query_drop(format!("DROP TRIGGER IF EXISTS {trig}"))
                    .await?;
                self.conn
                    .query_drop(format!(
                        "CREATE TRIGGER {trig} AFTER {event} ON {t} FOR EACH ROW
                         BEGIN
                           IF @strangler_applying IS NULL THEN
                             SET @strangler_session = COALESCE(@strangler_session, UUID_SHORT());
                             INSERT INTO _strangler_changes (tbl, op, old, new, tx, ts, pk) VALUES (
                               {name}, '{op}', {old}, {new}, {tx},
                               CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED), {pk});
                           END IF;
                         END",
                        t = bq(&s.table),
                        name = lit_backslash(&s.table),
                        pk = pk(row),
                    ))
                    .await?;
            }
        }
        Ok(())
    }

    async fn uninstall(&mut self, _tables: &[String]) -> Result<(), StoreError> {
        let trigs: Vec<String> = self
            .conn
            .query(
                "SELECT trigger_name FROM information_schema.triggers \
                 WHERE trigger_schema = DATABASE() AND trigger_name LIKE '\\_strangler\\_%'",
            )
            .await?;
        for t in trigs {
            self.conn
                .query_drop(format!("DROP TRIGGER IF EXISTS {}", bq(&t)))
                .await?;
        }
        self.conn
            .query_drop(
                "DROP TABLE IF EXISTS _strangler_changes, _strangler_applied, _strangler_fence, _strangler_backfill",
            )
            .await?;
        Ok(())
    }

    async fn installed(&mut self) -> Result<bool, StoreError> {
        let n: Option<i64> = self
            .conn
            .query_first(
                "SELECT count(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = '_strangler_changes'",
            )
            .await?;
        Ok(n.unwrap_or(0) > 0)
    }

    async fn read_changes(
        &mut self,
        limit: usize,
        tables: &[String],
        unpublished: bool,
    ) -> Result<Vec<Change>, StoreError> {
        let only = if unpublished { "pub = 0 AND " } else { "" };
        let marks = vec!["?"; tables.len()].join(",");
        let mut params: Vec<My> = tables.iter().map(|t| My::from(t.as_str())).collect();
        params.push(My::UInt(limit as u64));
        let rows: Vec<ChangeRow> = self
            .conn
            .exec(
                format!(
                    "SELECT seq, tbl, op, old, new, tx, ts, pk FROM _strangler_changes \
                     WHERE {only}tbl IN ({marks}) ORDER BY seq LIMIT ?"
                ),
                Params::Positional(params),
            )
            .await?;
        changes(rows)
    }

    async fn mark_published(&mut self, seqs: &[i64]) -> Result<(), StoreError> {
        for chunk in seqs.chunks(MAX_PARAMS) {
            let marks = vec!["?"; chunk.len()].join(",");
            self.conn
                .exec_drop(
                    format!("UPDATE _strangler_changes SET pub = 1 WHERE seq IN ({marks})"),
                    Params::Positional(chunk.iter().map(|s| My::Int(*s)).collect()),
                )
                .await?;
        }
        Ok(())
    }

    async fn existing(&mut self, seqs: &[i64]) -> Result<HashSet<i64>, StoreError> {
        let mut out = HashSet::new();
        for chunk in seqs.chunks(MAX_PARAMS) {
            let marks = vec!["?"; chunk.len()].join(",");
            let rows: Vec<i64> = self
                .conn
                .exec(
                    format!("SELECT seq FROM _strangler_changes WHERE seq IN ({marks})"),
                    Params::Positional(chunk.iter().map(|s| My::Int(*s)).collect()),
                )
                .await?;
            out.extend(rows);
        }
        Ok(out)
    }

    async fn read_tx(&mut self, txid: &str) -> Result<Vec<Change>, StoreError> {
        let rows: Vec<ChangeRow> = self
            .conn
            .exec(
                "SELECT seq, tbl, op, old, new, tx, ts, pk FROM _strangler_changes WHERE tx = ? ORDER BY seq",
                (txid,),
            )
            .await?;
        changes(rows)
    }

    async fn fetch_keys(
        &mut self,
        keys: &HashSet<(String, String)>,
        _after: Option<i64>,
    ) -> Result<Vec<Change>, StoreError> {
        let keys: Vec<&(String, String)> = keys.iter().collect();
        let mut out = Vec::new();
        for chunk in keys.chunks(MAX_PARAMS / 2) {
            let marks = vec!["(?, ?)"; chunk.len()].join(",");
            let params: Vec<My> = chunk
                .iter()
                .flat_map(|(t, p)| [My::from(t.as_str()), My::from(p.as_str())])
                .collect();
            let rows: Vec<ChangeRow> = self
                .conn
                .exec(
                    format!(
                        "SELECT seq, tbl, op, old, new, tx, ts, pk FROM _strangler_changes WHERE (tbl, pk) IN ({marks})"
                    ),
                    Params::Positional(params),
                )
                .await?;
            out.extend(changes(rows)?);
        }
        Ok(out)
    }

    async fn backlog(&mut self) -> Result<i64, StoreError> {
        let n: Option<i64> = self
            .conn
            .query_first("SELECT count(*) FROM _strangler_changes")
            .await?;
        Ok(n.unwrap_or(0))
    }
}

/// The backfill progress table, made when first needed.
const BACKFILL: &str = "CREATE TABLE IF NOT EXISTS _strangler_backfill (entity VARCHAR(200) PRIMARY KEY, \
     progress LONGTEXT NOT NULL) ENGINE=InnoDB";

/// The SQL of a row's image as the triggers write it (`row`: the row's alias).
fn image_object(info: &TableInfo, row: &str) -> String {
    let parts: Vec<String> = info
        .columns
        .iter()
        .map(|c| {
            // JSON_OBJECT would put a binary value's raw bytes in a JSON string: binary
            // columns travel as `\x` and hex, like PostgreSQL's bytea text.
            let value = if c.family == TypeFamily::Blob {
                format!("CONCAT('\\\\x', HEX({row}.{}))", bq(&c.name))
            } else if c.declared.starts_with("timestamp") {
                // A TIMESTAMP reads in the writing session's zone: captured as its UTC
                // time, from the zone-free Unix time.
                format!(
                    "DATE_FORMAT(TIMESTAMP'1970-01-01 00:00:00' + INTERVAL \
                     CAST(UNIX_TIMESTAMP({row}.{c}) * 1000000 AS SIGNED) MICROSECOND, \
                     '%Y-%m-%d %H:%i:%s.%f+00:00')",
                    c = bq(&c.name)
                )
            } else {
                format!("{row}.{}", bq(&c.name))
            };
            format!("{}, {value}", lit_backslash(&c.name))
        })
        .collect();
    format!("JSON_OBJECT({})", parts.join(", "))
}

/// The SQL of a row's key text as the triggers write it.
fn key_expr(key: &[String], row: &str) -> String {
    let parts: Vec<String> = key
        .iter()
        .map(|k| format!("COALESCE({row}.{}, '')", bq(k)))
        .collect();
    format!("CONCAT_WS(CHAR(31), {})", parts.join(", "))
}

impl MyStore {
    /// Inside the open transaction: stores the backfill progress of `entity`.
    pub(super) async fn store_progress(
        &mut self,
        entity: &str,
        progress: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .exec_drop(
                "INSERT INTO _strangler_backfill (entity, progress) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE progress = VALUES(progress)",
                (entity, progress),
            )
            .await?;
        Ok(())
    }
}
