//! A generated service answering HTTP: routing a request to its resource and operation,
//! checking it, running it on a pooled connection and answering with JSON, an ETag, links,
//! or an RFC 9457 problem. Successful writes are offered to the write tap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE, ETAG, IF_MATCH, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value, json};

use crate::store::{Fault, Param, StoreError};
use crate::tap::{Tap, WriteEvent};

use super::model::Resource;
use super::pool::{Lease, Pool};
use super::query::{self, BadQuery, Sql, ident, table};
use super::types::{Db, row_out};
use super::{Options, metrics as m, openapi};

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

/// A failed request: status and detail, with per-field errors for 422.
struct Problem {
    status: StatusCode,
    detail: String,
    errors: Vec<(String, String)>,
}

impl Problem {
    fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
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
fn store_problem(e: &StoreError, r: &Resource) -> Problem {
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

fn problem_response(p: Problem, instance: &str) -> Response<Body> {
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

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Percent-encodes a key part for a path: everything but unreserved characters.
fn encode(s: &str) -> String {
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
fn key_part(v: &Value) -> String {
    match v {
        Value::String(s) => encode(s),
        other => encode(&other.to_string()),
    }
}

/// The version of a row: its JSON, hashed.
fn etag(row: &Map<String, Value>) -> String {
    let text = serde_json::to_string(row).unwrap_or_default();
    format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// Whether the client accepts JSON.
fn accepts_json(headers: &HeaderMap) -> bool {
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

    /// A read the database refused over a value is the query's fault: 400, as documented.
    fn read_problem(p: Problem) -> Problem {
        if p.status == StatusCode::UNPROCESSABLE_ENTITY {
            Problem::new(StatusCode::BAD_REQUEST, p.detail)
        } else {
            p
        }
    }

    async fn list(&self, r: &Resource, query: &str) -> Result<Response<Body>, Problem> {
        self.list_rows(r, query).await.map_err(Self::read_problem)
    }

    async fn list_rows(&self, r: &Resource, query: &str) -> Result<Response<Body>, Problem> {
        let q = query::list(r, query, self.opts.max_limit, self.db)?;
        let fields: Vec<usize> = q
            .fields
            .clone()
            .unwrap_or_else(|| (0..r.fields.len()).collect());
        // The key is read even when not asked for: it makes the cursor.
        let mut read = fields.clone();
        for &k in &r.key {
            if !read.contains(&k) {
                read.push(k);
            }
        }
        let mut sql = Sql {
            text: format!(
                "SELECT {} FROM {}",
                query::select_list(r, &read, self.db),
                table(&r.table, self.db)
            ),
            params: Vec::new(),
        };
        sql.text = format!(
            "SELECT {} FROM {}",
            query::select_list(r, &read, self.db),
            table(&r.table, self.db)
        );
        query::conditions(&mut sql, r, &q, self.db);
        let where_params = sql.params.clone();
        let where_text = sql.text.split_once(" FROM ").map(|(_, w)| w.to_string());
        sql.text.push_str(&query::order(r, &q, self.db));
        sql.text
            .push_str(&format!(" LIMIT {} OFFSET {}", q.limit + 1, q.offset));
        let mut lease = self.lease(r).await?;
        let mut rows = self.rows(&mut lease, r, &sql).await?;
        let more = rows.len() as u64 > q.limit;
        rows.truncate(q.limit as usize);
        let mut items = Vec::with_capacity(rows.len());
        let mut last_key = None;
        for values in rows {
            let full = self.row_json(r, &read, values);
            last_key = self.self_path(r, &full).map(|p| {
                let k = p.rsplit('/').next().unwrap_or("").to_string();
                query::decode(&k, false).map_or(k.clone(), |d| if r.key.len() == 1 { d } else { k })
            });
            let mut shown = self.with_links(r, full);
            shown.retain(|k, _| k == "_links" || fields.iter().any(|&i| r.fields[i].name == *k));
            items.push(Value::Object(shown));
        }
        let mut body = json!({"items": items, "next": Value::Null});
        let mut link = None;
        if more {
            let rest: Vec<&str> = query
                .split('&')
                .filter(|p| {
                    let k = p.split('=').next().unwrap_or("");
                    !p.is_empty() && k != "after" && k != "offset"
                })
                .collect();
            let base = format!("{}/v1/{}?{}", self.opts.mount, r.name, rest.join("&"));
            let sep = if rest.is_empty() { "" } else { "&" };
            if q.sort.is_empty() && !r.key.is_empty() && q.offset == 0 {
                if let Some(k) = last_key {
                    link = Some(format!("{base}{sep}after={}", encode(&k)));
                    body["next"] = Value::String(k);
                }
            } else {
                let next = q.offset + q.limit;
                link = Some(format!("{base}{sep}offset={next}"));
                body["next"] = Value::String(format!("offset={next}"));
            }
        }
        if q.count {
            let mut count = Sql {
                text: format!("SELECT count(*) FROM {}", where_text.unwrap_or_default()),
                params: where_params,
            };
            if self.db == Db::Postgres {
                count.text = count
                    .text
                    .replacen("SELECT count(*)", "SELECT count(*)::int8", 1);
            }
            let n = self.rows(&mut lease, r, &count).await?;
            body["count"] = n
                .first()
                .and_then(|row| row.first())
                .cloned()
                .unwrap_or(json!(0));
        }
        let mut resp = json_response(StatusCode::OK, &body);
        if let Some(l) =
            link.and_then(|l| HeaderValue::from_str(&format!("<{l}>; rel=\"next\"")).ok())
        {
            resp.headers_mut().insert(http::header::LINK, l);
        }
        Ok(resp)
    }

    /// Reads one row by key (inside the caller's transaction when there is one).
    async fn read(
        &self,
        lease: &mut Lease<'_>,
        r: &Resource,
        key: &[Param],
        fields: &[usize],
        lock: bool,
    ) -> Result<Option<Map<String, Value>>, Problem> {
        let mut sql = Sql {
            text: format!(
                "SELECT {} FROM {} WHERE ",
                query::select_list(r, fields, self.db),
                table(&r.table, self.db)
            ),
            params: Vec::new(),
        };
        query::key_condition(&mut sql, r, key, self.db);
        if lock && self.db != Db::Sqlite {
            sql.text.push_str(" FOR UPDATE");
        }
        let rows = self.rows(lease, r, &sql).await?;
        Ok(rows
            .into_iter()
            .next()
            .map(|values| self.row_json(r, fields, values)))
    }

    fn row_response(
        &self,
        status: StatusCode,
        r: &Resource,
        row: Map<String, Value>,
        shown: Option<&[usize]>,
    ) -> Response<Body> {
        let tag = etag(&row);
        let mut row = self.with_links(r, row);
        if let Some(fields) = shown {
            row.retain(|k, _| k == "_links" || fields.iter().any(|&i| r.fields[i].name == *k));
        }
        let mut resp = json_response(status, &Value::Object(row));
        if let Ok(v) = HeaderValue::from_str(&tag) {
            resp.headers_mut().insert(ETAG, v);
        }
        resp
    }

    async fn get(
        &self,
        r: &Resource,
        raw_key: &str,
        query: &str,
    ) -> Result<Response<Body>, Problem> {
        self.get_row(r, raw_key, query)
            .await
            .map_err(Self::read_problem)
    }

    async fn get_row(
        &self,
        r: &Resource,
        raw_key: &str,
        query: &str,
    ) -> Result<Response<Body>, Problem> {
        let key = query::key(r, raw_key, self.db)?;
        let shown = query::fields(r, query)?;
        let all: Vec<usize> = (0..r.fields.len()).collect();
        let mut lease = self.lease(r).await?;
        match self.read(&mut lease, r, &key, &all, false).await? {
            Some(row) => Ok(self.row_response(StatusCode::OK, r, row, shown.as_deref())),
            None => Err(Problem::new(
                StatusCode::NOT_FOUND,
                format!("no row of {} with key {raw_key}", r.name),
            )),
        }
    }

    /// The body's members checked and bound: (field, value) in field order.
    fn members(
        &self,
        r: &Resource,
        doc: Value,
        require: bool,
        keyless: bool,
    ) -> Result<Vec<(usize, Param)>, Problem> {
        let Value::Object(obj) = doc else {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the body must be a JSON object of column values",
            ));
        };
        let mut errors = Vec::new();
        let mut out = Vec::new();
        for (k, v) in &obj {
            let Some(i) = r.field(k) else {
                errors.push((k.clone(), format!("{} has no column {k:?}", r.name)));
                continue;
            };
            let f = &r.fields[i];
            if v.is_null() {
                if f.nullable {
                    out.push((i, Param::Null));
                } else {
                    errors.push((k.clone(), "must not be null".into()));
                }
                continue;
            }
            match f.ty.bind(v, self.db) {
                Ok(p) => out.push((i, p)),
                Err(e) => errors.push((k.clone(), e)),
            }
        }
        if require {
            for (i, f) in r.fields.iter().enumerate() {
                if !f.nullable
                    && !f.has_default
                    && !obj.contains_key(&f.name)
                    && (!keyless || !r.key.contains(&i))
                {
                    errors.push((f.name.clone(), "is required".into()));
                }
            }
        }
        if errors.is_empty() {
            out.sort_by_key(|(i, _)| *i);
            Ok(out)
        } else {
            let detail = errors
                .iter()
                .map(|(f, m)| format!("{f}: {m}"))
                .collect::<Vec<_>>()
                .join("; ");
            Err(Problem {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                detail,
                errors,
            })
        }
    }

    async fn create(
        &self,
        r: &Resource,
        doc: Value,
    ) -> Result<(Response<Body>, Option<String>), Problem> {
        let values = self.members(r, doc, true, false)?;
        let all: Vec<usize> = (0..r.fields.len()).collect();
        let mut sql = Sql::default();
        let t = table(&r.table, self.db);
        if values.is_empty() {
            sql.text = match self.db {
                Db::Mysql => format!("INSERT INTO {t} () VALUES ()"),
                _ => format!("INSERT INTO {t} DEFAULT VALUES"),
            };
        } else {
            let cols: Vec<String> = values
                .iter()
                .map(|(i, _)| ident(&r.fields[*i].name, self.db))
                .collect();
            sql.text = format!("INSERT INTO {t} ({}) VALUES (", cols.join(", "));
            for (n, (i, p)) in values.into_iter().enumerate() {
                if n > 0 {
                    sql.text.push_str(", ");
                }
                sql.param(p, &r.fields[i].declared, self.db);
            }
            sql.text.push(')');
        }
        sql.text.push_str(" RETURNING ");
        sql.text.push_str(&query::select_list(r, &all, self.db));
        let mut lease = self.lease(r).await?;
        let rows = self.rows(&mut lease, r, &sql).await?;
        let row = rows
            .into_iter()
            .next()
            .map(|v| self.row_json(r, &all, v))
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the insert returned no row",
                )
            })?;
        let path = self.self_path(r, &row);
        let mut resp = self.row_response(StatusCode::CREATED, r, row, None);
        if let Some(v) = path.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
            resp.headers_mut().insert(LOCATION, v);
        }
        let key = path.map(|p| p.rsplit('/').next().unwrap_or("").to_string());
        Ok((resp, key))
    }

    async fn begin(&self, lease: &mut Lease<'_>, r: &Resource) -> Result<(), Problem> {
        let sql = if self.db == Db::Sqlite {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        };
        lease.store().statements().control(sql).await.map_err(|e| {
            lease.broken = true;
            store_problem(&e, r)
        })
    }

    async fn end(lease: &mut Lease<'_>, commit: bool) -> Result<(), StoreError> {
        let r = lease
            .store()
            .statements()
            .control(if commit { "COMMIT" } else { "ROLLBACK" })
            .await;
        if r.is_err() {
            lease.broken = true;
        }
        r
    }

    /// Inside an open transaction: the locked row, or 404 / 412.
    async fn current(
        &self,
        lease: &mut Lease<'_>,
        r: &Resource,
        key: &[Param],
        raw_key: &str,
        if_match: Option<&str>,
    ) -> Result<Map<String, Value>, Problem> {
        let all: Vec<usize> = (0..r.fields.len()).collect();
        let row = self.read(lease, r, key, &all, true).await?.ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                format!("no row of {} with key {raw_key}", r.name),
            )
        })?;
        if let Some(want) = if_match {
            let tag = etag(&row);
            let ok = want.split(',').any(|t| {
                let t = t.trim();
                t == "*" || t == tag || t.strip_prefix("W/") == Some(tag.as_str())
            });
            if !ok {
                return Err(Problem::new(
                    StatusCode::PRECONDITION_FAILED,
                    format!("the row of {} changed: its ETag is now {tag}", r.name),
                ));
            }
        }
        Ok(row)
    }

    async fn update(
        &self,
        r: &Resource,
        raw_key: &str,
        query: &str,
        doc: Value,
        replace: bool,
        if_match: Option<&str>,
    ) -> Result<(Response<Body>, Option<String>), Problem> {
        if !query.is_empty() {
            return Err(BadQuery(format!("{query:?}: writes take no query parameters")).into());
        }
        let key = query::key(r, raw_key, self.db)?;
        let mut values = self.members(r, doc, replace, true)?;
        // The key is the path's: a body naming a key column would try to change it.
        let keyed: Vec<(String, String)> = values
            .iter()
            .filter(|(i, _)| r.key.contains(i))
            .map(|(i, _)| {
                (
                    r.fields[*i].name.clone(),
                    "is a key column: the path gives the key, and a key never changes".to_string(),
                )
            })
            .collect();
        if !keyed.is_empty() {
            return Err(Problem {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                detail: keyed
                    .iter()
                    .map(|(f, m)| format!("{f}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; "),
                errors: keyed,
            });
        }
        if replace {
            // Columns a replacement leaves out become NULL (those with a default keep theirs).
            for (i, f) in r.fields.iter().enumerate() {
                if f.nullable && !r.key.contains(&i) && !values.iter().any(|(j, _)| *j == i) {
                    values.push((i, Param::Null));
                }
            }
            values.sort_by_key(|(i, _)| *i);
        }
        let mut lease = self.lease(r).await?;
        self.begin(&mut lease, r).await?;
        let result = async {
            let before = self.current(&mut lease, r, &key, raw_key, if_match).await?;
            if !values.is_empty() {
                let mut sql = Sql {
                    text: format!("UPDATE {} SET ", table(&r.table, self.db)),
                    params: Vec::new(),
                };
                for (n, (i, p)) in values.iter().enumerate() {
                    if n > 0 {
                        sql.text.push_str(", ");
                    }
                    sql.text.push_str(&ident(&r.fields[*i].name, self.db));
                    sql.text.push_str(" = ");
                    sql.param(p.clone(), &r.fields[*i].declared, self.db);
                }
                sql.text.push_str(" WHERE ");
                query::key_condition(&mut sql, r, &key, self.db);
                match lease
                    .store()
                    .statements()
                    .execute(&sql.text, &sql.params)
                    .await
                {
                    Ok(_) => {}
                    Err(e) => {
                        if e.fault() == Fault::Unavailable {
                            lease.broken = true;
                        }
                        return Err(store_problem(&e, r));
                    }
                }
                let all: Vec<usize> = (0..r.fields.len()).collect();
                return self
                    .read(&mut lease, r, &key, &all, false)
                    .await?
                    .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "the row vanished"));
            }
            Ok(before)
        }
        .await;
        match result {
            Ok(row) => {
                Self::end(&mut lease, true)
                    .await
                    .map_err(|e| store_problem(&e, r))?;
                Ok((
                    self.row_response(StatusCode::OK, r, row, None),
                    Some(raw_key.to_string()),
                ))
            }
            Err(p) => {
                let _ = Self::end(&mut lease, false).await;
                Err(p)
            }
        }
    }

    async fn delete(
        &self,
        r: &Resource,
        raw_key: &str,
        query: &str,
        if_match: Option<&str>,
    ) -> Result<(Response<Body>, Option<String>), Problem> {
        if !query.is_empty() {
            return Err(BadQuery(format!("{query:?}: writes take no query parameters")).into());
        }
        let key = query::key(r, raw_key, self.db)?;
        let mut lease = self.lease(r).await?;
        self.begin(&mut lease, r).await?;
        let result = async {
            self.current(&mut lease, r, &key, raw_key, if_match).await?;
            let mut sql = Sql {
                text: format!("DELETE FROM {} WHERE ", table(&r.table, self.db)),
                params: Vec::new(),
            };
            query::key_condition(&mut sql, r, &key, self.db);
            match lease
                .store()
                .statements()
                .execute(&sql.text, &sql.params)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    if e.fault() == Fault::Unavailable {
                        lease.broken = true;
                    }
                    Err(store_problem(&e, r))
                }
            }
        }
        .await;
        match result {
            Ok(()) => {
                Self::end(&mut lease, true)
                    .await
                    .map_err(|e| store_problem(&e, r))?;
                let mut resp = Response::new(Full::new(Bytes::new()));
                *resp.status_mut() = StatusCode::NO_CONTENT;
                Ok((resp, Some(raw_key.to_string())))
            }
            Err(p) => {
                let _ = Self::end(&mut lease, false).await;
                Err(p)
            }
        }
    }

    /// Tells the engines about a write, as the gateway does for routed writes.
    fn offer(&self, r: &Resource, key: &str, method: &Method) {
        let Some((tap, entities)) = &self.tap else {
            return;
        };
        let entity = entities
            .get(&r.table)
            .cloned()
            .unwrap_or_else(|| Arc::from(r.name.as_str()));
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        tap.offer(WriteEvent {
            entity,
            key: Some(query::decode(key, false).unwrap_or_else(|_| key.to_string())),
            side: self.name.clone(),
            method: method.clone(),
            at_ms,
        });
    }
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
