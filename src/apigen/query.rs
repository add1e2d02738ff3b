//! A request's query string and key, checked against the resource, and the SQL they become
//! in each database's dialect. Every value is bound as a parameter; identifiers come only
//! from the catalog and are quoted.

use serde_json::Value;

use crate::store::Param;

use super::model::Resource;
use super::types::{ApiType, Db};

/// Query parameters that are not column filters.
pub const RESERVED: &[&str] = &["limit", "offset", "after", "count", "sort", "fields"];

/// Filter operators; the first eight apply to every ordered type, `like` to text.
pub const FILTER_OPS: &[&str] = &[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "is_null", "like",
];

/// A client's mistake in the query string or key: 400, naming the parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct BadQuery(pub String);

/// One column condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Field position.
    pub field: usize,
    /// Operator.
    pub op: &'static str,
    /// Bound values (one; several for `in`; none for `is_null`).
    pub values: Vec<Param>,
    /// For `is_null`: whether NULL is wanted.
    pub null: bool,
}

/// A list request, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListQuery {
    /// Rows per page.
    pub limit: u64,
    /// Rows to skip.
    pub offset: u64,
    /// Only rows whose key comes after this one.
    pub after: Option<Vec<Param>>,
    /// Count every matching row.
    pub count: bool,
    /// Order: field position, descending.
    pub sort: Vec<(usize, bool)>,
    /// Fields to return; `None`: all.
    pub fields: Option<Vec<usize>>,
    /// Conditions, all of which hold.
    pub filters: Vec<Filter>,
}

/// Decodes `%XX` and `+` (as a space) in a query string part.
pub fn decode(s: &str, plus: bool) -> Result<String, BadQuery> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| BadQuery(format!("bad percent-encoding in {s:?}")))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| BadQuery(format!("{s:?} is not UTF-8 once decoded")))
}

/// A text value from the URL as the JSON value a body would carry for this type.
pub fn typed(ty: &ApiType, text: &str) -> Value {
    match ty {
        ApiType::Integer { .. } if text.parse::<i128>().is_ok() => text
            .parse::<i128>()
            .ok()
            .and_then(|i| i.to_string().parse::<Value>().ok())
            .unwrap_or(Value::Null),
        ApiType::Integer { .. } | ApiType::Decimal { .. } | ApiType::Float => text
            .parse::<Value>()
            .ok()
            .filter(Value::is_number)
            .unwrap_or_else(|| Value::String(text.to_string())),
        ApiType::Boolean => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => Value::String(other.to_string()),
        },
        ApiType::Json => text
            .parse::<Value>()
            .unwrap_or_else(|_| Value::String(text.to_string())),
        _ => Value::String(text.to_string()),
    }
}

