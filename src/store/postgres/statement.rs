//! PgStore's application statements: every parameter bound as text (the statement casts
//! it), every result column read as text, integer, boolean or float.

use tokio_postgres::types::Type;

use super::*;
use crate::store::statement::{Param, Statements};

/// One result column as JSON.
fn json(row: &tokio_postgres::Row, i: usize) -> Result<Value, StoreError> {
    let t = row.columns()[i].type_();
    Ok(match *t {
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map_or(Value::Null, Value::from),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Value::Null, Value::from),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::from),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, Value::from),
        Type::FLOAT4 | Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .or_else(|_| {
                row.try_get::<_, Option<f32>>(i)
                    .map(|f| f.map(|f| f.to_string().parse().unwrap_or(f as f64)))
            })?
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        _ => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::String),
    })
}

#[async_trait::async_trait]
impl Statements for PgStore {
    async fn as_application(&mut self) -> Result<(), StoreError> {
        // The engine marks only its own transactions (`strangler.applying`, set locally):
        // every other transaction on this connection is captured already.
        Ok(())
    }

    async fn rows(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>, StoreError> {
        let texts: Vec<Option<String>> = params.iter().map(Param::as_text).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
        let rows = self.query(sql, &refs).await?;
        rows.iter()
            .map(|r| (0..r.len()).map(|i| json(r, i)).collect())
            .collect()
    }

    async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, StoreError> {
        let texts: Vec<Option<String>> = params.iter().map(Param::as_text).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
        PgStore::execute(self, sql, &refs).await
    }

    async fn control(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.client.batch_execute(sql).await?)
    }
}
