//! What a column holds, as the API sees it: its JSON Schema, how a client's JSON value is
//! checked and bound, and how a stored value is written back as JSON. One type per column,
//! derived once from the declared type, so the document, the validation and the responses
//! always agree.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::family::TypeFamily;
use crate::store::{Column, Form, Param};

use super::clock::{CALENDAR_DATE, datetime_out, parse_date, parse_datetime, parse_time, utc_text};

/// The database kind a column lives in, where it changes what a type can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MariaDB / MySQL.
    Mysql,
}

impl Db {
    /// From a store's kind name.
    pub fn from_kind(kind: &str) -> Db {
        match kind {
            "postgres" => Db::Postgres,
            "mysql" => Db::Mysql,
            _ => Db::Sqlite,
        }
    }
}

/// A column's type as the API sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiType {
    /// A whole number within the column's range.
    Integer {
        /// Smallest value.
        min: i128,
        /// Largest value.
        max: i128,
    },
    /// true / false.
    Boolean,
    /// An exact decimal with at most `precision` digits, `scale` after the point.
    Decimal {
        /// Total digits, if bounded.
        precision: Option<u32>,
        /// Digits after the point, if bounded.
        scale: Option<u32>,
    },
    /// A floating-point number.
    Float,
    /// Text of at most `max` characters.
    Text {
        /// Longest value in characters, if bounded.
        max: Option<u32>,
        /// One of these values only (MariaDB `enum`).
        choices: Vec<String>,
    },
    /// A UUID in its hyphenated text form.
    Uuid,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// A time of day, `HH:MM:SS[.ffffff]`.
    Time,
    /// A date-time; `zone`: an instant (RFC 3339 with an offset, answered in UTC), otherwise
    /// a wall-clock time without a zone.
    DateTime {
        /// Whether the column holds an instant.
        zone: bool,
    },
    /// Any JSON document.
    Json,
    /// Bytes, base64 in JSON.
    Bytes,
}

/// A bad value for a column: the message names the problem, the caller names the column.
pub type Invalid = String;

/// `(min, max)` of an integer type by declared name.
fn int_range(declared: &str, db: Db) -> (i128, i128) {
    let unsigned = declared.contains("unsigned");
    let bits: u32 = if db == Db::Sqlite {
        64
    } else if declared.starts_with("tinyint") {
        8
    } else if declared.starts_with("smallint") || declared == "int2" {
        16
    } else if declared.starts_with("mediumint") {
        24
    } else if declared.starts_with("bigint") || declared == "int8" || declared == "bigserial" {
        64
    } else if declared.starts_with("year") {
        return (1901, 2155);
    } else {
        32
    };
    if unsigned {
        (0, (1i128 << bits) - 1)
    } else {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    }
}

/// The numbers inside the first parenthesis of a declared type: `numeric(10,2)` → [10, 2].
fn modifiers(declared: &str) -> Vec<u32> {
    let Some(open) = declared.find('(') else {
        return Vec::new();
    };
    let close = declared[open..]
        .find(')')
        .map_or(declared.len(), |c| open + c);
    declared[open + 1..close]
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// MariaDB `enum('a','b')` choices.
fn enum_choices(declared: &str) -> Vec<String> {
    let Some(body) = declared
        .strip_prefix("enum(")
        .and_then(|b| b.strip_suffix(')'))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inside = false;
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match (inside, c) {
            (false, '\'') => inside = true,
            (true, '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                cur.push('\'');
            }
            (true, '\'') => {
                inside = false;
                out.push(std::mem::take(&mut cur));
            }
            (true, c) => cur.push(c),
            _ => {}
        }
    }
    out
}

