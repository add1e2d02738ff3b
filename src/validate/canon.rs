//! Canonical values: what a column's value means, independent of the database that holds it,
//! so that two sides compare equal exactly when they hold the same data. Integers, decimals of
//! any scale and floats become one decimal form (floats within a configured relative
//! tolerance compare equal); date-times become UTC microseconds; JSON documents ignore key
//! order; bytes compare as bytes; text is exact unless a column's rule relaxes it; NULL is
//! never equal to an empty string.

use serde_json::Value;
use time::{Date, Month, PrimitiveDateTime, Time};
use xxhash_rust::xxh3::Xxh3;

use crate::config::sync::TextRule;
use crate::family::TypeFamily;

/// How one compared column's values are read and compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// The family both sides' values are read as.
    pub family: TypeFamily,
    /// Text rule, if any.
    pub text: Option<TextRule>,
    /// Relative tolerance for numbers (0: exact).
    pub tolerance: f64,
    /// Date-times: microseconds below which two values are the same (the coarser side's
    /// precision, 1 when both keep microseconds).
    pub time_unit_us: i64,
}

/// A value in canonical form.
#[derive(Debug, Clone, PartialEq)]
pub enum Canon {
    /// SQL NULL.
    Null,
    /// A number: sign, significant digits (no leading or trailing zeros) and the power of ten
    /// of the last digit. Zero has no digits.
    Num {
        /// Negative.
        neg: bool,
        /// Significant digits.
        digits: String,
        /// Power of ten of the last digit.
        exp: i64,
    },
    /// A date-time as UTC microseconds since 1970.
    Instant(i64),
    /// A date without a time, as days since 1970.
    Day(i64),
    /// Text (after the column's rule).
    Text(String),
    /// A JSON document, serialized with sorted keys and canonical numbers.
    Json(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// The canonical decimal form of a number's text (`-1.50e3`, `0.000`, `42`); `None` when it
/// is not a number.
pub fn decimal(text: &str) -> Option<Canon> {
    let t = text.trim();
    let (neg, t) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let mut digits: String = format!("{int}{frac}");
    let mut exp = exp - frac.len() as i64;
    let lead = digits.bytes().take_while(|&c| c == b'0').count();
    digits.drain(..lead);
    let trail = digits.bytes().rev().take_while(|&c| c == b'0').count();
    digits.truncate(digits.len() - trail);
    exp += trail as i64;
    if digits.is_empty() {
        return Some(Canon::Num {
            neg: false,
            digits,
            exp: 0,
        });
    }
    Some(Canon::Num { neg, digits, exp })
}

impl Canon {
    /// The canonical form of `v` read under `rule`.
    pub fn of(v: &Value, rule: &Rule) -> Canon {
        use TypeFamily::*;
        match (v, rule.family) {
            (Value::Null, _) => Canon::Null,
            (Value::Bool(b), _) => Canon::int(i64::from(*b)),
            (Value::Number(n), Integer | Real | Boolean | Text | Time | Blob) => {
                decimal(&n.to_string()).unwrap_or_else(|| Canon::Text(n.to_string()))
            }
            (Value::String(s), Integer | Real) => {
                decimal(s).unwrap_or_else(|| Canon::Text(s.clone()))
            }
            (Value::String(s), Boolean) => match s.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "1" | "yes" | "y" => Canon::int(1),
                "f" | "false" | "0" | "no" | "n" => Canon::int(0),
                _ => Canon::Text(s.clone()),
            },
            (Value::String(s), Time) => instant(s).unwrap_or_else(|| Canon::Text(s.clone())),
            (Value::String(s), Blob) => match crate::store::hex_bytes(v) {
                Some(b) => Canon::Bytes(b),
                None => Canon::Bytes(s.as_bytes().to_vec()),
            },
            (Value::String(s), Text) => Canon::Text(apply_text(s, rule.text)),
            (Value::String(s), Json) => match serde_json::from_str::<Value>(s) {
                Ok(doc) => Canon::Json(json_text(&doc)),
                Err(_) => Canon::Text(s.clone()),
            },
            (doc, Json) => Canon::Json(json_text(doc)),
            (other, _) => Canon::Text(other.to_string()),
        }
    }

    fn int(i: i64) -> Canon {
        decimal(&i.to_string()).unwrap_or(Canon::Null)
    }

    /// Whether two canonical values are the same under `rule` (tolerance and precision).
    pub fn same(&self, other: &Canon, rule: &Rule) -> bool {
        if self == other {
            return true;
        }
        match (self, other) {
            (Canon::Num { .. }, Canon::Num { .. }) if rule.tolerance > 0.0 => {
                let (a, b) = (self.as_f64(), other.as_f64());
                let scale = a.abs().max(b.abs());
                (a - b).abs() <= rule.tolerance * scale
            }
            (Canon::Instant(a), Canon::Instant(b)) => (a - b).abs() < rule.time_unit_us.max(1),
            _ => false,
        }
    }

    fn as_f64(&self) -> f64 {
        match self {
            Canon::Num { neg, digits, exp } => {
                let v: f64 = format!("{digits}e{exp}").parse().unwrap_or(f64::NAN);
                if *neg { -v } else { v }
            }
            _ => f64::NAN,
        }
    }

    /// Feeds the value into a row hash: a tag, then the value's bytes, length-prefixed.
    /// Values that are [`Canon::same`] only within a tolerance or precision may hash apart;
    /// the row comparison then settles them.
    pub fn hash_into(&self, h: &mut Xxh3) {
        let mut put = |tag: u8, bytes: &[u8]| {
            h.update(&[tag]);
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        match self {
            Canon::Null => put(0, &[]),
            Canon::Num { neg, digits, exp } => {
                put(1, &[u8::from(*neg)]);
                put(2, digits.as_bytes());
                put(3, &exp.to_le_bytes());
            }
            Canon::Instant(us) => put(4, &us.to_le_bytes()),
            Canon::Day(d) => put(5, &d.to_le_bytes()),
            Canon::Text(s) => put(6, s.as_bytes()),
            Canon::Json(s) => put(7, s.as_bytes()),
            Canon::Bytes(b) => put(8, b),
        }
    }

    /// The value as a report shows it.
    pub fn display(&self) -> Value {
        match self {
            Canon::Null => Value::Null,
            Canon::Num { neg, digits, exp } => {
                let digits = if digits.is_empty() { "0" } else { digits };
                let text = if *exp >= 0 && *exp < 20 {
                    format!(
                        "{}{digits}{}",
                        if *neg { "-" } else { "" },
                        "0".repeat(*exp as usize)
                    )
                } else if *exp < 0 && (-*exp as usize) < digits.len() {
                    let split = digits.len() - (-*exp as usize);
                    format!(
                        "{}{}.{}",
                        if *neg { "-" } else { "" },
                        &digits[..split],
                        &digits[split..]
                    )
                } else {
                    format!("{}{digits}e{exp}", if *neg { "-" } else { "" })
                };
                text.parse::<Value>().unwrap_or(Value::String(text))
            }
            Canon::Instant(us) => Value::String(instant_text(*us)),
            Canon::Day(d) => Value::String(instant_text(d * 86_400_000_000)[..10].to_string()),
            Canon::Text(s) | Canon::Json(s) => Value::String(s.clone()),
            Canon::Bytes(b) => Value::String(
                crate::store::Param::Bytes(b.clone())
                    .as_text()
                    .unwrap_or_default(),
            ),
        }
    }
}

fn apply_text(s: &str, rule: Option<TextRule>) -> String {
    match rule {
        None => s.to_string(),
        Some(TextRule::TrimTrailing) => s.trim_end_matches(' ').to_string(),
        Some(TextRule::IgnoreCase) => s.to_lowercase(),
        Some(TextRule::TrimTrailingIgnoreCase) => s.trim_end_matches(' ').to_lowercase(),
    }
}

/// A JSON document's canonical text: object keys sorted (the map keeps them so), numbers in
/// canonical decimal form.
fn json_text(doc: &Value) -> String {
    fn norm(v: &Value) -> Value {
        match v {
            Value::Number(n) => match decimal(&n.to_string()) {
                Some(c @ Canon::Num { .. }) => c.display(),
                _ => v.clone(),
            },
            Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), norm(v))).collect())
            }
            other => other.clone(),
        }
    }
    norm(doc).to_string()
}

