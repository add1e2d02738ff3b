//! Bulk inserts: a run of writes that only insert absent rows goes to the server as one
//! `COPY … FROM STDIN`, a fifth of the server's work of the statement that reads the rows
//! from a JSON array. It runs inside a savepoint: when a row is there after all (a unique
//! violation), the run rolls back to the savepoint and takes the statement that skips present
//! rows.

use std::collections::HashSet;

use bytes::Bytes;
use futures_util::SinkExt;
use serde_json::Value;

use super::{PgStore, dq};
use crate::family::TypeFamily;
use crate::store::statement::Fault;
use crate::store::{StoreError, Write};

/// Fewer rows than this go as the statement: the savepoint and the COPY cost two round trips.
pub(super) const BULK_MIN: usize = 32;

/// Whether a run of writes only inserts absent rows: every column besides the key is set only
/// when the row is new, so a present row would be left as it is.
pub(super) fn inserts_only(run: &[Write]) -> bool {
    run.iter().all(|w| match w {
        Write::Upsert { key, row, .. } => row.keys().all(|c| key.contains(c)),
        Write::Delete { .. } => false,
    })
}

/// Appends a value as COPY's text format spells it, read by the column's input function as
/// `jsonb_populate_recordset` reads it: a JSON column's value as JSON text, any other
/// column's string as itself, a number or boolean as its JSON text. `false` when the value is
/// an object or array for a column that is not JSON (the statement converts those).
fn copy_text(v: &Value, json: bool, out: &mut String) -> bool {
    let text = match (v, json) {
        (Value::Null, _) => {
            out.push_str("\\N");
            return true;
        }
        (Value::String(s), false) => std::borrow::Cow::Borrowed(s.as_str()),
        (Value::Number(_) | Value::Bool(_), false) | (_, true) => {
            std::borrow::Cow::Owned(v.to_string())
        }
        (Value::Array(_) | Value::Object(_), false) => return false,
    };
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    true
}

impl PgStore {
    /// The JSON-typed columns of `table`.
    async fn json_columns(&mut self, table: &str) -> Result<HashSet<String>, StoreError> {
        if let Some(c) = self.json_columns.get(table) {
            return Ok(c.clone());
        }
        let info = crate::store::Backend::table_info(self, table).await?;
        let cols: HashSet<String> = info
            .map(|i| {
                i.columns
                    .into_iter()
                    .filter(|c| c.family == TypeFamily::Json)
                    .map(|c| c.name)
                    .collect()
            })
            .unwrap_or_default();
        self.json_columns.insert(table.to_string(), cols.clone());
        Ok(cols)
    }

    /// Inside the open transaction: inserts a run of writes like one another (see
    /// [`inserts_only`]) with COPY. `Ok(false)`: nothing written, because a value cannot go
    /// as COPY's text or a row is present; the caller writes the run with the statement.
    pub(super) async fn copy_run(&mut self, run: &[Write]) -> Result<bool, StoreError> {
        let Some(Write::Upsert {
            table,
            row,
            insert_only,
            ..
        }) = run.first()
        else {
            return Ok(false);
        };
        let json = self.json_columns(table).await?;
        let columns: Vec<&String> = row.keys().chain(insert_only.keys()).collect();
        let is_json: Vec<bool> = columns.iter().map(|c| json.contains(*c)).collect();
        let mut text = String::with_capacity(run.len() * 16 * columns.len());
        for w in run {
            let Write::Upsert {
                row, insert_only, ..
            } = w
            else {
                return Ok(false);
            };
            for (at, v) in row.values().chain(insert_only.values()).enumerate() {
                if at > 0 {
                    text.push('\t');
                }
                if !copy_text(v, is_json[at], &mut text) {
                    return Ok(false);
                }
            }
            text.push('\n');
        }
        let target = self.row_type(table).await?;
        let statement = format!(
            "COPY {target} ({}) FROM STDIN",
            columns.iter().map(|c| dq(c)).collect::<Vec<_>>().join(", ")
        );
        self.client
            .batch_execute("SAVEPOINT strangler_bulk")
            .await?;
        let copied = async {
            let sink = self.client.copy_in::<_, Bytes>(&statement).await?;
            futures_util::pin_mut!(sink);
            sink.send(Bytes::from(text)).await?;
            sink.finish().await
        }
        .await;
        match copied.map_err(StoreError::from) {
            Ok(_) => {
                self.client
                    .batch_execute("RELEASE SAVEPOINT strangler_bulk")
                    .await?;
                Ok(true)
            }
            Err(e) if e.fault() == Fault::Unique => {
                self.client
                    .batch_execute(
                        "ROLLBACK TO SAVEPOINT strangler_bulk; RELEASE SAVEPOINT strangler_bulk",
                    )
                    .await?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(v: Value, json: bool) -> Option<String> {
        let mut out = String::new();
        copy_text(&v, json, &mut out).then_some(out)
    }

    #[test]
    fn values_as_copy_text() {
        assert_eq!(text(json!(null), false).unwrap(), "\\N");
        assert_eq!(text(json!(null), true).unwrap(), "\\N");
        assert_eq!(
            text(json!("a\tb\nc\\d\re"), false).unwrap(),
            "a\\tb\\nc\\\\d\\re"
        );
        assert_eq!(text(json!("\\x00ff"), false).unwrap(), "\\\\x00ff");
        assert_eq!(text(json!(1.5), false).unwrap(), "1.5");
        assert_eq!(text(json!(true), false).unwrap(), "true");
        // A JSON column takes the value's JSON text: a string stays a JSON string.
        assert_eq!(text(json!("x"), true).unwrap(), "\"x\"");
        assert_eq!(
            text(json!({"a": "t\tb"}), true).unwrap(),
            "{\"a\":\"t\\\\tb\"}"
        );
        assert_eq!(text(json!([1, 2]), false), None);
        assert_eq!(text(json!({"a": 1}), false), None);
    }

    #[test]
    fn only_runs_that_insert_absent_rows_go_in_bulk() {
        let upsert = |row: Value| Write::Upsert {
            table: "t".into(),
            key: vec!["id".into()],
            row: row.as_object().unwrap().clone(),
            insert_only: json!({"v": 1}).as_object().unwrap().clone(),
            bytes: vec![],
        };
        assert!(inserts_only(&[
            upsert(json!({"id": 1})),
            upsert(json!({"id": 2}))
        ]));
        assert!(!inserts_only(&[upsert(json!({"id": 1, "v": 2}))]));
        assert!(!inserts_only(&[Write::Delete {
            table: "t".into(),
            key: json!({"id": 1}).as_object().unwrap().clone(),
        }]));
    }
}
