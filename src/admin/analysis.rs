//! `GET /admin/analysis`: the boundary analyzer on the monolith's database with the evidence
//! gathered while the gateway runs (routed writes from the tap, transactions the sync engine
//! captured). JSON, or Markdown with `Accept: text/markdown`.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::{AdminBody, AdminState, json, problem};
use crate::analyze::{Input, Kind, Observation, Options, analyze};
use crate::config::sync::SyncConfig;

/// The side whose database is analyzed: `monolith`, else the only side there is.
pub fn analysis_side(cfg: &SyncConfig) -> Option<String> {
    if cfg.sides.contains_key("monolith") {
        return Some("monolith".into());
    }
    match cfg.sides.keys().collect::<Vec<_>>()[..] {
        [only] => Some(only.clone()),
        _ => None,
    }
}

/// Analyzes now and answers with the report.
pub(super) async fn analysis(state: &AdminState, headers: &http::HeaderMap) -> Response<AdminBody> {
    let config = state.router.config();
    let Some(side) = analysis_side(&config.sync) else {
        return problem(
            StatusCode::NOT_FOUND,
            "no database to analyze: add [sides.monolith] with its database to the config",
        );
    };
    let url = config.sync.sides[&side].database.clone();
    let mut input = match Input::from_database(&url).await {
        Ok(i) => i,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let (requests, dropped) = state.evidence.snapshot();
    input.sources.push(format!(
        "write tap: {} routed writes",
        requests.iter().map(|o| o.count).sum::<u64>()
    ));
    if dropped > 0 {
        input.warnings.push(format!(
            "{dropped} routed writes found no room in the evidence store"
        ));
    }
    input.observations.extend(requests);
    let captured = state.sync.transactions(&side);
    input.sources.push(format!(
        "sync engine: {} captured transactions on {side}",
        captured.iter().map(|(_, n)| n).sum::<u64>()
    ));
    for (tables, count) in captured {
        input.observations.push(Observation::new(
            Kind::Transaction,
            tables.clone(),
            tables,
            None,
            count,
        ));
    }
    let report =
        match tokio::task::spawn_blocking(move || analyze(input, &Options::default())).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return problem(StatusCode::UNPROCESSABLE_ENTITY, e),
            Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
    let markdown = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/markdown"));
    if markdown {
        let mut r = Response::new(Full::new(Bytes::from(crate::analyze::render::markdown(
            &report,
        ))));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/markdown; charset=utf-8"),
        );
        return r;
    }
    json(
        StatusCode::OK,
        &serde_json::to_value(&report).unwrap_or_default(),
    )
}
