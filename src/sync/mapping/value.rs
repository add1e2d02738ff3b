//! Values across type families: the casts a mapping configures, the implicit text ↔ JSON
//! trade, a column's form, and the split/join transforms.

use serde_json::Value;

use crate::config::sync::TypeFamily;
use crate::store::{Form, utc_naive};

/// A value of a column of family `from` for a column of family `to`, with no cast configured:
/// a text column's value becomes the JSON document it spells (refused when it spells none), a
/// JSON document the text that spells it; everything else is unchanged.
pub(super) fn between(v: Value, from: TypeFamily, to: TypeFamily) -> Result<Value, String> {
    use TypeFamily::{Json, Text};
    Ok(match (from, to, v) {
        (Text, Json, Value::String(s)) => serde_json::from_str(&s)
            .map_err(|e| format!("text {s:?} is not a JSON document ({e}) for a JSON column"))?,
        (Json, Text, v) if !v.is_null() => Value::String(v.to_string()),
        (_, _, v) => v,
    })
}

/// A value as a column of `form` takes it.
pub(super) fn in_form(v: &mut Value, form: Form) {
    match form {
        Form::Plain => {}
        Form::UtcNaive => {
            if let Value::String(s) = v
                && let Some(utc) = utc_naive(s)
            {
                *s = utc;
            }
        }
        Form::JsonText => {
            if !v.is_null() {
                *v = Value::String(v.to_string());
            }
        }
    }
}

pub(super) fn map_str(v: Value, f: impl Fn(&str) -> String) -> Value {
    match v {
        Value::String(s) => Value::String(f(&s)),
        other => other,
    }
}

pub(super) fn split(v: &Value, sep: &str) -> (Value, Value) {
    match v {
        Value::String(s) => match s.split_once(sep) {
            Some((a, b)) => (Value::from(a), Value::from(b)),
            None => (Value::from(s.as_str()), Value::Null),
        },
        _ => (Value::Null, Value::Null),
    }
}

pub(super) fn join(a: Option<&Value>, b: Option<&Value>, sep: &str) -> Value {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    match (text(a), text(b)) {
        (Some(a), Some(b)) => Value::from(format!("{a}{sep}{b}")),
        (Some(a), None) => Value::from(a),
        (None, Some(b)) => Value::from(b),
        (None, None) => Value::Null,
    }
}

/// Casts a value to a type family.
pub fn cast(v: &Value, to: TypeFamily) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    Ok(match to {
        TypeFamily::Integer => match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => v.clone(),
            Value::Number(n) => Value::from(n.as_f64().unwrap_or(0.0).round() as i64),
            Value::Bool(b) => Value::from(i64::from(*b)),
            Value::String(s) => Value::from(
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{s:?} is not an integer"))?,
            ),
            other => return Err(format!("{other} is not an integer")),
        },
        // A number's text is kept, every digit of a decimal with it.
        TypeFamily::Real => match v {
            Value::Number(_) => v.clone(),
            Value::String(s) => match s.trim().parse::<serde_json::Number>() {
                Ok(n) if n.as_f64().is_some_and(f64::is_finite) => Value::Number(n),
                _ if s.trim().parse::<f64>().is_ok() => {
                    return Err(format!("{s:?} is not a finite number"));
                }
                _ => return Err(format!("{s:?} is not a number")),
            },
            other => return Err(format!("{other} is not a number")),
        },
        TypeFamily::Boolean => match v {
            Value::Bool(_) => v.clone(),
            Value::Number(n) => Value::Bool(n.as_f64() != Some(0.0)),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" | "y" => Value::Bool(true),
                "false" | "f" | "0" | "no" | "n" => Value::Bool(false),
                _ => return Err(format!("{s:?} is not a boolean")),
            },
            other => return Err(format!("{other} is not a boolean")),
        },
        TypeFamily::Text | TypeFamily::Time | TypeFamily::Json | TypeFamily::Blob => match v {
            Value::String(_) => v.clone(),
            other => Value::from(other.to_string()),
        },
    })
}
