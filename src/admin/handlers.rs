//! The admin endpoints, one function each.

use std::collections::BTreeMap;

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{AdminBody, AdminState, SyncAdmin, json, problem};
use crate::config::{BUCKETS, StickyConfig, percent};
use crate::routing::RouterError;
use crate::routing::rollout::Action;
use crate::routing::table::RouteTable;

pub(super) async fn route(
    state: &AdminState,
    method: &Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Response<AdminBody> {
    let path = uri.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => json(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, ["admin", "analysis"]) => super::analysis::analysis(state, headers).await,
        (&Method::GET, ["metrics"]) => metrics(&state.metrics),
        (&Method::GET, ["admin", "routes"]) => {
            json(StatusCode::OK, &table_json(&state.router.current()))
        }
        (&Method::PUT, ["admin", "routes", name, "split"]) => set_split(state, name, body).await,
        (&Method::POST, ["admin", "routes", name, "rollback"]) => published(
            state
                .router
                .rollback_route(
                    name,
                    format!("admin: rollback route {name} to its fallback"),
                )
                .await,
        ),
        (&Method::POST, ["admin", "rollback"]) => published(state.router.rollback().await),
        (&Method::GET, ["admin", "versions"]) => versions(state),
        (&Method::GET, ["admin", "routes", name, "rollout"]) => {
            match state.rollouts.state(name).await {
                Ok(s) => json(StatusCode::OK, &json!(s)),
                Err(e) => error(e),
            }
        }
        (&Method::POST, ["admin", "routes", name, "rollout", action]) => {
            let action = match *action {
                "start" => Action::Start,
                "pause" => Action::Pause,
                "resume" => Action::Resume,
                "promote" => Action::Promote,
                "abort" => Action::Abort,
                other => {
                    return problem(
                        StatusCode::NOT_FOUND,
                        format!("unknown rollout action {other:?}"),
                    );
                }
            };
            match state.rollouts.act(name, action).await {
                Ok(s) => json(StatusCode::OK, &json!(s)),
                Err(e) => error(e),
            }
        }
        (&Method::GET, ["admin", "health"]) => health(state).await,
        (&Method::POST, ["admin", "reload"]) => reload(state).await,
        (&Method::GET, ["admin", "sync"]) => json(StatusCode::OK, &state.sync.snapshot()),
        (&Method::POST, ["admin", "sync", "quarantine", id, "retry"]) => retry(&state.sync, id),
        (&Method::GET, ["admin", "conflicts"]) => {
            conflicts(state.router.control(), &state.sync).await
        }
        (&Method::GET, ["admin", "validation"]) => super::validation::latest(&state.validation),
        (&Method::POST, ["admin", "validation", entity]) => {
            super::validation::start(&state.validation, entity)
        }
        (&Method::GET, ["admin", "audit"]) => {
            super::validation::audit(state.router.control(), uri.query()).await
        }
        (&Method::GET, ["admin", "tap"]) => {
            let events: Vec<Value> = state
                .recent_writes
                .lock()
                .map(|q| {
                    q.iter()
                        .map(|e| json!({"entity": &*e.entity, "key": e.key, "side": e.side, "method": e.method.as_str(), "at_ms": e.at_ms}))
                        .collect()
                })
                .unwrap_or_default();
            json(StatusCode::OK, &json!({ "events": events }))
        }
        (_, known) => match allowed(known) {
            Some(allow) => not_allowed(method, path, allow),
            None => problem(
                StatusCode::NOT_FOUND,
                format!("no admin endpoint {method} {path}"),
            ),
        },
    }
}

/// Asks the engine to try a quarantined change again (with the changes held behind it).
fn retry(sync: &crate::sync::status::SyncStatus, id: &str) -> Response<AdminBody> {
    match id.parse::<u64>() {
        Ok(n) if sync.request_retry(n) => json(
            StatusCode::ACCEPTED,
            &json!({"retrying": n, "detail": "the change and those held behind it go back into the stream on the next round"}),
        ),
        _ => problem(
            StatusCode::NOT_FOUND,
            format!("no quarantined change {id:?} (GET /admin/sync lists them)"),
        ),
    }
}

