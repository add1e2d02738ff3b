//! Checks of the sync sections with errors that name the file, the entity and the field,
//! turning the raw sections into the typed config.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::raw::{RawBroker, RawEntity, RawSettings, RawSide, RawTable, RawTransform, RawValidate};
use super::*;
use crate::config::{ConfigError, parse_duration};

fn invalid(file: &str, place: String, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_string(),
        place,
        message: message.into(),
    }
}

fn positive(
    file: &str,
    place: &str,
    field: &str,
    text: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(text) = text else { return Ok(default) };
    let d =
        parse_duration(text).map_err(|e| invalid(file, place.into(), format!("{field}: {e}")))?;
    if d.is_zero() {
        return Err(invalid(
            file,
            place.into(),
            format!("{field}: must be greater than zero"),
        ));
    }
    Ok(d)
}

/// Validates the sync sections of a file.
pub fn from_raw(
    file: &str,
    sides: Option<&toml::Table>,
    settings: Option<&toml::Table>,
    entities: Option<&[toml::Table]>,
) -> Result<SyncConfig, ConfigError> {
    let mut out = SyncConfig::default();
    for (name, v) in sides.into_iter().flatten() {
        let place = format!("side {name:?}: ");
        let raw: RawSide = v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| invalid(file, place.clone(), e.message().to_string()))?;
        let known = ["sqlite://", "postgres://", "postgresql://", "mysql://"];
        if !known.iter().any(|p| raw.database.starts_with(p)) {
            return Err(invalid(
                file,
                place,
                format!(
                    "database: {:?} must start with sqlite://, postgres:// or mysql://",
                    raw.database
                ),
            ));
        }
        out.sides.insert(
            name.clone(),
            SideConfig {
                name: name.clone(),
                database: raw.database,
            },
        );
    }
    let s: RawSettings = match settings {
        Some(t) => toml::Value::Table(t.clone())
            .try_into()
            .map_err(|e: toml::de::Error| {
                invalid(file, "sync: ".into(), e.message().to_string())
            })?,
        None => RawSettings::default(),
    };
    let d = SyncSettings::default();
    out.settings = SyncSettings {
        poll: positive(file, "sync: ", "poll", s.poll.as_deref(), d.poll)?,
        batch: match s.batch {
            Some(0) => return Err(invalid(file, "sync: ".into(), "batch: must be at least 1")),
            Some(b) => b,
            None => d.batch,
        },
        max_clock_skew: positive(
            file,
            "sync: ",
            "max_clock_skew",
            s.max_clock_skew.as_deref(),
            d.max_clock_skew,
        )?,
        retry_max: positive(
            file,
            "sync: ",
            "retry_max",
            s.retry_max.as_deref(),
            d.retry_max,
        )?,
        schema_check: positive(
            file,
            "sync: ",
            "schema_check",
            s.schema_check.as_deref(),
            d.schema_check,
        )?,
    };
    let mut names = HashSet::new();
    for t in entities.into_iter().flatten() {
        let name = t.get("name").and_then(|v| v.as_str()).unwrap_or("");
        let place = format!("entity {name:?}: ");
        let raw: RawEntity = toml::Value::Table(t.clone())
            .try_into()
            .map_err(|e: toml::de::Error| invalid(file, place.clone(), e.message().to_string()))?;
        if raw.name.is_empty() {
            return Err(invalid(file, place, "name: must not be empty"));
        }
        if !names.insert(raw.name.clone()) {
            return Err(invalid(file, place, "name: duplicate entity name"));
        }
        let e = entity(file, &place, raw, &out.sides)?;
        for t in [&e.left, &e.right] {
            if let Some(other) = out
                .entities
                .iter()
                .find(|o| o.table(&t.side).is_some_and(|ot| ot.table == t.table))
            {
                return Err(invalid(
                    file,
                    place,
                    format!(
                        "{}: table {:?} is already synced by entity {:?}; a table syncs with one other side",
                        t.side, t.table, other.name
                    ),
                ));
            }
        }
        out.entities.push(e);
    }
    if let Some(b) = s.broker {
        out.broker = Some(broker(file, b, &out)?);
    }
    Ok(out)
}

