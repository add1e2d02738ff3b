//! MyStore's application statements: binary-protocol values read back as JSON, decimals as
//! exact numbers, binary strings as `\x` and hex.

use mysql_async::consts::ColumnType;

use super::*;
use crate::store::statement::{Param, Statements};

/// The character set number MariaDB gives binary strings.
const BINARY: u16 = 63;

fn bind(params: &[Param]) -> Vec<My> {
    params
        .iter()
        .map(|p| match p {
            Param::Null => My::NULL,
            Param::Int(i) => My::Int(*i),
            Param::Real(f) => My::Double(*f),
            Param::Text(t) => My::Bytes(t.as_bytes().to_vec()),
            Param::Bytes(b) => My::Bytes(b.clone()),
        })
        .collect()
}

/// One result value as JSON, read with its column's type.
fn json(value: &My, column: &mysql_async::Column) -> Value {
    let text = |s: String| s.parse::<Value>().unwrap_or(Value::String(s));
    match value {
        My::NULL => Value::Null,
        My::Int(i) => Value::from(*i),
        My::UInt(u) => Value::from(*u),
        My::Float(f) => text(f.to_string()),
        My::Double(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        My::Bytes(b) => match column.column_type() {
            ColumnType::MYSQL_TYPE_NEWDECIMAL | ColumnType::MYSQL_TYPE_DECIMAL => {
                text(String::from_utf8_lossy(b).into_owned())
            }
            _ if column.character_set() == BINARY => Param::Bytes(b.clone())
                .as_text()
                .map_or(Value::Null, Value::String),
            _ => Value::String(String::from_utf8_lossy(b).into_owned()),
        },
        My::Date(y, mo, d, h, mi, s, us) => {
            Value::String(if column.column_type() == ColumnType::MYSQL_TYPE_DATE {
                format!("{y:04}-{mo:02}-{d:02}")
            } else if *us > 0 {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
            } else {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
            })
        }
        My::Time(neg, days, h, mi, s, us) => {
            let hours = u32::from(*h) + days * 24;
            let sign = if *neg { "-" } else { "" };
            Value::String(if *us > 0 {
                format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}")
            } else {
                format!("{sign}{hours:02}:{mi:02}:{s:02}")
            })
        }
    }
}

#[async_trait::async_trait]
impl Statements for MyStore {
    async fn as_application(&mut self) -> Result<(), StoreError> {
        Ok(self
            .conn
            .query_drop("SET @strangler_applying = NULL")
            .await?)
    }

    async fn rows(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Value>>, StoreError> {
        let rows: Vec<mysql_async::Row> = self
            .conn
            .exec(sql, Params::Positional(bind(params)))
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let cols = r.columns_ref();
                (0..r.len())
                    .map(|i| r.as_ref(i).map_or(Value::Null, |v| json(v, &cols[i])))
                    .collect()
            })
            .collect())
    }

    async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, StoreError> {
        self.conn
            .exec_drop(sql, Params::Positional(bind(params)))
            .await?;
        Ok(self.conn.affected_rows())
    }

    async fn control(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.conn.query_drop(sql).await?)
    }
}
