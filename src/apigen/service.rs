//! A generated service answering HTTP: routing a request to its resource and operation,
//! checking it, running it on a pooled connection and answering with JSON, an ETag, links,
//! or an RFC 9457 problem. Successful writes are offered to the write tap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, IF_MATCH};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value, json};

use crate::store::Fault;
use crate::tap::Tap;

use super::model::Resource;
use super::pool::{Lease, Pool};
use super::sql::Sql;
use super::types::{Db, row_out};
use super::{Options, metrics as m, openapi};

mod read;
mod respond;
mod write;

use respond::{Problem, accepts_json, key_part, problem_response, store_problem};

/// A response body.
pub type Body = Full<Bytes>;

/// A generated service, ready to answer.
pub struct Service {
    /// The service's name.
    pub name: String,
    /// Its database kind.
    pub db: Db,
    /// Its resources.
    pub resources: Vec<Resource>,
    by_name: HashMap<String, usize>,
    /// Serving options.
    pub opts: Options,
    /// The OpenAPI document, serialized.
    pub document: Bytes,
    pool: Pool,
    tap: Option<(Tap, HashMap<String, Arc<str>>)>,
}

impl Service {
    /// A service over `resources`, its connections made on first use.
    pub fn new(
        name: &str,
        db: Db,
        resources: Vec<Resource>,
        opts: Options,
        url: &str,
        tap: Option<(Tap, HashMap<String, Arc<str>>)>,
    ) -> Service {
        let document = openapi::document(name, &resources, &opts, db);
        let by_name = resources
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        Service {
            name: name.to_string(),
            db,
            pool: Pool::new(url, opts.pool),
            resources,
            by_name,
            opts,
            document: Bytes::from(document.to_string()),
            tap,
        }
    }