/// Names that go into NATS subjects, consumer and key names.
fn token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn broker(file: &str, b: RawBroker, cfg: &SyncConfig) -> Result<BrokerConfig, ConfigError> {
    let place = "sync.broker: ";
    let err = |m: String| invalid(file, place.into(), m);
    if !b.url.starts_with("nats://") && !b.url.starts_with("tls://") {
        return Err(err(format!(
            "url: {:?} must start with nats:// or tls://",
            b.url
        )));
    }
    let name = |field: &str, v: Option<String>, d: &str| -> Result<String, ConfigError> {
        let v = v.unwrap_or_else(|| d.to_string());
        if token_ok(&v) {
            Ok(v)
        } else {
            Err(err(format!(
                "{field}: {v:?} may hold only letters, digits, '_' and '-'"
            )))
        }
    };
    let stream = name("stream", b.stream, "STRANGLER")?;
    let subject = name("subject", b.subject, "strangler")?;
    let bucket = name("bucket", b.bucket, "strangler_leases")?;
    let worker = b.worker.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        format!(
            "{}-{}",
            if host.is_empty() { "worker" } else { &host },
            std::process::id()
        )
    });
    let lease = positive(
        file,
        place,
        "lease",
        b.lease.as_deref(),
        Duration::from_secs(5),
    )?;
    let duplicate_window = positive(
        file,
        place,
        "duplicate_window",
        b.duplicate_window.as_deref(),
        Duration::from_secs(120),
    )?;
    let ack_wait = positive(
        file,
        place,
        "ack_wait",
        b.ack_wait.as_deref(),
        Duration::from_secs(5),
    )?;
    for side in cfg.sides.keys() {
        if !token_ok(side) {
            return Err(err(format!(
                "side {side:?}: in broker mode side names may hold only letters, digits, '_' and '-'"
            )));
        }
    }
    let mut links: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for e in &cfg.entities {
        if !token_ok(&e.group) {
            return Err(invalid(
                file,
                format!("entity {:?}: ", e.name),
                format!(
                    "group: {:?} may hold only letters, digits, '_' and '-' in broker mode",
                    e.group
                ),
            ));
        }
        let mut pair = [e.left.side.as_str(), e.right.side.as_str()];
        pair.sort();
        let prev = *links.entry(&e.group).or_insert((pair[0], pair[1]));
        if prev != (pair[0], pair[1]) {
            return Err(invalid(
                file,
                format!("entity {:?}: ", e.name),
                format!(
                    "group: {:?} already joins sides {:?} and {:?}; a group's entities share one pair of sides",
                    e.group, prev.0, prev.1
                ),
            ));
        }
    }
    Ok(BrokerConfig {
        url: b.url,
        stream,
        subject,
        bucket,
        worker,
        lease,
        duplicate_window,
        ack_wait,
    })
}

