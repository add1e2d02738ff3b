//! The sync engine's part of the file: `[sides.NAME]`, `[sync]` and `[[entities]]`, checked
//! for everything that can be checked without a database (names, policies, transforms).
//! Checks against the real schemas happen when the engine starts (`sync::mapping`).

mod check;
mod raw;

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::family::TypeFamily;
pub use check::from_raw;

#[derive(Debug, Clone, Default)]
pub struct SyncConfig {
    /// Databases by side name.
    pub sides: BTreeMap<String, SideConfig>,
    /// Entities in file order.
    pub entities: Vec<EntityConfig>,
    /// Engine settings.
    pub settings: SyncSettings,
    /// `[sync.broker]`: carry changes through NATS JetStream and share entities among workers.
    pub broker: Option<BrokerConfig>,
}

/// `[sync.broker]`: the NATS JetStream transport.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    /// Server address (`nats://host:port`).
    pub url: String,
    /// JetStream stream holding the changes (created when missing).
    pub stream: String,
    /// Subject prefix: changes go to `PREFIX.GROUP.SIDE`.
    pub subject: String,
    /// Key-value bucket holding the ownership leases (created when missing).
    pub bucket: String,
    /// This worker's name, stored in the leases it holds.
    pub worker: String,
    /// How long a lease lives without renewal: a dead worker's entities move after this.
    pub lease: Duration,
    /// The stream's de-duplication window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// Time a delivered change may stay unacknowledged before the server redelivers it.
    pub ack_wait: Duration,
}

/// `[sync]`: engine settings.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Poll interval when nothing wakes the engine.
    pub poll: Duration,
    /// Most changes read from one side per round (whole source transactions are kept).
    pub batch: usize,
    /// Capture timestamps further ahead of the engine's clock than this are clamped.
    pub max_clock_skew: Duration,
    /// Longest back-off between retries after a failure.
    pub retry_max: Duration,
    /// How often each entity's schema is re-read for drift.
    pub schema_check: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            poll: Duration::from_millis(50),
            batch: 5000,
            max_clock_skew: Duration::from_millis(500),
            retry_max: Duration::from_secs(5),
            schema_check: Duration::from_secs(1),
        }
    }
}

/// One side: a named database.
#[derive(Debug, Clone, PartialEq)]
pub struct SideConfig {
    /// Side name (`monolith`, `users`, …).
    pub name: String,
    /// `sqlite://FILE`, `postgres://…` or `mysql://…`.
    pub database: String,
}

/// An entity's table on one side.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityTable {
    /// Side name.
    pub side: String,
    /// Table name.
    pub table: String,
    /// Key columns (must be the primary key or a unique index).
    pub key: Vec<String>,
}

/// How a conflict on a row or a column is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// The later write by capture clock wins; ties go to deletes, then the larger image.
    LastWriteWins,
    /// The priority side wins.
    Priority,
    /// Columns changed on one side only keep that change; columns changed on both fall back to last-write-wins.
    FieldMerge,
    /// Numeric column: both sides' deltas are applied to the common base.
    Counter,
    /// The larger value wins.
    Max,
    /// The smaller value wins.
    Min,
    /// A non-null value beats a null; otherwise last-write-wins.
    PreferNonNull,
    /// A rule registered in code under this name.
    Custom(String),
}

impl Policy {
    /// Parses a policy name as written in the file.
    pub fn parse(text: &str) -> Result<Policy, String> {
        Ok(match text {
            "last_write_wins" => Policy::LastWriteWins,
            "priority" => Policy::Priority,
            "field_merge" => Policy::FieldMerge,
            "counter" => Policy::Counter,
            "max" => Policy::Max,
            "min" => Policy::Min,
            "prefer_non_null" => Policy::PreferNonNull,
            other => match other.strip_prefix("custom:") {
                Some(name) if !name.is_empty() => Policy::Custom(name.to_string()),
                _ => {
                    return Err(format!(
                        "unknown policy {other:?}; use last_write_wins, priority, field_merge, \
                         counter, max, min, prefer_non_null or custom:NAME"
                    ));
                }
            },
        })
    }

