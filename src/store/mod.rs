//! Database access for the sync engine, one backend per database kind: schema introspection,
//! installing capture (changelog table and triggers), reading captured changes, and applying
//! a batch of writes together with its checkpoint in one transaction.

mod capture;
mod instant;
mod mysql;
mod postgres;
mod sqlite;

pub use capture::Capture;
pub use instant::utc_naive;

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::family::TypeFamily;

/// A row image: column → value.
pub type Row = Map<String, Value>;

/// PostgreSQL's own words for an error: the server's message and detail, where
/// `tokio_postgres` alone would say only "db error".
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({}): {d}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

/// Separator of key values in a changelog key text.
pub const KEY_SEPARATOR: char = '\u{1f}';

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no.
    #[error("postgres: {}", pg_message(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// MariaDB / MySQL said no.
    #[error("mysql: {0}")]
    Mysql(#[from] mysql_async::Error),
    /// A stored image did not parse.
    #[error("changelog row {seq}: image is not a JSON object: {message}")]
    Image {
        /// Changelog sequence number.
        seq: i64,
        /// Parser message.
        message: String,
    },
    /// The blocking worker died.
    #[error("sqlite worker failed: {0}")]
    Worker(String),
    /// The URL is not one we know.
    #[error("unsupported database URL {0:?}")]
    Url(String),
    /// A MariaDB / MySQL URL that does not parse.
    #[error("mysql URL: {0}")]
    MysqlUrl(#[from] mysql_async::UrlError),
    /// A value cannot be written to this database.
    #[error("{0}")]
    Value(String),
}

/// What a captured change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// Row inserted.
    Insert,
    /// Row updated.
    Update,
    /// Row deleted.
    Delete,
}

impl Op {
    fn parse(s: &str) -> Op {
        match s {
            "I" => Op::Insert,
            "D" => Op::Delete,
            _ => Op::Update,
        }
    }
}

/// One captured change, as read from a side's changelog.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// Changelog sequence number on its side.
    pub seq: i64,
    /// Table.
    pub table: String,
    /// Operation.
    pub op: Op,
    /// Row before (updates, deletes).
    pub old: Option<Row>,
    /// Row after (inserts, updates).
    pub new: Option<Row>,
    /// Source transaction id, where the database exposes one.
    pub tx: Option<String>,
    /// Capture time by the database's clock, Unix µs.
    pub ts_us: i64,
    /// Key values joined by [`KEY_SEPARATOR`].
    pub pk: String,
    /// Why an image of this change could not be decoded; such a change is quarantined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poison: Option<String>,
}

/// A column as the database describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Name.
    pub name: String,
    /// Declared type, as the database spells it.
    pub declared: String,
    /// Type family.
    pub family: TypeFamily,
    /// NULL allowed.
    pub nullable: bool,
    /// Has a default (or is generated).
    pub has_default: bool,
    /// How the column holds values beyond what its family says.
    pub form: Form,
}

/// How a column holds values beyond what its family says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Form {
    /// As the family says.
    #[default]
    Plain,
    /// A date-time without a zone: an instant is written into it as its UTC time.
    UtcNaive,
    /// A JSON document kept as its text (SQLite, MariaDB): every value is written serialized.
    JsonText,
}

/// A table's columns and unique keys.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    /// Columns in table order.
    pub columns: Vec<Column>,
    /// Primary key and unique indexes, each as its column list.
    pub unique_keys: Vec<Vec<String>>,
    /// Foreign keys declared on the table.
    pub foreign_keys: Vec<ForeignKey>,
    /// Indexes, unique or not, the primary key's included where the database lists it as one.
    pub indexes: Vec<Index>,
}

/// A declared foreign key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// Columns of this table, in key order.
    pub columns: Vec<String>,
    /// The referenced table.
    pub table: String,
    /// The referenced columns, in the same order.
    pub references: Vec<String>,
}

/// An index on plain columns (an expression's part is left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Name.
    pub name: String,
    /// Columns, in index order.
    pub columns: Vec<String>,
    /// Whether it enforces uniqueness.
    pub unique: bool,
}

impl TableInfo {
    /// Looks up a column.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Whether `key` (in any order) is the primary key or a unique index.
    pub fn is_unique(&self, key: &[String]) -> bool {
        let want: HashSet<&String> = key.iter().collect();
        self.unique_keys
            .iter()
            .any(|k| k.len() == key.len() && k.iter().all(|c| want.contains(c)))
    }
}

/// A table to capture.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSpec {
    /// Table.
    pub table: String,
    /// Key columns.
    pub key: Vec<String>,
}

