//! The validator's endpoints: every entity's latest validation, a run asked for now, and the
//! audit log.

use http::{Response, StatusCode};
use serde_json::json;

use super::{AdminBody, json, problem};
use crate::apigen::query::decode;
use crate::control::ControlStore;
use crate::validate::audit::{Filter, show};
use crate::validate::continuous::{UnknownEntity, Validations};

/// Most audit records one call returns.
const MAX_RECORDS: usize = 10_000;

/// `GET /admin/validation`.
pub(super) fn latest(v: &Validations) -> Response<AdminBody> {
    json(StatusCode::OK, &v.snapshot())
}

/// `POST /admin/validation/{entity}`: 202 once queued.
pub(super) fn start(v: &Validations, entity: &str) -> Response<AdminBody> {
    match v.request(entity) {
        Ok(()) => json(
            StatusCode::ACCEPTED,
            &json!({"entity": entity, "queued": true, "status": "/admin/validation"}),
        ),
        Err(UnknownEntity(known)) => problem(
            StatusCode::NOT_FOUND,
            format!(
                "entity {entity:?} is not in the config (entities: {})",
                known.join(", ")
            ),
        ),
    }
}

/// The filter a query string asks for; `Err` names the parameter at fault.
fn filter(query: Option<&str>) -> Result<Filter, String> {
    let mut f = Filter {
        limit: 100,
        ..Filter::default()
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v, true).map_err(|e| format!("{k}: {}", e.0))?;
        match k {
            "entity" => f.entity = Some(v),
            "kind" => f.kind = Some(v),
            "after" => {
                f.after = v
                    .parse()
                    .map_err(|_| format!("after: {v:?} is not a sequence number"))?
            }
            "limit" => {
                f.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_RECORDS).contains(n))
                    .ok_or_else(|| {
                        format!("limit: {v:?} is not a number from 1 to {MAX_RECORDS}")
                    })?
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (entity, kind, after, limit)"
                ));
            }
        }
    }
    Ok(f)
}

/// `GET /admin/audit?entity=&kind=&after=&limit=`: records oldest first, and the sequence
/// number to pass as `after` for the next page.
pub(super) async fn audit(control: &ControlStore, query: Option<&str>) -> Response<AdminBody> {
    let f = match filter(query) {
        Ok(f) => f,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e),
    };
    match show(control, &f).await {
        Ok(records) => {
            let next = records.last().map(|r| r.seq);
            json(
                StatusCode::OK,
                &json!({"records": records, "next_after": next}),
            )
        }
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("control database: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_become_filters_or_name_the_fault() {
        let f = filter(Some("entity=user%20s&kind=repair&after=5&limit=7")).unwrap();
        assert_eq!(f.entity.as_deref(), Some("user s"));
        assert_eq!(f.kind.as_deref(), Some("repair"));
        assert_eq!((f.after, f.limit), (5, 7));
        assert_eq!(filter(None).unwrap().limit, 100);
        assert!(filter(Some("limit=0")).unwrap_err().starts_with("limit"));
        assert!(filter(Some("after=x")).unwrap_err().starts_with("after"));
        assert!(filter(Some("color=red")).unwrap_err().contains("color"));
        assert!(
            filter(Some("entity=%zz"))
                .unwrap_err()
                .starts_with("entity")
        );
    }
}