    /// The policy's name as written in the file.
    pub fn name(&self) -> String {
        match self {
            Policy::LastWriteWins => "last_write_wins".into(),
            Policy::Priority => "priority".into(),
            Policy::FieldMerge => "field_merge".into(),
            Policy::Counter => "counter".into(),
            Policy::Max => "max".into(),
            Policy::Min => "min".into(),
            Policy::PreferNonNull => "prefer_non_null".into(),
            Policy::Custom(n) => format!("custom:{n}"),
        }
    }
}

/// A value transform between the entity's left side (`columns_from`) and its right side.
/// Each is written left → right; the engine applies the inverse right → left.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Lower-case the left column's text on its way right (the way back is unchanged).
    Lower(String),
    /// Upper-case on its way right.
    Upper(String),
    /// Trim whitespace on its way right.
    Trim(String),
    /// Cast the left column to this type on the right (and back to the left's type).
    Cast(String, TypeFamily),
    /// A right column with no left counterpart, set to a constant when a row is inserted on the right.
    Default(String, serde_json::Value),
    /// Split one left column into two right columns at the first separator; joined on the way back.
    Split {
        /// Left column.
        column: String,
        /// Right columns.
        into: [String; 2],
        /// Separator.
        separator: String,
    },
    /// Join two left columns into one right column; split at the first separator on the way back.
    Join {
        /// Left columns.
        columns: [String; 2],
        /// Right column.
        into: String,
        /// Separator.
        separator: String,
    },
}

/// One entity: a table and key on each of two sides, mapped column by column.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityConfig {
    /// Entity name.
    pub name: String,
    /// The side the column map is written from.
    pub left: EntityTable,
    /// The other side.
    pub right: EntityTable,
    /// Left column → right column renames, key columns included.
    pub columns: Vec<(String, String)>,
    /// Value transforms.
    pub transforms: Vec<Transform>,
    /// Source of truth for repair.
    pub authority: String,
    /// Side that wins under the priority policy (default: the authority).
    pub priority: String,
    /// Row policy.
    pub conflict: Policy,
    /// Per-column overrides, by left column name.
    pub column_conflict: BTreeMap<String, Policy>,
    /// Lag above which the entity is flagged.
    pub lag_tolerance: Duration,
    /// Ownership unit in broker mode: entities of one group move together (default: the name).
    pub group: String,
    /// What a change that cannot be decoded, mapped or applied does to the entity.
    pub on_error: OnError,
    /// How the consistency validator compares the two sides.
    pub validation: Validation,
    /// Whether `serve` and `sync run` copy the authority's existing rows to the other side.
    pub backfill: bool,
}

/// `validate = { ... }` of an entity: how its two sides are compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Validation {
    /// Strict, eventual or sampled.
    pub level: Level,
    /// Relative tolerance of floating-point columns (0: exact).
    pub float_tolerance: f64,
    /// Per left column: text comparison rules.
    pub text: BTreeMap<String, TextRule>,
    /// Continuous mode: a full pass this often (`None`: only on demand).
    pub interval: Option<Duration>,
}

impl Default for Validation {
    fn default() -> Self {
        Validation {
            level: Level::Strict,
            float_tolerance: 0.0,
            text: BTreeMap::new(),
            interval: None,
        }
    }
}

/// How strictly the validator reads a difference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Level {
    /// Every difference is reported.
    Strict,
    /// A difference on a row changed within the lag tolerance is re-checked after it passes.
    Eventual,
    /// A random share of the keys (0 < share ≤ 1) is compared.
    Sampled(f64),
}

/// A text comparison rule for one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRule {
    /// Trailing spaces do not count.
    TrimTrailing,
    /// Letter case does not count.
    IgnoreCase,
    /// Neither trailing spaces nor letter case count.
    TrimTrailingIgnoreCase,
}

/// What a change that cannot be decoded, mapped or applied does to its entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The change (and later changes to its key) is set aside; the rest goes on.
    Quarantine,
    /// The whole entity stops until an operator acts.
    Pause,
}

impl EntityConfig {
    /// The entity's table on `side`.
    pub fn table(&self, side: &str) -> Option<&EntityTable> {
        [&self.left, &self.right]
            .into_iter()
            .find(|t| t.side == side)
    }
}