/// One write the engine applies.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Insert, or update the given columns of the existing row.
    Upsert {
        /// Table.
        table: String,
        /// Key columns (a unique key of the table).
        key: Vec<String>,
        /// Columns to write, key included.
        row: Row,
        /// Extra columns set only when the row is new.
        insert_only: Row,
        /// Binary columns: their values are `\x`-and-hex text, written as bytes.
        bytes: Vec<String>,
    },
    /// Delete by key.
    Delete {
        /// Table.
        table: String,
        /// Key column → value.
        key: Row,
    },
}

impl Write {
    /// Table written.
    pub fn table(&self) -> &str {
        match self {
            Write::Upsert { table, .. } | Write::Delete { table, .. } => table,
        }
    }

    /// Key text as the changelog stores it.
    pub fn pk(&self) -> String {
        match self {
            Write::Upsert { key, row, .. } => key_text(key.iter().map(|k| row.get(k))),
            Write::Delete { key, .. } => key_text(key.values().map(Some)),
        }
    }
}

/// Renders key values the way every backend's trigger renders them.
pub fn key_text<'a>(values: impl Iterator<Item = Option<&'a Value>>) -> String {
    let mut out = String::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(KEY_SEPARATOR);
        }
        match v {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
    }
    out
}

/// One target transaction: writes, the checkpoint they carry, and changelog housekeeping.
#[derive(Debug, Clone, Default)]
pub struct ApplyBatch {
    /// Writes in order.
    pub writes: Vec<Write>,
    /// Side the changes came from.
    pub source: String,
    /// Source changelog sequence numbers this batch covers (the checkpoint).
    pub applied: Vec<i64>,
    /// Checkpoint entries for `source` below this are no longer needed.
    pub prune_below: Option<i64>,
    /// This side's own changelog rows to delete (already applied to the peer).
    pub consumed: Vec<i64>,
    /// This side's changelog rows read this round: anything else on a written key is a race.
    pub seen: HashSet<i64>,
    /// Checkpoint entries for `source` to delete (their changelog rows are gone for good).
    pub unapply: Vec<i64>,
}

/// A side's database.
pub enum Store {
    /// Embedded SQLite file.
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL.
    Postgres(Box<postgres::PgStore>),
    /// MariaDB / MySQL.
    Mysql(Box<mysql::MyStore>),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
            Store::Mysql($s) => $e,
        }
    };
}