impl ApiType {
    /// The API type of a column of a `db` database.
    pub fn of(column: &Column, db: Db) -> ApiType {
        let declared = column.declared.to_ascii_lowercase();
        let declared = declared.trim();
        match column.family {
            TypeFamily::Boolean => ApiType::Boolean,
            TypeFamily::Integer => {
                let (min, max) = int_range(declared, db);
                ApiType::Integer { min, max }
            }
            TypeFamily::Real => {
                if (declared.starts_with("numeric") || declared.starts_with("decimal"))
                    && db != Db::Sqlite
                {
                    let m = modifiers(declared);
                    ApiType::Decimal {
                        precision: m.first().copied(),
                        scale: m.first().map(|_| m.get(1).copied().unwrap_or(0)),
                    }
                } else {
                    ApiType::Float
                }
            }
            TypeFamily::Json => ApiType::Json,
            TypeFamily::Blob => ApiType::Bytes,
            TypeFamily::Time => {
                if declared.starts_with("interval") {
                    ApiType::Text {
                        max: None,
                        choices: Vec::new(),
                    }
                } else if declared == "date" {
                    ApiType::Date
                } else if declared.starts_with("time") && !declared.starts_with("timestamp") {
                    ApiType::Time
                } else {
                    let zone = declared.contains("with time zone")
                        || declared == "timestamptz"
                        || (db == Db::Mysql && declared.starts_with("timestamp"));
                    // SQLite keeps what it is given: an instant there is whatever the
                    // application wrote, so the API takes and gives RFC 3339 text.
                    ApiType::DateTime {
                        zone: zone || (db == Db::Sqlite && column.form != Form::UtcNaive),
                    }
                }
            }
            TypeFamily::Text => {
                if declared == "uuid" {
                    ApiType::Uuid
                } else if declared.starts_with("enum(") {
                    ApiType::Text {
                        max: None,
                        choices: enum_choices(&column.declared),
                    }
                } else {
                    let bounded = declared.starts_with("varchar")
                        || declared.starts_with("character")
                        || declared.starts_with("char")
                        || declared.starts_with("nvarchar")
                        || declared.starts_with("nchar");
                    ApiType::Text {
                        max: if bounded {
                            modifiers(declared).first().copied()
                        } else {
                            None
                        },
                        choices: Vec::new(),
                    }
                }
            }
        }
    }

    /// The JSON Schema of a value (without null).
    pub fn schema(&self, db: Db) -> Value {
        match self {
            ApiType::Integer { min, max } => {
                let mut s = json!({"type": "integer", "minimum": num(*min), "maximum": num(*max)});
                if *min >= i32::MIN as i128 && *max <= i32::MAX as i128 {
                    s["format"] = json!("int32");
                } else if *min >= i64::MIN as i128 && *max <= i64::MAX as i128 {
                    s["format"] = json!("int64");
                }
                s
            }
            ApiType::Boolean => json!({"type": "boolean"}),
            ApiType::Decimal { precision, scale } => {
                let mut s = json!({"type": "number"});
                if let (Some(p), Some(sc)) = (precision, scale) {
                    let whole = p.saturating_sub(*sc);
                    let bound = format!(
                        "{}{}",
                        "9".repeat(whole.max(1) as usize),
                        if *sc > 0 {
                            format!(".{}", "9".repeat(*sc as usize))
                        } else {
                            String::new()
                        }
                    );
                    let bound = if whole == 0 {
                        format!("0.{}", "9".repeat(*sc as usize))
                    } else {
                        bound
                    };
                    s["maximum"] = bound.parse().unwrap_or(Value::Null);
                    s["minimum"] = format!("-{bound}").parse().unwrap_or(Value::Null);
                    if *sc == 0 {
                        s["type"] = json!("integer");
                    } else {
                        s["multipleOf"] = format!("1e-{sc}").parse().unwrap_or(Value::Null);
                    }
                    s["description"] =
                        json!(format!("exact decimal: {p} digits, {sc} after the point"));
                }
                s
            }
            ApiType::Float => json!({"type": "number"}),
            ApiType::Text { max, choices } => {
                if !choices.is_empty() {
                    return json!({"type": "string", "enum": choices});
                }
                let mut s = json!({"type": "string"});
                if let Some(m) = max {
                    s["maxLength"] = json!(m);
                }
                if db == Db::Postgres {
                    // PostgreSQL text cannot hold the NUL character.
                    s["pattern"] = json!("^[^\\u0000]*$");
                }
                s
            }
            ApiType::Uuid => json!({"type": "string", "format": "uuid"}),
            // Year 0 exists in no calendar PostgreSQL keeps.
            ApiType::Date => json!({"type": "string", "format": "date", "pattern": "^(?!0000)"}),
            ApiType::Time => json!({
                "type": "string",
                "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,6})?$"
            }),
            // A MariaDB TIMESTAMP holds 1970-01-01 to 2038-01-19 only.
            ApiType::DateTime { zone: true } if db == Db::Mysql => json!({
                "type": "string", "format": "date-time",
                "pattern": "^(19[7-9][0-9]|20[0-2][0-9]|203[0-7])-"
            }),
            ApiType::DateTime { zone: true } => {
                json!({"type": "string", "format": "date-time", "pattern": "^(?!0000)"})
            }
            ApiType::DateTime { zone: false } => json!({
                "type": "string",
                "description": "date and time without a zone",
                "pattern": format!("^{CALENDAR_DATE}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{{1,6}})?$")
            }),
            ApiType::Json => json!({}),
            ApiType::Bytes => json!({
                "type": "string",
                "contentEncoding": "base64",
                "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
            }),
        }
    }

