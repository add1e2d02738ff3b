//! The generated API's writes: bodies checked and bound, create, replace and update, delete,
//! each conditional on If-Match inside its transaction, and the write tap.

use std::sync::Arc;

use bytes::Bytes;
use http::header::LOCATION;
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value};

use crate::store::{Param, StoreError};
use crate::tap::WriteEvent;

use super::super::model::Resource;
use super::super::pool::Lease;
use super::super::query::{self, BadQuery};
use super::super::sql::{self, Sql, ident, table};
use super::super::types::Db;
use super::respond::{Problem, etag, store_problem};
use super::{Body, Service};

impl Service {
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

    pub(super) async fn create(
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
        sql.text.push_str(&sql::select_list(r, &all, self.db));
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

    pub(super) async fn update(
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
                sql::key_condition(&mut sql, r, &key, self.db);
                self.execute(&mut lease, r, &sql).await?;
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

    pub(super) async fn delete(
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
            sql::key_condition(&mut sql, r, &key, self.db);
            self.execute(&mut lease, r, &sql).await.map(|_| ())
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
    pub(super) fn offer(&self, r: &Resource, key: &str, method: &Method) {
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
