//! The sync sections as written in the file, before any check.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSide {
    pub(super) database: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    pub(super) poll: Option<String>,
    pub(super) batch: Option<usize>,
    pub(super) max_clock_skew: Option<String>,
    pub(super) retry_max: Option<String>,
    pub(super) schema_check: Option<String>,
    pub(super) broker: Option<RawBroker>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBroker {
    pub(super) url: String,
    pub(super) stream: Option<String>,
    pub(super) subject: Option<String>,
    pub(super) bucket: Option<String>,
    pub(super) worker: Option<String>,
    pub(super) lease: Option<String>,
    pub(super) duplicate_window: Option<String>,
    pub(super) ack_wait: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTable {
    pub(super) table: String,
    pub(super) key: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTransform {
    pub(super) column: Option<String>,
    pub(super) op: Option<String>,
    pub(super) cast: Option<String>,
    pub(super) default: Option<toml::Value>,
    pub(super) split: Option<String>,
    pub(super) join: Option<Vec<String>>,
    pub(super) into: Option<toml::Value>,
    pub(super) separator: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawEntity {
    pub(super) name: String,
    #[serde(default)]
    pub(super) columns: BTreeMap<String, String>,
    pub(super) columns_from: Option<String>,
    #[serde(default)]
    pub(super) transforms: Vec<RawTransform>,
    pub(super) authority: Option<String>,
    pub(super) priority: Option<String>,
    pub(super) conflict: Option<String>,
    #[serde(default)]
    pub(super) column_conflict: BTreeMap<String, String>,
    pub(super) lag_tolerance: Option<String>,
    pub(super) group: Option<String>,
    pub(super) on_error: Option<String>,
    pub(super) validate: Option<RawValidate>,
    pub(super) backfill: Option<bool>,
    #[serde(flatten)]
    pub(super) tables: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValidate {
    pub(super) level: Option<String>,
    pub(super) sample: Option<f64>,
    pub(super) float_tolerance: Option<f64>,
    #[serde(default)]
    pub(super) text: BTreeMap<String, String>,
    pub(super) interval: Option<String>,
}