/// The methods a known admin path answers, for a 405's `Allow`.
fn allowed(segments: &[&str]) -> Option<&'static str> {
    Some(match segments {
        ["healthz" | "metrics"]
        | [
            "admin",
            "routes" | "versions" | "health" | "sync" | "conflicts" | "tap" | "analysis"
            | "validation" | "audit",
        ]
        | ["admin", "routes", _, "rollout"] => "GET",
        ["admin", "routes", _, "split"] => "PUT",
        ["admin", "rollback" | "reload"]
        | ["admin", "sync", "quarantine", _, "retry"]
        | ["admin", "routes", _, "rollback"]
        | ["admin", "validation", _]
        | ["admin", "routes", _, "rollout", _] => "POST",
        _ => return None,
    })
}

/// 405 with the `Allow` header RFC 9110 §15.5.6 asks for.
fn not_allowed(method: &Method, path: &str, allow: &'static str) -> Response<AdminBody> {
    let mut r = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} {path}: this endpoint answers {allow} only"),
    );
    r.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    r
}

/// The calls `strangler sync run` answers.
pub(super) async fn sync_route(
    state: &SyncAdmin,
    method: &Method,
    uri: &http::Uri,
) -> Response<AdminBody> {
    let path = uri.path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => json(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, ["metrics"]) => metrics(&state.metrics),
        (&Method::GET, ["admin", "sync"]) => json(StatusCode::OK, &state.sync.snapshot()),
        (&Method::POST, ["admin", "sync", "quarantine", id, "retry"]) => retry(&state.sync, id),
        (&Method::GET, ["admin", "conflicts"]) => conflicts(&state.control, &state.sync).await,
        (&Method::GET, ["admin", "validation"]) => super::validation::latest(&state.validation),
        (&Method::POST, ["admin", "validation", entity]) => {
            super::validation::start(&state.validation, entity)
        }
        (&Method::GET, ["admin", "audit"]) => {
            super::validation::audit(&state.control, uri.query()).await
        }
        (_, ["admin", "sync", "quarantine", _, "retry"] | ["admin", "validation", _]) => {
            not_allowed(method, path, "POST")
        }
        (_, ["healthz" | "metrics"] | ["admin", "sync" | "conflicts" | "validation" | "audit"]) => {
            not_allowed(method, path, "GET")
        }
        _ => problem(
            StatusCode::NOT_FOUND,
            format!(
                "{method} {path}: a sync worker answers GET /healthz, /metrics, /admin/sync, /admin/conflicts, /admin/validation, /admin/audit and POST /admin/sync/quarantine/{{id}}/retry, /admin/validation/{{entity}}"
            ),
        ),
    }
}

/// The Prometheus exposition.
fn metrics(handle: &metrics_exporter_prometheus::PrometheusHandle) -> Response<AdminBody> {
    let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(
        handle.render(),
    )));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Conflicts stored in the control database, newest first (the in-memory list when it is down).
async fn conflicts(
    control: &crate::control::ControlStore,
    sync: &crate::sync::status::SyncStatus,
) -> Response<AdminBody> {
    const LIMIT: usize = 500;
    let list: Vec<Value> = match control.conflicts(LIMIT).await {
        Ok(records) => records
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "control database unavailable; listing in-memory conflicts");
            sync.conflicts(LIMIT)
        }
    };
    json(StatusCode::OK, &json!({ "conflicts": list }))
}