    /// Checks a client's JSON value (not null) and turns it into a bound parameter.
    pub fn bind(&self, v: &Value, db: Db) -> Result<Param, Invalid> {
        match self {
            ApiType::Integer { min, max } => {
                let n = integer(v).ok_or("must be an integer")?;
                if n < *min || n > *max {
                    return Err(format!("must be between {min} and {max}"));
                }
                Ok(match i64::try_from(n) {
                    Ok(i) => Param::Int(i),
                    Err(_) => Param::Text(n.to_string()),
                })
            }
            ApiType::Boolean => match v {
                Value::Bool(b) => Ok(if db == Db::Postgres {
                    Param::Text(b.to_string())
                } else {
                    Param::Int(i64::from(*b))
                }),
                _ => Err("must be true or false".into()),
            },
            ApiType::Decimal { precision, scale } => {
                let Value::Number(n) = v else {
                    return Err("must be a number".into());
                };
                let text = n.to_string();
                let (whole, frac) = digits(&text).ok_or("must be a finite number")?;
                if let (Some(p), Some(s)) = (precision, scale) {
                    if frac > *s {
                        return Err(format!("has more than {s} digits after the point"));
                    }
                    if whole > p - s {
                        return Err(format!("has more than {} digits before the point", p - s));
                    }
                }
                Ok(Param::Text(text))
            }
            ApiType::Float => match v.as_f64() {
                Some(f) if v.is_number() && f.is_finite() => Ok(Param::Real(f)),
                _ => Err("must be a number".into()),
            },
            ApiType::Text { max, choices } => {
                let s = v.as_str().ok_or("must be a string")?;
                if !choices.is_empty() && !choices.iter().any(|c| c == s) {
                    return Err(format!("must be one of {}", choices.join(", ")));
                }
                if let Some(m) = max
                    && s.chars().count() > *m as usize
                {
                    return Err(format!("is longer than {m} characters"));
                }
                if db == Db::Postgres && s.contains('\0') {
                    return Err("contains the NUL character".into());
                }
                Ok(Param::Text(s.to_string()))
            }
            ApiType::Uuid => {
                let s = v.as_str().ok_or("must be a string")?;
                if !is_uuid(s) {
                    return Err("must be a UUID".into());
                }
                Ok(Param::Text(s.to_ascii_lowercase()))
            }
            ApiType::Date => {
                let s = v.as_str().ok_or("must be a string")?;
                parse_date(s).ok_or("must be a date, YYYY-MM-DD")?;
                Ok(Param::Text(s.to_string()))
            }
            ApiType::Time => {
                let s = v.as_str().ok_or("must be a string")?;
                parse_time(s).ok_or("must be a time of day, HH:MM:SS")?;
                Ok(Param::Text(s.to_string()))
            }
            ApiType::DateTime { zone } => {
                let s = v.as_str().ok_or("must be a string")?;
                let (date, time, offset) =
                    parse_datetime(s).ok_or("must be a date-time, YYYY-MM-DDTHH:MM:SS")?;
                match (zone, offset) {
                    (true, Some(off)) => Ok(Param::Text(utc_text(date, time, off, db))),
                    (true, None) => Err("must carry a zone offset (Z or +HH:MM)".into()),
                    (false, None) => Ok(Param::Text(format!("{date} {time}"))),
                    (false, Some(_)) => Err("must not carry a zone offset".into()),
                }
            }
            ApiType::Json => {
                if db == Db::Postgres && has_nul(v) {
                    return Err("contains the NUL character".into());
                }
                Ok(Param::Text(v.to_string()))
            }
            ApiType::Bytes => {
                let s = v.as_str().ok_or("must be a base64 string")?;
                // Trailing bits past the last byte are ignored, as most encoders allow.
                const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::STANDARD,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_allow_trailing_bits(true),
                );
                LENIENT
                    .decode(s)
                    .map(Param::Bytes)
                    .map_err(|_| "must be base64".into())
            }
        }
    }

    /// A stored value, as the database gave it, written as the API's JSON.
    pub fn output(&self, v: Value, form: Form) -> Value {
        match (self, v) {
            (_, Value::Null) => Value::Null,
            (ApiType::Boolean, Value::Number(n)) => Value::Bool(n.as_i64() != Some(0)),
            (ApiType::Boolean, Value::String(s)) => {
                Value::Bool(matches!(s.as_str(), "t" | "true" | "1"))
            }
            (
                ApiType::Integer { .. } | ApiType::Decimal { .. } | ApiType::Float,
                Value::String(s),
            ) => s
                .trim()
                .parse::<Value>()
                .ok()
                .filter(Value::is_number)
                .unwrap_or(Value::String(s)),
            (ApiType::Json, Value::String(s)) => {
                serde_json::from_str(&s).unwrap_or(Value::String(s))
            }
            (ApiType::Json, v) if form != Form::JsonText => v,
            (ApiType::Bytes, Value::String(s)) => {
                match crate::store::hex_bytes(&Value::String(s.clone())) {
                    Some(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
                    None => Value::String(base64::engine::general_purpose::STANDARD.encode(s)),
                }
            }
            (ApiType::DateTime { zone }, Value::String(s)) => {
                Value::String(datetime_out(&s, *zone))
            }
            (ApiType::Uuid, Value::String(s)) => Value::String(s.to_ascii_lowercase()),
            (_, v) => v,
        }
    }
}