    /// Answers one request.
    pub async fn handle(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: Result<&[u8], String>,
    ) -> Response<Body> {
        let started = Instant::now();
        let (op, mut resp) = self.route(method, path, query, headers, body).await;
        if self.opts.deprecated {
            resp.headers_mut()
                .insert("deprecation", HeaderValue::from_static("true"));
        }
        if let Some(s) = self
            .opts
            .sunset
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            resp.headers_mut().insert("sunset", s);
        }
        m::record(&self.name, &op, resp.status(), started.elapsed());
        resp
    }

    async fn route(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: Result<&[u8], String>,
    ) -> (String, Response<Body>) {
        let path = path.strip_prefix(self.opts.mount.as_str()).unwrap_or(path);
        let path = if path.is_empty() { "/" } else { path };
        if path == "/openapi.json" {
            if method != Method::GET && method != Method::HEAD {
                return ("openapi".into(), self.not_allowed("GET, HEAD", path));
            }
            let mut r = Response::new(Full::new(self.document.clone()));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return ("openapi".into(), r);
        }
        let mut parts = path.trim_start_matches('/').splitn(3, '/');
        let (Some("v1"), Some(name)) = (parts.next(), parts.next()) else {
            return (
                "unknown".into(),
                problem_response(
                    Problem::new(StatusCode::NOT_FOUND, format!("no resource at {path}")),
                    path,
                ),
            );
        };
        let key = parts.next();
        let Some(r) = self.by_name.get(name).map(|&i| &self.resources[i]) else {
            return (
                "unknown".into(),
                problem_response(
                    Problem::new(StatusCode::NOT_FOUND, format!("no resource named {name:?}")),
                    path,
                ),
            );
        };
        let writable = r.read_only.is_none() && !self.opts.read_only;
        let (op, allow) = match (key, method.as_str()) {
            (None, "GET" | "HEAD") => ("list", ""),
            (None, "POST") if writable => ("create", ""),
            (None, _) => (
                "",
                if writable {
                    "GET, HEAD, POST"
                } else {
                    "GET, HEAD"
                },
            ),
            (Some(_), _) if r.key.is_empty() => ("", ""),
            (Some(_), "GET" | "HEAD") => ("get", ""),
            (Some(_), "PUT") if writable => ("replace", ""),
            (Some(_), "PATCH") if writable => ("update", ""),
            (Some(_), "DELETE") if writable => ("delete", ""),
            (Some(_), _) => (
                "",
                if writable {
                    "GET, HEAD, PUT, PATCH, DELETE"
                } else {
                    "GET, HEAD"
                },
            ),
        };
        let label = format!("{op}_{}", r.name);
        if op.is_empty() {
            if allow.is_empty() {
                return (
                    "unknown".into(),
                    problem_response(
                        Problem::new(
                            StatusCode::NOT_FOUND,
                            format!("{} has no key, so its rows have no paths", r.name),
                        ),
                        path,
                    ),
                );
            }
            return (format!("other_{}", r.name), self.not_allowed(allow, path));
        }
        if !accepts_json(headers) {
            return (
                label,
                problem_response(
                    Problem::new(
                        StatusCode::NOT_ACCEPTABLE,
                        "this API answers application/json (and application/problem+json)",
                    ),
                    path,
                ),
            );
        }
        let result = match op {
            "list" => self.list(r, query).await,
            "get" => self.get(r, key.unwrap_or(""), query).await,
            _ => match self.body(headers, body) {
                Err(p) => Err(p),
                Ok(doc) => {
                    let if_match = headers.get(IF_MATCH).and_then(|v| v.to_str().ok());
                    let out = match op {
                        "create" => self.create(r, doc).await,
                        "delete" => self.delete(r, key.unwrap_or(""), query, if_match).await,
                        _ => {
                            self.update(r, key.unwrap_or(""), query, doc, op == "replace", if_match)
                                .await
                        }
                    };
                    if let Ok((_, Some(k))) = &out {
                        self.offer(r, k, method);
                    }
                    out.map(|(resp, _)| resp)
                }
            },
        };
        let mut resp = result.unwrap_or_else(|p| problem_response(p, path));
        if method == Method::HEAD {
            *resp.body_mut() = Full::new(Bytes::new());
        }
        (label, resp)
    }

    fn not_allowed(&self, allow: &'static str, path: &str) -> Response<Body> {
        let mut r = problem_response(
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} answers {allow}"),
            ),
            path,
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        r
    }

    /// The JSON object a write carries; DELETE takes none.
    fn body(&self, headers: &HeaderMap, body: Result<&[u8], String>) -> Result<Value, Problem> {
        let body = body.map_err(|e| Problem::new(StatusCode::PAYLOAD_TOO_LARGE, e))?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        let ct = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media != "application/json" && !media.ends_with("+json") {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("the body must be application/json, not {ct:?}"),
            ));
        }
        serde_json::from_slice(body).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            )
        })
    }

    async fn lease(&self, r: &Resource) -> Result<Lease<'_>, Problem> {
        self.pool.get().await.map_err(|e| {
            tracing::warn!(service = %self.name, error = %e, "generated API: cannot connect");
            let mut p = store_problem(&e, r);
            if p.status.is_server_error() || p.status.is_client_error() {
                p = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is not reachable; retry later",
                );
            }
            p
        })
    }

    /// Runs a query; a connection fault marks the lease broken.
    async fn rows(
        &self,
        lease: &mut Lease<'_>,
        r: &Resource,
        sql: &Sql,
    ) -> Result<Vec<Vec<Value>>, Problem> {
        match lease
            .store()
            .statements()
            .rows(&sql.text, &sql.params)
            .await
        {
            Ok(rows) => Ok(rows),
            Err(e) => {
                if e.fault() == Fault::Unavailable {
                    lease.broken = true;
                }
                Err(store_problem(&e, r))
            }
        }
    }

    /// Runs a statement that returns no rows; a connection fault marks the lease broken.
    async fn execute(
        &self,
        lease: &mut Lease<'_>,
        r: &Resource,
        sql: &Sql,
    ) -> Result<u64, Problem> {
        match lease
            .store()
            .statements()
            .execute(&sql.text, &sql.params)
            .await
        {
            Ok(n) => Ok(n),
            Err(e) => {
                if e.fault() == Fault::Unavailable {
                    lease.broken = true;
                }
                Err(store_problem(&e, r))
            }
        }
    }

    fn row_json(&self, r: &Resource, fields: &[usize], values: Vec<Value>) -> Map<String, Value> {
        let spec: Vec<_> = fields
            .iter()
            .map(|&i| {
                let f = &r.fields[i];
                (f.name.as_str(), &f.ty, f.form)
            })
            .collect();
        row_out(&spec, values)
    }

    /// The row's path, when every key column was read.
    fn self_path(&self, r: &Resource, row: &Map<String, Value>) -> Option<String> {
        if r.key.is_empty() {
            return None;
        }
        let parts: Option<Vec<String>> = r
            .key_fields()
            .map(|f| row.get(&f.name).filter(|v| !v.is_null()).map(key_part))
            .collect();
        Some(format!(
            "{}/v1/{}/{}",
            self.opts.mount,
            r.name,
            parts?.join(",")
        ))
    }

    /// Adds `_links`: the row itself and each linked row whose key columns were read.
    fn with_links(&self, r: &Resource, mut row: Map<String, Value>) -> Map<String, Value> {
        let mut links = Map::new();
        if let Some(p) = self.self_path(r, &row) {
            links.insert("self".into(), json!({"href": p}));
        }
        for l in r.links.iter().filter(|l| l.to_key) {
            let parts: Option<Vec<String>> = l
                .columns
                .iter()
                .map(|c| row.get(c).filter(|v| !v.is_null()).map(key_part))
                .collect();
            if let Some(parts) = parts {
                links.insert(
                    l.rel.clone(),
                    json!({"href": format!("{}/v1/{}/{}", self.opts.mount, l.resource, parts.join(","))}),
                );
            }
        }
        row.insert("_links".into(), Value::Object(links));
        row
    }
}
