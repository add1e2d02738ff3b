//! Bulk inserts: a batch's rows to insert where absent (the initial copy's) go to the server
//! as one `COPY … FROM STDIN`, a fifth of the server's work of the statement that reads the
//! rows from a JSON array. It runs inside a savepoint: when a row is there after all (a unique
//! violation), the copy rolls back to the savepoint and the rows take the statement that
//! skips present rows.

use std::collections::HashSet;
use std::fmt::Write as _;

use bytes::Bytes;
use futures_util::SinkExt;
use serde_json::Value;

use super::{PgStore, dq};
use crate::family::TypeFamily;
use crate::store::statement::Fault;
use crate::store::{Absent, StoreError};

/// Fewer rows than this go as the statement: the savepoint and the COPY cost two round trips.
pub(super) const BULK_MIN: usize = 32;

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
        // A number's or boolean's text has nothing to escape.
        (Value::Number(n), false) => {
            let _ = write!(out, "{n}");
            return true;
        }
        (Value::Bool(b), false) => {
            out.push_str(if *b { "true" } else { "false" });
            return true;
        }
        (_, true) => std::borrow::Cow::Owned(v.to_string()),
        (Value::Array(_) | Value::Object(_), false) => return false,
    };
    if !text.contains(['\\', '\n', '\r', '\t']) {
        out.push_str(&text);
        return true;
    }
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

    /// Inside the open transaction: inserts the rows with COPY. `Ok(false)`: nothing
    /// written, because a value cannot go as COPY's text or a row is present; the caller
    /// writes them with the statement.
    pub(super) async fn copy_absent(&mut self, a: &Absent) -> Result<bool, StoreError> {
        let json = self.json_columns(&a.table).await?;
        let is_json: Vec<bool> = a.columns.iter().map(|c| json.contains(c)).collect();
        let mut text = String::with_capacity(a.rows.len() * 16 * a.columns.len());
        for values in &a.rows {
            for (at, v) in values.iter().enumerate() {
                if at > 0 {
                    text.push('\t');
                }
                if !copy_text(v, is_json[at], &mut text) {
                    return Ok(false);
                }
            }
            text.push('\n');
        }
        let target = self.row_type(&a.table).await?;
        let statement = format!(
            "COPY {target} ({}) FROM STDIN",
            a.columns
                .iter()
                .map(|c| dq(c))
                .collect::<Vec<_>>()
                .join(", ")
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
}