/// `YYYY-MM-DD`, or `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH[:MM]]` (zone-less is UTC, the
/// convention of the whole engine), as a canonical date or instant.
fn instant(text: &str) -> Option<Canon> {
    let t = text.trim();
    let b = t.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let date = Date::from_calendar_date(
        num(0..4)? as i32,
        Month::try_from(num(5..7)? as u8).ok()?,
        num(8..10)? as u8,
    )
    .ok()?;
    if b.len() == 10 {
        return Some(Canon::Day(i64::from(date.to_julian_day() - EPOCH_JULIAN)));
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let time = Time::from_hms(num(11..13)? as u8, num(14..16)? as u8, num(17..19)? as u8).ok()?;
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = &t[start..i];
        if frac.is_empty() {
            return None;
        }
        let six: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        micros = six.parse().ok()?;
    }
    let zone = t[i..].trim_start();
    let offset = match zone.as_bytes().first() {
        None => 0,
        Some(b'Z' | b'z') if zone.len() == 1 => 0,
        Some(sign @ (b'+' | b'-')) => {
            let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
            if !digits.bytes().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4 | 6) {
                return None;
            }
            let part =
                |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<i64>().ok());
            let secs = part(0..2)? * 3600 + part(2..4).unwrap_or(0) * 60 + part(4..6).unwrap_or(0);
            if *sign == b'-' { -secs } else { secs }
        }
        Some(_) => return None,
    };
    let at = PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp()
        - offset;
    Some(Canon::Instant(at * 1_000_000 + micros))
}