/// A JSON number for an i128 (the schema's bounds).
fn num(n: i128) -> Value {
    n.to_string().parse().unwrap_or(Value::Null)
}

/// An integral JSON number (`3`, `3.0`, `3e2`) as an i128.
pub fn integer(v: &Value) -> Option<i128> {
    let Value::Number(n) = v else { return None };
    let text = n.to_string();
    if let Ok(i) = text.parse::<i128>() {
        return Some(i);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 1e38).then_some(f as i128)
}

/// Digits before and after the point of a number's text, exponent applied and insignificant
/// zeros dropped; `None` for something that is not a number.
pub fn digits(text: &str) -> Option<(u32, u32)> {
    let t = text.trim_start_matches(['-', '+']);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all: String = format!("{int}{frac}");
    let point = int.len() as i64 + exp;
    let first = all.find(|c| c != '0');
    let Some(first) = first else {
        return Some((0, 0));
    };
    let last = all.rfind(|c| c != '0').unwrap_or(first) as i64 + 1;
    let whole = (point - first as i64).max(0);
    let frac = (last - point).max(0);
    Some((
        whole.min(u32::MAX as i64) as u32,
        frac.min(u32::MAX as i64) as u32,
    ))
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Whether `s` is a hyphenated UUID.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// A row's stored values as the API's JSON object.
pub fn row_out(fields: &[(&str, &ApiType, Form)], values: Vec<Value>) -> Map<String, Value> {
    fields
        .iter()
        .zip(values)
        .map(|((name, ty, form), v)| (name.to_string(), ty.output(v, *form)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(declared: &str) -> Column {
        Column {
            name: "c".into(),
            declared: declared.into(),
            family: crate::store::family(declared),
            nullable: true,
            has_default: false,
            form: Form::Plain,
        }
    }

    #[test]
    fn types_from_declarations() {
        assert_eq!(
            ApiType::of(&col("integer"), Db::Postgres),
            ApiType::Integer {
                min: i32::MIN as i128,
                max: i32::MAX as i128
            }
        );
        assert_eq!(
            ApiType::of(&col("int unsigned"), Db::Mysql),
            ApiType::Integer {
                min: 0,
                max: u32::MAX as i128
            }
        );
        assert_eq!(
            ApiType::of(&col("INTEGER"), Db::Sqlite),
            ApiType::Integer {
                min: i64::MIN as i128,
                max: i64::MAX as i128
            }
        );
        assert_eq!(
            ApiType::of(&col("numeric(10,2)"), Db::Postgres),
            ApiType::Decimal {
                precision: Some(10),
                scale: Some(2)
            }
        );
        assert_eq!(
            ApiType::of(&col("character varying(20)"), Db::Postgres),
            ApiType::Text {
                max: Some(20),
                choices: vec![]
            }
        );
        assert_eq!(
            ApiType::of(&col("enum('a','it''s')"), Db::Mysql),
            ApiType::Text {
                max: None,
                choices: vec!["a".into(), "it's".into()]
            }
        );
        assert_eq!(ApiType::of(&col("uuid"), Db::Postgres), ApiType::Uuid);
        assert_eq!(
            ApiType::of(&col("timestamp with time zone"), Db::Postgres),
            ApiType::DateTime { zone: true }
        );
        assert_eq!(
            ApiType::of(&col("timestamp without time zone"), Db::Postgres),
            ApiType::DateTime { zone: false }
        );
        assert_eq!(ApiType::of(&col("date"), Db::Mysql), ApiType::Date);
        assert_eq!(ApiType::of(&col("time"), Db::Mysql), ApiType::Time);
        assert_eq!(ApiType::of(&col("bytea"), Db::Postgres), ApiType::Bytes);
    }

    #[test]
    fn decimal_digits() {
        assert_eq!(digits("123.450"), Some((3, 2)));
        assert_eq!(digits("-0.001"), Some((0, 3)));
        assert_eq!(digits("1.5e3"), Some((4, 0)));
        assert_eq!(digits("15e-3"), Some((0, 3)));
        assert_eq!(digits("0"), Some((0, 0)));
        assert_eq!(digits("x"), None);
        let d = ApiType::Decimal {
            precision: Some(5),
            scale: Some(2),
        };
        assert!(d.bind(&json!(999.99), Db::Postgres).is_ok());
        assert!(d.bind(&json!(1000), Db::Postgres).is_err());
        assert!(d.bind(&json!(1.005), Db::Postgres).is_err());
        assert_eq!(d.schema(Db::Postgres)["maximum"], json!(999.99));
    }

    #[test]
    fn binding_checks_each_type() {
        let i = ApiType::Integer {
            min: -128,
            max: 127,
        };
        assert_eq!(i.bind(&json!(5), Db::Mysql), Ok(Param::Int(5)));
        assert_eq!(i.bind(&json!(5.0), Db::Mysql), Ok(Param::Int(5)));
        assert!(i.bind(&json!(128), Db::Mysql).is_err());
        assert!(i.bind(&json!("5"), Db::Mysql).is_err());
        let t = ApiType::Text {
            max: Some(3),
            choices: vec![],
        };
        assert!(t.bind(&json!("abcd"), Db::Sqlite).is_err());
        assert!(t.bind(&json!("a\u{0}"), Db::Postgres).is_err());
        assert!(t.bind(&json!("a\u{0}"), Db::Sqlite).is_ok());
        assert!(ApiType::Uuid.bind(&json!("not"), Db::Postgres).is_err());
        assert!(
            ApiType::Date
                .bind(&json!("2023-02-29"), Db::Postgres)
                .is_err()
        );
        assert!(
            ApiType::Date
                .bind(&json!("2024-02-29"), Db::Postgres)
                .is_ok()
        );
        let tz = ApiType::DateTime { zone: true };
        assert_eq!(
            tz.bind(&json!("2024-01-01T01:30:00+02:00"), Db::Postgres),
            Ok(Param::Text("2023-12-31 23:30:00.000000+00:00".into()))
        );
        assert!(
            tz.bind(&json!("2024-01-01T01:30:00"), Db::Postgres)
                .is_err()
        );
        assert_eq!(
            ApiType::Bytes.bind(&json!("AAH/"), Db::Mysql),
            Ok(Param::Bytes(vec![0, 1, 255]))
        );
        assert!(ApiType::Bytes.bind(&json!("!!"), Db::Mysql).is_err());
    }

    #[test]
    fn stored_values_come_back_as_the_api_writes_them() {
        let tz = ApiType::DateTime { zone: true };
        assert_eq!(
            tz.output(json!("2024-01-01 10:00:00+00"), Form::Plain),
            json!("2024-01-01T10:00:00Z")
        );
        assert_eq!(
            tz.output(json!("2024-01-01 10:00:00.250000"), Form::Plain),
            json!("2024-01-01T10:00:00.25Z")
        );
        assert_eq!(
            ApiType::DateTime { zone: false }.output(json!("2024-01-01 10:00:00"), Form::Plain),
            json!("2024-01-01T10:00:00")
        );
        assert_eq!(
            ApiType::Bytes.output(json!("\\x0001ff"), Form::Plain),
            json!("AAH/")
        );
        assert_eq!(ApiType::Boolean.output(json!(1), Form::Plain), json!(true));
        assert_eq!(
            ApiType::Json.output(json!("{\"a\":1}"), Form::JsonText),
            json!({"a": 1})
        );
        let d = ApiType::Decimal {
            precision: Some(10),
            scale: Some(2),
        };
        assert_eq!(d.output(json!("12.50"), Form::Plain).to_string(), "12.50");
    }
}
