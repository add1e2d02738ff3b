//! The generated API's reads: a page of rows (filters, order, cursor, count, links) and one
//! row by key, with its ETag.

use http::header::ETAG;
use http::{HeaderValue, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::store::Param;

use super::super::model::Resource;
use super::super::pool::Lease;
use super::super::query;
use super::super::sql::{self, Sql, table};
use super::super::types::Db;
use super::respond::{Problem, encode, etag, json_response};
use super::{Body, Service};

impl Service {
    /// A read the database refused over a value is the query's fault: 400, as documented.
    fn read_problem(p: Problem) -> Problem {
        if p.status == StatusCode::UNPROCESSABLE_ENTITY {
            Problem::new(StatusCode::BAD_REQUEST, p.detail)
        } else {
            p
        }
    }

    pub(super) async fn list(&self, r: &Resource, query: &str) -> Result<Response<Body>, Problem> {
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
                sql::select_list(r, &read, self.db),
                table(&r.table, self.db)
            ),
            params: Vec::new(),
        };
        sql.text = format!(
            "SELECT {} FROM {}",
            sql::select_list(r, &read, self.db),
            table(&r.table, self.db)
        );
        sql::conditions(&mut sql, r, &q, self.db);
        let where_params = sql.params.clone();
        let where_text = sql.text.split_once(" FROM ").map(|(_, w)| w.to_string());
        sql.text.push_str(&sql::order(r, &q, self.db));
        sql.text
            .push_str(&format!(" LIMIT {} OFFSET {}", q.limit + 1, q.offset));
        let mut lease = self.lease(r).await?;
        let mut rows = self.rows(&mut lease, r, &sql).await?;
        let more = rows.len() as u64 > q.limit;
        rows.truncate(q.limit as usize);
        let mut items = Vec::with_capacity(rows.len());
        for values in rows {
            let full = self.row_json(r, &read, values);
            let mut shown = self.with_links(r, full);
            shown.retain(|k, _| k == "_links" || fields.iter().any(|&i| r.fields[i].name == *k));
            items.push(Value::Object(shown));
        }
        // The cursor is the last row's key, read back from its self link (made once per row).
        let last_key = items
            .last()
            .filter(|_| more)
            .and_then(|i| i["_links"]["self"]["href"].as_str())
            .map(|p| {
                let k = p.rsplit('/').next().unwrap_or("").to_string();
                query::decode(&k, false).map_or(k.clone(), |d| if r.key.len() == 1 { d } else { k })
            });
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
    pub(super) async fn read(
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
                sql::select_list(r, fields, self.db),
                table(&r.table, self.db)
            ),
            params: Vec::new(),
        };
        sql::key_condition(&mut sql, r, key, self.db);
        if lock && self.db != Db::Sqlite {
            sql.text.push_str(" FOR UPDATE");
        }
        let rows = self.rows(lease, r, &sql).await?;
        Ok(rows
            .into_iter()
            .next()
            .map(|values| self.row_json(r, fields, values)))
    }

    pub(super) fn row_response(
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

    pub(super) async fn get(
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
}
