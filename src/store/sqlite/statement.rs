//! SqliteStore's application statements: native values read back as JSON.

use rusqlite::types::ValueRef;

use super::*;
use crate::store::statement::{Param, Statements};

fn bind(params: &[Param]) -> Vec<Sql> {
    params
        .iter()
        .map(|p| match p {
            Param::Null => Sql::Null,
            Param::Int(i) => Sql::Integer(*i),
            Param::Real(f) => Sql::Real(*f),
            Param::Text(t) => Sql::Text(t.clone()),
            Param::Bytes(b) => Sql::Blob(b.clone()),
        })
        .collect()
}

/// One stored value as JSON: bytes as `\x` and hex.
fn json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Param::Bytes(b.to_vec())
            .as_text()
            .map_or(Value::Null, Value::String),
    }
}

#[async_trait::async_trait]
impl Statements for SqliteStore {
    async fn as_application(&mut self) -> Result<(), StoreError> {
        self.with(|c| Ok(c.execute_batch("PRAGMA foreign_keys = ON")?))
            .await
    }

    async fn rows(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>, StoreError> {
        let (sql, params) = (sql.to_string(), bind(params));
        self.with(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            let width = st.column_count();
            let mut rows = st.query(params_from_iter(params))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let mut row = Vec::with_capacity(width);
                for i in 0..width {
                    row.push(json(r.get_ref(i)?));
                }
                out.push(row);
            }
            Ok(out)
        })
        .await
    }

    async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, StoreError> {
        let (sql, params) = (sql.to_string(), bind(params));
        self.with(move |c| {
            let mut st = c.prepare_cached(&sql)?;
            Ok(st.execute(params_from_iter(params))? as u64)
        })
        .await
    }

    async fn control(&mut self, sql: &str) -> Result<(), StoreError> {
        let sql = sql.to_string();
        self.with(move |c| Ok(c.execute_batch(&sql)?)).await
    }
}