impl Store {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(Store::Sqlite(sqlite::SqliteStore::open(path).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store::Postgres(Box::new(
                postgres::PgStore::connect(url).await?,
            )))
        } else if url.starts_with("mysql://") {
            Ok(Store::Mysql(Box::new(mysql::MyStore::connect(url).await?)))
        } else {
            Err(StoreError::Url(url.to_string()))
        }
    }

    /// The backend's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
            Store::Mysql(_) => "mysql",
        }
    }

    /// The side's change capture.
    pub fn capture(&mut self) -> &mut dyn Capture {
        match self {
            Store::Sqlite(s) => s,
            Store::Postgres(s) => &mut **s,
            Store::Mysql(s) => &mut **s,
        }
    }

    /// The side's change capture, for reading only.
    fn capture_ref(&self) -> &dyn Capture {
        match self {
            Store::Sqlite(s) => s,
            Store::Postgres(s) => &**s,
            Store::Mysql(s) => &**s,
        }
    }

    /// A table's columns and keys; `None` when there is no such table.
    pub async fn table_info(&mut self, table: &str) -> Result<Option<TableInfo>, StoreError> {
        each!(self, s => s.table_info(table).await)
    }

    /// Creates the changelog and the capture triggers (idempotent); `outbox` adds the
    /// published flag the broker relay needs.
    pub async fn install(&mut self, specs: &[CaptureSpec], outbox: bool) -> Result<(), StoreError> {
        self.capture().install(specs, outbox).await
    }

    /// Removes the triggers, the changelog and every other table the engine made.
    pub async fn uninstall(&mut self, tables: &[String]) -> Result<(), StoreError> {
        self.capture().uninstall(tables).await
    }

    /// Whether capture is installed.
    pub async fn installed(&mut self) -> Result<bool, StoreError> {
        self.capture().installed().await
    }

    /// Up to about `limit` committed changes in sequence order, never splitting a source
    /// transaction where the database names it.
    pub async fn read_changes(
        &mut self,
        limit: usize,
        tables: &[String],
    ) -> Result<Vec<Change>, StoreError> {
        self.read(limit, tables, false).await
    }

    /// Like [`Store::read_changes`], but only changes the broker relay has not published.
    pub async fn read_unpublished(
        &mut self,
        limit: usize,
        tables: &[String],
    ) -> Result<Vec<Change>, StoreError> {
        self.read(limit, tables, true).await
    }

    /// Marks changes as published to the broker.
    pub async fn mark_published(&mut self, seqs: &[i64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.capture().mark_published(seqs).await
    }

    /// Which of `seqs` are still in this side's changelog (not yet consumed).
    pub async fn existing(&mut self, seqs: &[i64]) -> Result<HashSet<i64>, StoreError> {
        if seqs.is_empty() {
            return Ok(HashSet::new());
        }
        self.capture().existing(seqs).await
    }

    /// Inside the open transaction: records that the holder of `token` works on `unit`;
    /// false when a holder with a newer token already has (this one lost its lease).
    pub async fn fence(&mut self, unit: &str, token: i64) -> Result<bool, StoreError> {
        each!(self, s => s.fence(unit, token).await)
    }

    async fn read(
        &mut self,
        limit: usize,
        tables: &[String],
        unpublished: bool,
    ) -> Result<Vec<Change>, StoreError> {
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = self
            .capture()
            .read_changes(limit + 1, tables, unpublished)
            .await?;
        if rows.len() > limit {
            let last_tx = rows[limit].tx.clone();
            rows.truncate(limit);
            if let Some(tx) = last_tx {
                // Drop the trailing part of a transaction that continues past the limit,
                // unless it is the only one: then read it whole.
                let keep = rows.iter().rposition(|c| c.tx.as_ref() != Some(&tx));
                match keep {
                    Some(i) => rows.truncate(i + 1),
                    None => {
                        rows = self.capture().read_tx(&tx).await?;
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Every change of source transaction `tx` still in the changelog, in order.
    pub async fn read_transaction(&mut self, tx: &str) -> Result<Vec<Change>, StoreError> {
        self.capture().read_tx(tx).await
    }

    /// Which of `seqs` from `source` this side has already applied.
    pub async fn applied(
        &mut self,
        source: &str,
        seqs: &[i64],
    ) -> Result<HashSet<i64>, StoreError> {
        if seqs.is_empty() {
            return Ok(HashSet::new());
        }
        each!(self, s => s.applied(source, seqs).await)
    }

    /// Opens the engine's transaction on this side (its writes are not captured).
    pub async fn begin(&mut self) -> Result<(), StoreError> {
        each!(self, s => s.begin().await)
    }

    /// Inside the open transaction: locks the rows with these keys of `table` so no other
    /// writer can change them until the transaction ends.
    pub async fn lock_keys(&mut self, table: &str, keys: &[Row]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        each!(self, s => s.lock_keys(table, keys).await)
    }

    /// Inside the open transaction: changes on these (table, key text) pairs not in `seen`.
    /// `anywhere`: also look below the highest seen sequence (changes may arrive out of order).
    pub async fn fetch_unseen(
        &mut self,
        keys: &HashSet<(String, String)>,
        seen: &HashSet<i64>,
        anywhere: bool,
    ) -> Result<Vec<Change>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let after = if anywhere {
            None
        } else {
            Some(seen.iter().copied().max().unwrap_or(0))
        };
        let mut found = self.capture().fetch_keys(keys, after).await?;
        found.retain(|c| !seen.contains(&c.seq) && keys.contains(&(c.table.clone(), c.pk.clone())));
        found.sort_by_key(|c| c.seq);
        Ok(found)
    }

    /// Inside the open transaction: runs a batch. `Ok(false)`: a written key has a change
    /// that was not seen (the caller rolls back).
    pub async fn write_batch(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError> {
        each!(self, s => s.write_batch(batch).await)
    }

    /// Runs a batch inside a new transaction, uncaptured, and leaves it open for
    /// [`Store::finish`]. `Ok(false)`: rolled back already, because a written key has a
    /// change on this side that was not read this round.
    pub async fn prepare(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError> {
        self.begin().await?;
        let r = self.write_batch(batch).await;
        if !matches!(r, Ok(true)) {
            let _ = self.finish(false).await;
        }
        r
    }

    /// Commits (or rolls back) the transaction [`Store::prepare`] left open.
    pub async fn finish(&mut self, commit: bool) -> Result<(), StoreError> {
        each!(self, s => s.finish(commit).await)
    }

    /// Applies a batch in one transaction; see [`Store::prepare`].
    pub async fn apply(&mut self, batch: &ApplyBatch) -> Result<bool, StoreError> {
        if !self.prepare(batch).await? {
            return Ok(false);
        }
        self.finish(true).await?;
        Ok(true)
    }

    /// Woken when the database signals a new capture (PostgreSQL `NOTIFY`; on SQLite, a
    /// thread watching the file's data version).
    pub fn notified(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.capture_ref().notified()
    }

    /// Changes waiting in this side's changelog.
    pub async fn backlog(&mut self) -> Result<i64, StoreError> {
        self.capture().backlog().await
    }
}

/// Bytes from the `\x`-and-hex text of a binary value, if `v` is that.
pub fn hex_bytes(v: &Value) -> Option<Vec<u8>> {
    let hex = v.as_str()?.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Maps a declared column type to its family.
pub fn family(declared: &str) -> TypeFamily {
    let t = declared.to_ascii_lowercase();
    if t.contains("interval") || t.contains("date") || t.contains("time") {
        TypeFamily::Time
    } else if t.contains("bool") {
        TypeFamily::Boolean
    } else if t.contains("int") || t == "serial" || t == "bigserial" {
        TypeFamily::Integer
    } else if ["real", "floa", "doub", "numeric", "decimal", "money"]
        .iter()
        .any(|k| t.contains(k))
    {
        TypeFamily::Real
    } else if t.contains("json") {
        TypeFamily::Json
    } else if t.contains("blob") || t.contains("bytea") || t.contains("binary") {
        TypeFamily::Blob
    } else {
        TypeFamily::Text
    }
}

/// A changelog row as the backends read it: seq, table, op, old, new, tx, ts, key text.
type ChangeRow = (
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    String,
);

/// Turns a changelog row into a [`Change`].
fn to_change(row: ChangeRow) -> Result<Change, StoreError> {
    Ok(decoded(row))
}

/// A change from its changelog columns. An image that cannot be decoded does not fail the
/// read (one bad row must never stop the stream): the change carries the reason instead.
fn decoded((seq, table, op, old, new, tx, ts_us, pk): ChangeRow) -> Change {
    let (old, new, poison) = match (image(seq, old), image(seq, new)) {
        (Ok(old), Ok(new)) => (old, new, None),
        (Err(e), _) | (_, Err(e)) => (None, None, Some(e.to_string())),
    };
    Change {
        seq,
        table,
        op: Op::parse(&op),
        old,
        new,
        tx,
        ts_us,
        pk,
        poison,
    }
}

/// Changelog rows to changes.
fn changes(rows: Vec<ChangeRow>) -> Result<Vec<Change>, StoreError> {
    rows.into_iter().map(to_change).collect()
}

/// Whether two writes can go in one statement (same kind, table and columns).
fn same_run(a: &Write, b: &Write) -> bool {
    match (a, b) {
        (
            Write::Upsert {
                table: t1,
                row: r1,
                insert_only: i1,
                ..
            },
            Write::Upsert {
                table: t2,
                row: r2,
                insert_only: i2,
                ..
            },
        ) => t1 == t2 && r1.keys().eq(r2.keys()) && i1.keys().eq(i2.keys()),
        (Write::Delete { table: t1, key: k1 }, Write::Delete { table: t2, key: k2 }) => {
            t1 == t2 && k1.keys().eq(k2.keys())
        }
        _ => false,
    }
}

/// Parses a stored JSON image.
fn image(seq: i64, text: Option<String>) -> Result<Option<Row>, StoreError> {
    match text {
        None => Ok(None),
        Some(t) => match serde_json::from_str::<Value>(&t) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(StoreError::Image {
                seq,
                message: "not an object".into(),
            }),
            Err(e) => Err(StoreError::Image {
                seq,
                message: e.to_string(),
            }),
        },
    }
}

/// Quotes an identifier with double quotes (SQLite, PostgreSQL).
fn dq(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes an identifier with backticks (MariaDB / MySQL).
fn bq(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// Whether the race check finds a change on a written key that was not read this round.
fn raced(
    written: &HashSet<(String, String)>,
    found: Vec<(i64, String, String)>,
    seen: &HashSet<i64>,
) -> bool {
    found
        .into_iter()
        .any(|(seq, tbl, pk)| !seen.contains(&seq) && written.contains(&(tbl, pk)))
}

/// The (table, key text) pairs a batch writes.
fn written_keys(batch: &ApplyBatch) -> HashSet<(String, String)> {
    batch
        .writes
        .iter()
        .map(|w| (w.table().to_string(), w.pk()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_key_text() {
        assert_eq!(family("BIGINT"), TypeFamily::Integer);
        assert_eq!(family("character varying(20)"), TypeFamily::Text);
        assert_eq!(family("timestamp with time zone"), TypeFamily::Time);
        assert_eq!(family("numeric(10,2)"), TypeFamily::Real);
        assert_eq!(family("jsonb"), TypeFamily::Json);
        let a = Value::from(7);
        let b = Value::from("x");
        assert_eq!(key_text([Some(&a), Some(&b)].into_iter()), "7\u{1f}x");
    }
}