/// A key from its path text (`k1,k2`, each part percent-encoded), bound per key field.
pub fn key(r: &Resource, raw: &str, db: Db) -> Result<Vec<Param>, BadQuery> {
    let parts: Vec<&str> = raw.split(',').collect();
    if parts.len() != r.key.len() {
        return Err(BadQuery(format!(
            "key {raw:?}: {} has a key of {} column(s) ({}), separated by commas",
            r.name,
            r.key.len(),
            r.key_fields()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    parts
        .iter()
        .zip(r.key_fields())
        .map(|(p, f)| {
            let text = decode(p, false)?;
            f.ty.bind(&typed(&f.ty, &text), db)
                .map_err(|e| BadQuery(format!("key column {}: {text:?} {e}", f.name)))
        })
        .collect()
}

/// Parses and checks a list request's query string.
pub fn list(r: &Resource, query: &str, max_limit: u64, db: Db) -> Result<ListQuery, BadQuery> {
    let mut q = ListQuery {
        limit: max_limit.min(100),
        ..ListQuery::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode(k, true)?;
        match k.as_str() {
            "limit" => {
                q.limit = decode(v, true)?
                    .parse()
                    .ok()
                    .filter(|n| (1..=max_limit).contains(n))
                    .ok_or_else(|| BadQuery(format!("limit: must be 1 to {max_limit}")))?;
            }
            "offset" => {
                q.offset = decode(v, true)?
                    .parse()
                    .ok()
                    .filter(|n| *n <= 1_000_000_000)
                    .ok_or_else(|| BadQuery("offset: must be 0 to 1000000000".into()))?;
            }
            "count" => {
                if decode(v, true)? != "exact" {
                    return Err(BadQuery("count: the only value is exact".into()));
                }
                q.count = true;
            }
            "after" => {
                if r.key.is_empty() {
                    return Err(BadQuery(format!("after: {} has no key", r.name)));
                }
                let text = decode(v, true)?;
                let raw = if r.key.len() == 1 {
                    text.replace(',', "%2C")
                } else {
                    text
                };
                q.after =
                    Some(key(r, &raw, db).map_err(|BadQuery(m)| BadQuery(format!("after: {m}")))?);
            }
            "sort" => {
                for item in decode(v, true)?.split(',') {
                    let (name, desc) = match item.strip_prefix('-') {
                        Some(n) => (n, true),
                        None => (item, false),
                    };
                    let f = r.field(name).ok_or_else(|| {
                        BadQuery(format!("sort: no column {name:?} in {}", r.name))
                    })?;
                    if !q.sort.iter().any(|(g, _)| *g == f) {
                        q.sort.push((f, desc));
                    }
                }
            }
            "fields" => {
                let mut list = Vec::new();
                for name in decode(v, true)?.split(',') {
                    let f = r.field(name).ok_or_else(|| {
                        BadQuery(format!("fields: no column {name:?} in {}", r.name))
                    })?;
                    if list.contains(&f) {
                        return Err(BadQuery(format!("fields: {name:?} is named twice")));
                    }
                    list.push(f);
                }
                q.fields = Some(list);
            }
            other => q.filters.push(filter(r, other, v, db)?),
        }
    }
    Ok(q)
}

/// `fields=` on a read by key.
pub fn fields(r: &Resource, query: &str) -> Result<Option<Vec<usize>>, BadQuery> {
    let mut out = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(k, true)?.as_str() {
            "fields" => {
                let q = list(r, &format!("fields={v}"), 1, Db::Sqlite)?;
                out = q.fields;
            }
            other => return Err(BadQuery(format!("unknown query parameter {other:?}"))),
        }
    }
    Ok(out)
}

fn filter(r: &Resource, name: &str, raw: &str, db: Db) -> Result<Filter, BadQuery> {
    let (col, op) = match name.strip_suffix(']').and_then(|n| n.split_once('[')) {
        Some((c, o)) => (c, o),
        None => (name, "eq"),
    };
    let f = r.field(col).ok_or_else(|| {
        BadQuery(format!(
            "unknown query parameter {name:?}: not one of {} nor a column of {}",
            RESERVED.join(", "),
            r.name
        ))
    })?;
    let field = &r.fields[f];
    let op = super::openapi::ops_for(field)
        .iter()
        .find(|o| **o == op)
        .copied()
        .ok_or_else(|| {
            BadQuery(format!(
                "{name}: operator {op:?} does not apply to column {col} (use {})",
                super::openapi::ops_for(field).join(", ")
            ))
        })?;
    let text = decode(raw, true)?;
    // A filter may compare with more digits than the column keeps.
    let ty = match &field.ty {
        ApiType::Decimal { .. } => ApiType::Decimal {
            precision: None,
            scale: None,
        },
        other => other.clone(),
    };
    let bind = |t: &str| {
        ty.bind(&typed(&ty, t), db)
            .map_err(|e| BadQuery(format!("{name}: {t:?} {e}")))
    };
    Ok(match op {
        "is_null" => Filter {
            field: f,
            op,
            values: Vec::new(),
            null: match text.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(BadQuery(format!("{name}: must be true or false"))),
            },
        },
        "in" => {
            let items: Vec<&str> = text.split(',').collect();
            if items.len() > 100 {
                return Err(BadQuery(format!("{name}: at most 100 values")));
            }
            Filter {
                field: f,
                op,
                values: items.into_iter().map(bind).collect::<Result<_, _>>()?,
                null: false,
            }
        }
        "like" => {
            if text.contains('\0') {
                return Err(BadQuery(format!("{name}: contains the NUL character")));
            }
            Filter {
                field: f,
                op,
                values: vec![Param::Text(text)],
                null: false,
            }
        }
        _ => Filter {
            field: f,
            op,
            values: vec![bind(&text)?],
            null: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apigen::model::Field;
    use crate::apigen::sql::order;
    use crate::store::Form;

    fn field(name: &str, ty: ApiType) -> Field {
        Field {
            name: name.into(),
            declared: "text".into(),
            ty,
            nullable: true,
            has_default: false,
            form: Form::Plain,
            limits: Default::default(),
        }
    }

    #[test]
    fn a_keyless_list_is_ordered_by_every_ordered_column() {
        let text = ApiType::Text {
            max: None,
            choices: vec![],
        };
        let r = Resource {
            name: "log".into(),
            table: "log".into(),
            fields: vec![
                field("at", text.clone()),
                field("doc", ApiType::Json),
                field("what", text),
            ],
            key: vec![],
            read_only: Some("no key".into()),
            links: vec![],
        };
        let q = list(&r, "sort=-what", 100, Db::Sqlite).expect("query");
        assert_eq!(
            order(&r, &q, Db::Sqlite),
            " ORDER BY \"what\" DESC, \"at\" ASC"
        );
        let q = list(&r, "at[like]=2024%25&limit=5", 100, Db::Postgres).expect("query");
        assert_eq!(q.limit, 5);
        assert_eq!(q.filters[0].values, vec![Param::Text("2024%".into())]);
        assert!(
            list(&r, "after=1", 100, Db::Sqlite).is_err(),
            "no key, no cursor"
        );
        assert!(list(&r, "fields=at,at", 100, Db::Sqlite).is_err());
        assert!(list(&r, "doc[gt]=1", 100, Db::Sqlite).is_err());
    }
}