fn entity(
    file: &str,
    place: &str,
    raw: RawEntity,
    sides: &BTreeMap<String, SideConfig>,
) -> Result<EntityConfig, ConfigError> {
    let err = |m: String| invalid(file, place.to_string(), m);
    let mut tables = Vec::new();
    for (side, v) in &raw.tables {
        if !sides.contains_key(side) {
            return Err(err(format!(
                "{side}: not a side (sides are: {}); entity keys are name, columns, columns_from, \
                 transforms, authority, priority, conflict, column_conflict, lag_tolerance, group, on_error, validate, backfill and side names",
                sides.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let t: RawTable = v
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| err(format!("{side}: {}", e.message())))?;
        if t.key.is_empty() {
            return Err(err(format!("{side}: key: must name at least one column")));
        }
        tables.push(EntityTable {
            side: side.clone(),
            table: t.table,
            key: t.key,
        });
    }
    if tables.len() != 2 {
        return Err(err(format!(
            "must map exactly two sides, found {}",
            tables.len()
        )));
    }
    let from = raw.columns_from.clone().or_else(|| {
        if tables.iter().any(|t| t.side == "monolith") {
            Some("monolith".into())
        } else {
            raw.authority.clone()
        }
    });
    let Some(from) = from else {
        return Err(err(
            "columns_from: say which side the column map is written from".into(),
        ));
    };
    let Some(li) = tables.iter().position(|t| t.side == from) else {
        return Err(err(format!(
            "columns_from: {from:?} is not one of the entity's sides"
        )));
    };
    let left = tables.remove(li);
    let right = tables.remove(0);
    let authority = raw.authority.clone().unwrap_or_else(|| left.side.clone());
    for (field, v) in [
        ("authority", &authority),
        ("priority", raw.priority.as_ref().unwrap_or(&authority)),
    ] {
        if *v != left.side && *v != right.side {
            return Err(err(format!(
                "{field}: {v:?} is not one of the entity's sides"
            )));
        }
    }
    let columns: Vec<(String, String)> = raw.columns.into_iter().collect();
    let mut right_used = HashSet::new();
    for (_, r) in &columns {
        if !right_used.insert(r.clone()) {
            return Err(err(format!(
                "columns: {:?} column {r:?} is mapped twice",
                right.side
            )));
        }
    }
    let left_cols: HashSet<&str> = columns.iter().map(|(l, _)| l.as_str()).collect();
    for k in &left.key {
        if !left_cols.contains(k.as_str()) {
            return Err(err(format!(
                "{}: key column {k:?} must be in columns",
                left.side
            )));
        }
    }
    for k in &right.key {
        if !right_used.contains(k) {
            return Err(err(format!(
                "{}: key column {k:?} must be a target in columns",
                right.side
            )));
        }
    }
    let mut transforms = Vec::new();
    for (i, t) in raw.transforms.iter().enumerate() {
        let tx = transform(t).map_err(|m| err(format!("transforms[{i}]: {m}")))?;
        let mapped = |c: &str| -> Result<(), ConfigError> {
            if left_cols.contains(c) {
                Ok(())
            } else {
                Err(err(format!(
                    "transforms[{i}]: column {c:?} is not a left column in columns"
                )))
            }
        };
        match &tx {
            Transform::Lower(c)
            | Transform::Upper(c)
            | Transform::Trim(c)
            | Transform::Cast(c, _) => mapped(c)?,
            Transform::Split { column, into, .. } => {
                if left_cols.contains(column.as_str())
                    || into.iter().any(|c| right_used.contains(c))
                {
                    return Err(err(format!(
                        "transforms[{i}]: split columns must not also be in columns"
                    )));
                }
            }
            Transform::Join { columns, into, .. } => {
                if columns.iter().any(|c| left_cols.contains(c.as_str()))
                    || right_used.contains(into)
                {
                    return Err(err(format!(
                        "transforms[{i}]: join columns must not also be in columns"
                    )));
                }
            }
            Transform::Default(c, _) => {
                if right_used.contains(c) {
                    return Err(err(format!(
                        "transforms[{i}]: default column {c:?} is already mapped"
                    )));
                }
            }
        }
        transforms.push(tx);
    }
    let conflict = Policy::parse(raw.conflict.as_deref().unwrap_or("last_write_wins"))
        .map_err(|m| err(format!("conflict: {m}")))?;
    if matches!(
        conflict,
        Policy::Counter | Policy::Max | Policy::Min | Policy::PreferNonNull
    ) {
        return Err(err(format!(
            "conflict: {} is a column policy; set it in column_conflict",
            conflict.name()
        )));
    }
    let mut column_conflict = BTreeMap::new();
    for (c, p) in raw.column_conflict {
        if !left_cols.contains(c.as_str()) {
            return Err(err(format!(
                "column_conflict: {c:?} is not a left column in columns"
            )));
        }
        let p = Policy::parse(&p).map_err(|m| err(format!("column_conflict.{c}: {m}")))?;
        if p == Policy::FieldMerge {
            return Err(err(format!(
                "column_conflict.{c}: field_merge is a row policy"
            )));
        }
        column_conflict.insert(c, p);
    }
    let lag_tolerance = positive(
        file,
        place,
        "lag_tolerance",
        raw.lag_tolerance.as_deref(),
        Duration::from_secs(2),
    )?;
    let group = raw.group.clone().unwrap_or_else(|| raw.name.clone());
    let on_error = match raw.on_error.as_deref() {
        None | Some("quarantine") => OnError::Quarantine,
        Some("pause") => OnError::Pause,
        Some(other) => {
            return Err(err(format!(
                "on_error: {other:?} must be \"quarantine\" or \"pause\""
            )));
        }
    };
    let mut compared = left_cols.clone();
    for t in &transforms {
        match t {
            Transform::Split { column, .. } => {
                compared.insert(column.as_str());
            }
            Transform::Join { columns, .. } => {
                compared.extend(columns.iter().map(String::as_str));
            }
            _ => {}
        }
    }
    let validation = validation(file, place, raw.validate, &compared)?;
    Ok(EntityConfig {
        group,
        on_error,
        validation,
        backfill: raw.backfill.unwrap_or(false),
        name: raw.name,
        priority: raw.priority.unwrap_or_else(|| authority.clone()),
        left,
        right,
        columns,
        transforms,
        authority,
        conflict,
        column_conflict,
        lag_tolerance,
    })
}

/// The entity's `validate = { ... }`, checked.
fn validation(
    file: &str,
    place: &str,
    raw: Option<RawValidate>,
    left_cols: &HashSet<&str>,
) -> Result<Validation, ConfigError> {
    let err = |m: String| invalid(file, place.to_string(), format!("validate.{m}"));
    let Some(raw) = raw else {
        return Ok(Validation::default());
    };
    let level = match (raw.level.as_deref(), raw.sample) {
        (None | Some("strict"), None) => Level::Strict,
        (Some("eventual"), None) => Level::Eventual,
        (Some("sampled"), Some(s)) if s > 0.0 && s <= 1.0 => Level::Sampled(s),
        (Some("sampled"), Some(s)) => {
            return Err(err(format!("sample: {s} must be above 0 and at most 1")));
        }
        (Some("sampled"), None) => {
            return Err(err(
                "sample: level \"sampled\" needs sample = SHARE (0 < SHARE <= 1)".into(),
            ));
        }
        (_, Some(_)) => return Err(err("sample: only with level = \"sampled\"".into())),
        (Some(other), None) => {
            return Err(err(format!(
                "level: {other:?} must be \"strict\", \"eventual\" or \"sampled\""
            )));
        }
    };
    let float_tolerance = raw.float_tolerance.unwrap_or(0.0);
    if !(0.0..1.0).contains(&float_tolerance) {
        return Err(err(format!(
            "float_tolerance: {float_tolerance} must be at least 0 and below 1 (a relative tolerance)"
        )));
    }
    let mut text = BTreeMap::new();
    for (c, r) in raw.text {
        if !left_cols.contains(c.as_str()) {
            return Err(err(format!("text: {c:?} is not a left column in columns")));
        }
        let rule = match r.as_str() {
            "trim_trailing" => TextRule::TrimTrailing,
            "ignore_case" => TextRule::IgnoreCase,
            "trim_trailing,ignore_case" | "ignore_case,trim_trailing" => {
                TextRule::TrimTrailingIgnoreCase
            }
            other => {
                return Err(err(format!(
                    "text.{c}: {other:?} must be \"trim_trailing\", \"ignore_case\" or \"trim_trailing,ignore_case\""
                )));
            }
        };
        text.insert(c, rule);
    }
    let interval = match raw.interval.as_deref() {
        None => None,
        Some(t) => Some(positive(
            file,
            place,
            "validate.interval",
            Some(t),
            Duration::ZERO,
        )?),
    };
    Ok(Validation {
        level,
        float_tolerance,
        text,
        interval,
    })
}

fn pair(v: &toml::Value, what: &str) -> Result<[String; 2], String> {
    let arr = v
        .as_array()
        .ok_or(format!("{what}: must be a list of two column names"))?;
    match arr.as_slice() {
        [a, b] => match (a.as_str(), b.as_str()) {
            (Some(a), Some(b)) => Ok([a.to_string(), b.to_string()]),
            _ => Err(format!("{what}: must be a list of two column names")),
        },
        _ => Err(format!("{what}: must be a list of two column names")),
    }
}

fn transform(t: &RawTransform) -> Result<Transform, String> {
    let sep = t.separator.clone().unwrap_or_else(|| " ".into());
    if sep.is_empty() {
        return Err("separator: must not be empty".into());
    }
    if let Some(column) = &t.split {
        let into = pair(t.into.as_ref().ok_or("split needs into = [a, b]")?, "into")?;
        return Ok(Transform::Split {
            column: column.clone(),
            into,
            separator: sep,
        });
    }
    if let Some(cols) = &t.join {
        let columns = pair(
            &toml::Value::Array(cols.iter().cloned().map(toml::Value::String).collect()),
            "join",
        )?;
        let into = t
            .into
            .as_ref()
            .and_then(|v| v.as_str())
            .ok_or("join needs into = \"column\"")?
            .to_string();
        return Ok(Transform::Join {
            columns,
            into,
            separator: sep,
        });
    }
    let column = t.column.clone().ok_or("needs column, split or join")?;
    if let Some(c) = &t.cast {
        return Ok(Transform::Cast(column, TypeFamily::parse(c)?));
    }
    if let Some(v) = &t.default {
        let json = serde_json::to_value(v).map_err(|e| format!("default: {e}"))?;
        return Ok(Transform::Default(column, json));
    }
    match t.op.as_deref() {
        Some("lower") => Ok(Transform::Lower(column)),
        Some("upper") => Ok(Transform::Upper(column)),
        Some("trim") => Ok(Transform::Trim(column)),
        Some(o) => Err(format!("op: unknown {o:?}; use lower, upper or trim")),
        None => Err("needs op, cast or default".into()),
    }
}