fn error(e: RouterError) -> Response<AdminBody> {
    let status = match &e {
        RouterError::UnknownRoute(_) => StatusCode::NOT_FOUND,
        RouterError::Invalid(_) | RouterError::Build(_) => StatusCode::UNPROCESSABLE_ENTITY,
        RouterError::NoPrevious => StatusCode::CONFLICT,
        RouterError::Control(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    problem(status, e)
}

fn published(r: Result<std::sync::Arc<RouteTable>, RouterError>) -> Response<AdminBody> {
    match r {
        Ok(t) => json(StatusCode::OK, &table_json(&t)),
        Err(e) => error(e),
    }
}

fn shares(t: &crate::routing::Route) -> Value {
    let map: BTreeMap<String, f64> = t
        .allocation
        .shares()
        .into_iter()
        .map(|(n, b)| (n, f64::from(b) / 100.0))
        .collect();
    json!(map)
}

/// The table as JSON: version, time, reason and each route's split.
pub fn table_json(t: &RouteTable) -> Value {
    let routes: Vec<Value> = t
        .routes
        .iter()
        .map(|r| {
            let sticky = match &r.sticky {
                StickyConfig::None => json!(null),
                StickyConfig::Cookie(c) => json!({"cookie": c}),
                StickyConfig::Header(h) => json!({"header": h.as_str()}),
                StickyConfig::JwtClaim(c) => json!({"jwt_claim": c}),
                StickyConfig::ClientIp => json!({"client_ip": true}),
            };
            json!({
                "name": r.name,
                "path_prefix": r.path_prefix(),
                "split": shares(r),
                "fallback": r.targets[r.fallback as usize].upstream.name,
                "sticky": sticky,
                "entity": r.entity,
            })
        })
        .collect();
    json!({"version": t.version, "created_at_ms": t.created_at_ms, "reason": t.reason, "routes": routes})
}

async fn set_split(state: &AdminState, name: &str, body: &[u8]) -> Response<AdminBody> {
    let parsed: BTreeMap<String, f64> = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("body must be a JSON object of upstream to percent: {e}"),
            );
        }
    };
    let mut weights = Vec::with_capacity(parsed.len());
    for (upstream, pct) in parsed {
        let scaled = pct * 100.0;
        if !(0.0..=100.0).contains(&pct) || (scaled - scaled.round()).abs() > 1e-6 {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{upstream}: {pct} must be 0..100 in steps of 0.01"),
            );
        }
        weights.push((upstream, scaled.round() as u32));
    }
    let total: u32 = weights.iter().map(|(_, b)| b).sum();
    if total != BUCKETS {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("split sums to {}, must be 100", percent(total)),
        );
    }
    published(
        state
            .router
            .set_split(name, weights, format!("admin: split of route {name}"))
            .await,
    )
}

fn versions(state: &AdminState) -> Response<AdminBody> {
    let list: Vec<Value> = state
        .router
        .versions()
        .iter()
        .rev()
        .map(|t| {
            let splits: BTreeMap<&str, Value> = t.routes.iter().map(|r| (r.name.as_str(), shares(r))).collect();
            json!({"version": t.version, "created_at_ms": t.created_at_ms, "reason": t.reason, "splits": splits})
        })
        .collect();
    json(
        StatusCode::OK,
        &json!({"current": state.router.current().version, "versions": list}),
    )
}

async fn health(state: &AdminState) -> Response<AdminBody> {
    let ups: Vec<Value> = state
        .router
        .upstreams()
        .await
        .iter()
        .map(|u| {
            json!({
                "name": u.name,
                "url": format!("http://{}{}", u.authority, u.base_path),
                "available": u.health.is_available(),
                "probe_ok": u.health.probe_ok(),
                "ejected": u.health.is_ejected(),
            })
        })
        .collect();
    json(StatusCode::OK, &json!({"upstreams": ups}))
}

async fn reload(state: &AdminState) -> Response<AdminBody> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if state.reload.send(tx).await.is_err() {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is shutting down",
        );
    }
    match rx.await {
        Ok(Ok(version)) => json(
            StatusCode::OK,
            &json!({"reloaded": true, "version": version}),
        ),
        Ok(Err(e)) => problem(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(_) => problem(StatusCode::SERVICE_UNAVAILABLE, "reload was interrupted"),
    }
}
