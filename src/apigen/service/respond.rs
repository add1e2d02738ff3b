//! How a generated API answers: problem details (and what a database failure means to the
//! client), JSON bodies, key parts in paths, ETags and content negotiation.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value, json};

use crate::store::{Fault, StoreError};

use super::super::model::Resource;
use super::super::query::BadQuery;
use super::Body;

/// A failed request: status and detail, with per-field errors for 422.
pub(super) struct Problem {
    pub(super) status: StatusCode,
    pub(super) detail: String,
    pub(super) errors: Vec<(String, String)>,
}

impl Problem {
    pub(super) fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }
}

impl From<BadQuery> for Problem {
    fn from(BadQuery(m): BadQuery) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, m)
    }
}

/// What a database failure means to the client; the driver's words stay in the log.
pub(super) fn store_problem(e: &StoreError, r: &Resource) -> Problem {
    let (status, detail) = match e.fault() {
        Fault::Unique => (
            StatusCode::CONFLICT,
            format!(
                "a row of {} with this key or unique value already exists",
                r.name
            ),
        ),
        Fault::Reference => (
            StatusCode::CONFLICT,
            format!(
                "the write breaks a foreign key of {}: a referenced row is missing, or other rows still reference this one",
                r.name
            ),
        ),
        Fault::NotNull => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("a required column of {} was given no value", r.name),
        ),
        Fault::Check => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the row breaks a check constraint of {}", r.name),
        ),
        Fault::Value => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("a value cannot be stored in its column of {}", r.name),
        ),
        Fault::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is not reachable; retry later".to_string(),
        ),
        Fault::Other => {
            tracing::error!(resource = %r.name, error = %e, "generated API: database error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the database failed the request".to_string(),
            )
        }
    };
    if status.is_client_error() {
        tracing::debug!(resource = %r.name, error = %e, "generated API: refused by the database");
    }
    Problem::new(status, detail)
}

pub(super) fn problem_response(p: Problem, instance: &str) -> Response<Body> {
    let mut body = json!({
        "type": "about:blank",
        "title": p.status.canonical_reason().unwrap_or("error"),
        "status": p.status.as_u16(),
        "detail": p.detail,
        "instance": instance,
    });
    if !p.errors.is_empty() {
        body["errors"] = p
            .errors
            .iter()
            .map(|(f, m)| json!({"field": f, "message": m}))
            .collect();
    }
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = p.status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if p.status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    r
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Percent-encodes a key part for a path: everything but unreserved characters.
pub(super) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON value as path text.
pub(super) fn key_part(v: &Value) -> String {
    match v {
        Value::String(s) => encode(s),
        other => encode(&other.to_string()),
    }
}

/// The version of a row: its JSON, hashed.
pub(super) fn etag(row: &Map<String, Value>) -> String {
    let text = serde_json::to_string(row).unwrap_or_default();
    format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// Whether the client accepts JSON.
pub(super) fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        let q_zero = part
            .split(';')
            .skip(1)
            .any(|p| matches!(p.trim().strip_prefix("q="), Some(q) if q.parse::<f64>().ok() == Some(0.0)));
        !q_zero
            && matches!(
                media.to_ascii_lowercase().as_str(),
                "*/*" | "application/*" | "application/json" | "application/problem+json"
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        let mut h = HeaderMap::new();
        assert!(accepts_json(&h));
        h.insert(
            ACCEPT,
            HeaderValue::from_static("text/html, application/json;q=0.5"),
        );
        assert!(accepts_json(&h));
        h.insert(ACCEPT, HeaderValue::from_static("text/html"));
        assert!(!accepts_json(&h));
        h.insert(ACCEPT, HeaderValue::from_static("application/json;q=0"));
        assert!(!accepts_json(&h));
    }

    #[test]
    fn keys_are_percent_encoded_in_paths() {
        assert_eq!(key_part(&json!("a,b/c d")), "a%2Cb%2Fc%20d");
        assert_eq!(key_part(&json!(42)), "42");
    }
}