/// Julian day number of 1970-01-01.
const EPOCH_JULIAN: i32 = 2_440_588;

fn instant_text(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => {
            let base = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            if micros == 0 {
                format!("{base}Z")
            } else {
                format!("{base}.{micros:06}Z")
            }
        }
        Err(_) => us.to_string(),
    }
}

/// Fractional-second digits a date-time type keeps, from its declared type; `None` when the
/// database does not say (SQLite's text).
pub fn time_precision(kind: &str, declared: &str) -> Option<u32> {
    let d = declared.to_ascii_lowercase();
    if !(d.contains("time")) || d.contains("interval") {
        return None;
    }
    let stated = d
        .find('(')
        .and_then(|a| d[a + 1..].find(')').map(|b| &d[a + 1..a + 1 + b]))
        .and_then(|n| n.trim().parse::<u32>().ok());
    match (kind, stated) {
        (_, Some(p)) => Some(p.min(6)),
        ("postgres", None) => Some(6),
        ("mysql", None) => Some(0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(family: TypeFamily) -> Rule {
        Rule {
            family,
            text: None,
            tolerance: 0.0,
            time_unit_us: 1,
        }
    }

    #[test]
    fn numbers_of_any_scale_and_spelling_are_one_value() {
        let r = rule(TypeFamily::Real);
        let c = |v: Value| Canon::of(&v, &r);
        assert_eq!(c(json!("2.50")), c(json!(2.5)));
        assert_eq!(c(json!("2.5e0")), c(json!("0002.500")));
        assert_eq!(c(json!("-0.00")), c(json!(0)));
        assert_eq!(c(json!(1500)), c(json!("1.5E3")));
        assert_ne!(c(json!("2.51")), c(json!("2.5")));
        assert_ne!(c(json!(-1)), c(json!(1)));
        assert_eq!(
            c(json!("12345678901234567890.1234567890"))
                .display()
                .to_string(),
            "12345678901234567890.123456789"
        );
        assert_eq!(c(json!("abc")), Canon::Text("abc".into()));
        assert_eq!(decimal("1e"), None);
        assert_eq!(decimal("."), None);
        assert_eq!(c(json!(true)), c(json!(1)));
        assert_eq!(
            Canon::of(&json!("t"), &rule(TypeFamily::Boolean)),
            c(json!(1))
        );
        assert_eq!(
            Canon::of(&json!("false"), &rule(TypeFamily::Boolean)),
            c(json!(0))
        );
    }

    #[test]
    fn floats_compare_within_the_tolerance_only() {
        let mut r = rule(TypeFamily::Real);
        let c = |v: Value, r: &Rule| Canon::of(&v, r);
        assert!(!c(json!(0.1), &r).same(&c(json!(0.10000001), &r), &r));
        r.tolerance = 1e-6;
        assert!(c(json!(0.1), &r).same(&c(json!(0.10000001), &r), &r));
        assert!(!c(json!(0.1), &r).same(&c(json!(0.1001), &r), &r));
        assert!(!c(json!(0.1), &r).same(&Canon::Null, &r));
    }

    #[test]
    fn instants_across_zones_and_precisions() {
        let mut r = rule(TypeFamily::Time);
        let c = |v: &str, r: &Rule| Canon::of(&json!(v), r);
        assert_eq!(
            c("2026-12-03T13:00:00.5+05:30", &r),
            c("2026-12-03 07:30:00.500000", &r)
        );
        assert_eq!(
            c("2026-12-03 07:30:00+00", &r),
            c("2026-12-03T07:30:00Z", &r)
        );
        assert_eq!(
            c("2026-12-03 02:30:00-05", &r),
            c("2026-12-03 07:30:00", &r)
        );
        assert_ne!(c("2026-12-03 07:30:00.5", &r), c("2026-12-03 07:30:00", &r));
        assert!(!c("2026-12-03 07:30:00.5", &r).same(&c("2026-12-03 07:30:00", &r), &r));
        r.time_unit_us = 1_000_000;
        assert!(c("2026-12-03 07:30:00.5", &r).same(&c("2026-12-03 07:30:01", &r), &r));
        assert!(!c("2026-12-03 07:30:00", &r).same(&c("2026-12-03 07:30:01", &r), &r));
        assert_eq!(c("2026-12-03", &r), Canon::Day(20_790));
        assert_eq!(c("2026-12-03", &r).display(), json!("2026-12-03"));
        assert_eq!(
            c("2026-12-03 07:30:00.25", &r).display(),
            json!("2026-12-03T07:30:00.250000Z")
        );
        assert_eq!(c("yesterday", &r), Canon::Text("yesterday".into()));
        assert_eq!(
            c("2026-12-03 07:30:00+5", &r),
            Canon::Text("2026-12-03 07:30:00+5".into())
        );
        assert_eq!(
            time_precision("postgres", "timestamp(3) without time zone"),
            Some(3)
        );
        assert_eq!(
            time_precision("postgres", "timestamp with time zone"),
            Some(6)
        );
        assert_eq!(time_precision("mysql", "datetime"), Some(0));
        assert_eq!(time_precision("mysql", "datetime(6)"), Some(6));
        assert_eq!(time_precision("sqlite", "TEXT"), None);
        assert_eq!(time_precision("postgres", "interval"), None);
    }

    #[test]
    fn text_json_bytes_and_null() {
        let t = rule(TypeFamily::Text);
        assert_ne!(Canon::of(&json!(""), &t), Canon::of(&json!(null), &t));
        assert_ne!(Canon::of(&json!("a "), &t), Canon::of(&json!("a"), &t));
        let trim = Rule {
            text: Some(TextRule::TrimTrailing),
            ..t
        };
        assert_eq!(
            Canon::of(&json!("a  "), &trim),
            Canon::of(&json!("a"), &trim)
        );
        let case = Rule {
            text: Some(TextRule::IgnoreCase),
            ..t
        };
        assert_eq!(
            Canon::of(&json!("Ada"), &case),
            Canon::of(&json!("aDA"), &case)
        );
        let both = Rule {
            text: Some(TextRule::TrimTrailingIgnoreCase),
            ..t
        };
        assert_eq!(
            Canon::of(&json!("Ada "), &both),
            Canon::of(&json!("aDA"), &both)
        );
        let j = rule(TypeFamily::Json);
        assert_eq!(
            Canon::of(
                &json!("{\"b\": 1.50, \"a\": [1, {\"d\": 2, \"c\": 3}]}"),
                &j
            ),
            Canon::of(&json!({"a": [1, {"c": 3, "d": 2}], "b": 1.5}), &j)
        );
        assert_ne!(
            Canon::of(&json!("{\"a\": 1}"), &j),
            Canon::of(&json!("{\"a\": 2}"), &j)
        );
        assert_eq!(
            Canon::of(&json!("not json"), &j),
            Canon::Text("not json".into())
        );
        let b = rule(TypeFamily::Blob);
        assert_eq!(Canon::of(&json!("\\x00FF"), &b), Canon::Bytes(vec![0, 255]));
        assert_eq!(Canon::of(&json!("\\x00ff"), &b).display(), json!("\\x00ff"));
        let mut h1 = Xxh3::new();
        let mut h2 = Xxh3::new();
        Canon::Text("ab".into()).hash_into(&mut h1);
        Canon::Bytes(b"ab".to_vec()).hash_into(&mut h2);
        assert_ne!(h1.digest(), h2.digest());
    }
}
