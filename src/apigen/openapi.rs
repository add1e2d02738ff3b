//! The OpenAPI 3.1 document of a service: every path, parameter, body and response the
//! handlers serve, with JSON Schemas derived from the same column types the handlers check
//! values against.

use serde_json::{Map, Value, json};

use super::model::{Field, Resource};
use super::query::{FILTER_OPS, RESERVED};
use super::types::{ApiType, Db};
use super::{Options, filter_name};

/// A field's schema, null included when the column allows it.
pub fn field_schema(f: &Field, db: Db) -> Value {
    let mut s = f.ty.schema(db);
    if let Value::Object(m) = &mut s {
        for (k, v) in &f.limits {
            m.insert(k.clone(), v.clone());
        }
        if m.contains_key("enum") {
            m.remove("pattern");
            m.remove("format");
        }
    }
    if f.nullable {
        nullable(&mut s);
    }
    s
}

/// Lets `schema` also match null.
fn nullable(s: &mut Value) {
    if let Some(list) = s.get_mut("enum").and_then(Value::as_array_mut) {
        list.push(Value::Null);
    }
    match s.get("type").cloned() {
        Some(Value::String(t)) => s["type"] = json!([t, "null"]),
        Some(_) => {}
        None => {}
    }
}

/// The component name of a column's filter value schema.
fn filter_schema_name(r: &Resource, f: &Field) -> String {
    format!("{}.{}.filter", r.name, f.name)
}

/// The schema of one operator's value in a filter parameter.
fn filter_schema(f: &Field, op: &str, db: Db) -> Value {
    match op {
        "is_null" => json!({"type": "boolean"}),
        "in" => {
            let items = if matches!(f.ty, ApiType::Decimal { .. }) {
                json!({"type": "number"})
            } else {
                f.ty.schema(db)
            };
            json!({"type": "array", "items": items, "minItems": 1, "maxItems": 100})
        }
        "like" => json!({"type": "string", "pattern": "^[^\\u0000]*$"}),
        // A filter may compare with any number, more digits than the column keeps included.
        _ if matches!(f.ty, ApiType::Decimal { .. }) => json!({"type": "number"}),
        _ => f.ty.schema(db),
    }
}

/// Operators a field can be filtered with.
pub fn ops_for(f: &Field) -> &'static [&'static str] {
    match f.ty {
        ApiType::Json | ApiType::Bytes => &["is_null"],
        ApiType::Boolean => &["eq", "ne", "is_null"],
        ApiType::Text { .. } => FILTER_OPS,
        _ => &FILTER_OPS[..8],
    }
}

fn problem_ref() -> Value {
    json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}})
}

/// Error responses by reference to the shared `components.responses`.
fn problems(codes: &[u16]) -> Map<String, Value> {
    codes
        .iter()
        .map(|c| {
            (
                c.to_string(),
                json!({"$ref": format!("#/components/responses/Problem{c}")}),
            )
        })
        .collect()
}

/// The shared error responses, one per status.
fn problem_responses() -> Map<String, Value> {
    [400, 404, 406, 409, 412, 413, 415, 422, 503]
        .iter()
        .map(|c| {
            let text = http::StatusCode::from_u16(*c)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error");
            (
                format!("Problem{c}"),
                json!({"description": text, "content": problem_ref()}),
            )
        })
        .collect()
}

fn key_params(r: &Resource, db: Db) -> Vec<Value> {
    r.key_fields()
        .map(|f| {
            json!({
                "name": f.name, "in": "path", "required": true,
                "schema": f.ty.schema(db),
                "description": "key value, percent-encoded (a comma inside it as %2C)"
            })
        })
        .collect()
}

fn item_path(r: &Resource) -> String {
    let parts: Vec<String> = r.key_fields().map(|f| format!("{{{}}}", f.name)).collect();
    format!("/v1/{}/{}", r.name, parts.join(","))
}

/// The ETag response header.
fn etag_header() -> Value {
    json!({"ETag": {"description": "the row's version, for If-Match", "schema": {"type": "string"}}})
}

fn deprecation(op: &mut Value, opts: &Options) {
    if opts.deprecated {
        op["deprecated"] = json!(true);
    }
}

/// The row schema's name, the `$ref` target.
fn schema_name(r: &Resource, suffix: &str) -> String {
    format!("{}{suffix}", r.name)
}

/// The OpenAPI 3.1 document of a service.
pub fn document(service: &str, resources: &[Resource], opts: &Options, db: Db) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "description": "RFC 9457 problem details",
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"},
                "status": {"type": "integer"}, "detail": {"type": "string"},
                "instance": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object", "properties": {
                    "field": {"type": "string"}, "message": {"type": "string"}}}}
            },
            "required": ["type", "title", "status"]
        }),
    );
    for r in resources {
        let mut props = Map::new();
        for f in &r.fields {
            props.insert(f.name.clone(), field_schema(f, db));
        }
        let mut links = Map::new();
        if r.read_only.is_none() {
            links.insert("self".into(), json!({"$ref": "#/components/schemas/Link"}));
        }
        for l in &r.links {
            links.insert(l.rel.clone(), json!({"$ref": "#/components/schemas/Link"}));
        }
        let mut row_props = props.clone();
        row_props.insert(
            "_links".into(),
            json!({"type": "object", "properties": links, "additionalProperties": false}),
        );
        let mut description = format!("a row of table {}", r.table);
        if let Some(why) = &r.read_only {
            description = format!("{description}; read-only: {why}");
        }
        schemas.insert(
            schema_name(r, ""),
            json!({"type": "object", "description": description,
                   "properties": row_props, "additionalProperties": false}),
        );
        let required: Vec<&str> = r
            .fields
            .iter()
            .filter(|f| !f.nullable && !f.has_default)
            .map(|f| f.name.as_str())
            .collect();
        schemas.insert(
            schema_name(r, "Write"),
            json!({"type": "object", "properties": props, "required": required,
                   "additionalProperties": false}),
        );
        // A key never changes: replacements and updates carry no key columns.
        let mut unkeyed = props.clone();
        for k in r.key_fields() {
            unkeyed.remove(&k.name);
        }
        let replace_required: Vec<&str> = required
            .iter()
            .copied()
            .filter(|n| !r.key_fields().any(|k| k.name == *n))
            .collect();
        schemas.insert(
            schema_name(r, "Replace"),
            json!({"type": "object", "properties": unkeyed.clone(), "required": replace_required,
                   "additionalProperties": false}),
        );
        schemas.insert(
            schema_name(r, "Patch"),
            json!({"type": "object", "properties": unkeyed, "additionalProperties": false}),
        );
        let row_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(r, ""))});
        let mut params = vec![
            json!({"$ref": "#/components/parameters/limit"}),
            json!({"$ref": "#/components/parameters/offset"}),
            json!({"$ref": "#/components/parameters/count"}),
            json!({"name": "sort", "in": "query", "style": "form", "explode": false,
                   "description": "columns to order by, `-` first for descending; the key breaks ties",
                   "schema": {"type": "array", "minItems": 1, "items": {"enum":
                       r.fields.iter().flat_map(|f| [f.name.clone(), format!("-{}", f.name)]).collect::<Vec<_>>()}}}),
            fields_param(r),
        ];
        if !r.key.is_empty() {
            let after = if r.key.len() == 1 {
                r.key_fields().next().map_or(json!({}), |f| f.ty.schema(db))
            } else {
                let parts: Vec<&str> = r.key_fields().map(|f| key_pattern(&f.ty)).collect();
                json!({"type": "string", "pattern": format!("^{}$", parts.join(","))})
            };
            params.push(json!({"name": "after", "in": "query", "schema": after,
                "description": "keyset cursor: only rows whose key comes after this one (the `next` of the previous page)"}));
        }
        for f in &r.fields {
            // One deepObject parameter per column (`col[op]=v`), each operator's value schema a
            // reference to the column's filter schema; `in` takes a list, so it is its own
            // form parameter. A column named like a reserved parameter gets one per operator.
            let value_ref = format!("#/components/schemas/{}", filter_schema_name(r, f));
            schemas.insert(filter_schema_name(r, f), filter_schema(f, "eq", db));
            let ops = ops_for(f);
            let reserved = RESERVED.contains(&f.name.as_str()) || f.name.contains('[');
            let mut props = Map::new();
            for op in ops {
                let schema = match *op {
                    "in" => {
                        params.push(json!({"name": filter_name(&f.name, op), "in": "query",
                            "style": "form", "explode": false,
                            "schema": {"type": "array", "items": {"$ref": value_ref},
                                       "minItems": 1, "maxItems": 100}}));
                        continue;
                    }
                    "is_null" | "like" => filter_schema(f, op, db),
                    _ => json!({"$ref": value_ref}),
                };
                if reserved {
                    params.push(
                        json!({"name": filter_name(&f.name, op), "in": "query", "schema": schema}),
                    );
                } else {
                    props.insert((*op).to_string(), schema);
                }
            }
            if !props.is_empty() {
                params.push(json!({
                    "name": f.name, "in": "query", "style": "deepObject", "explode": true,
                    "description": format!("filters on {}: {}[op]=value ({}); {}=value is {}[eq]=value",
                        f.name, f.name, ops.join(", "), f.name, f.name),
                    "schema": {"type": "object", "properties": props, "additionalProperties": false}
                }));
            }
        }
        let mut list_responses = problems(&[400, 406, 503]);
        list_responses.insert(
            "200".into(),
            json!({"description": "a page of rows",
                "headers": {"Link": {"description": "next page", "schema": {"type": "string"}}},
                "content": {"application/json": {"schema": {
                "type": "object", "required": ["items", "next"], "additionalProperties": false,
                "properties": {"items": {"type": "array", "items": row_ref},
                               "next": {"type": ["string", "null"]},
                               "count": {"type": "integer", "minimum": 0}}}}}}),
        );
        let mut list = json!({
            "operationId": format!("list_{}", r.name),
            "summary": format!("List {}", r.name),
            "parameters": params,
            "responses": list_responses,
        });
        deprecation(&mut list, opts);
        let mut collection = json!({"get": list});
        let writable = r.read_only.is_none() && !opts.read_only;
        let write_body = |suffix: &str| {
            json!({"required": true, "content": {"application/json": {"schema":
                {"$ref": format!("#/components/schemas/{}", schema_name(r, suffix))}}}})
        };
        let ok_row = |code: &str, text: &str| -> Map<String, Value> {
            let mut m = Map::new();
            m.insert(
                code.into(),
                json!({"description": text, "headers": etag_header(),
                       "content": {"application/json": {"schema": row_ref.clone()}}}),
            );
            m
        };
        if writable {
            let mut created = ok_row("201", "created");
            created.extend(problems(&[400, 406, 409, 413, 415, 422, 503]));
            let mut post = json!({
                "operationId": format!("create_{}", r.name),
                "summary": format!("Create a row of {}", r.table),
                "requestBody": write_body("Write"),
                "responses": created,
            });
            deprecation(&mut post, opts);
            collection["post"] = post;
        }
        paths.insert(format!("/v1/{}", r.name), collection);
        if r.key.is_empty() {
            continue;
        }
        let mut item = Map::new();
        let mut got = ok_row("200", "the row");
        got.extend(problems(&[400, 404, 406, 503]));
        let mut get = json!({
            "operationId": format!("get_{}", r.name),
            "parameters": [fields_param(r)],
            "responses": got,
        });
        deprecation(&mut get, opts);
        item.insert("get".into(), get);
        if writable {
            for (method, suffix, verb) in
                [("put", "Replace", "replace"), ("patch", "Patch", "update")]
            {
                let mut resp = ok_row("200", "the row as stored");
                resp.extend(problems(&[400, 404, 406, 409, 412, 413, 415, 422, 503]));
                let mut op = json!({
                    "operationId": format!("{verb}_{}", r.name),
                    "description": "If-Match with the row's ETag makes the write conditional (412 when the row changed)",
                    "requestBody": write_body(suffix),
                    "responses": resp,
                });
                deprecation(&mut op, opts);
                item.insert(method.into(), op);
            }
            let mut resp = problems(&[400, 404, 406, 409, 412, 503]);
            resp.insert("204".into(), json!({"description": "deleted"}));
            let mut op = json!({
                "operationId": format!("delete_{}", r.name),
                "description": "If-Match with the row's ETag makes the delete conditional (412 when the row changed)",
                "responses": resp,
            });
            deprecation(&mut op, opts);
            item.insert("delete".into(), op);
        }
        item.insert("parameters".into(), Value::Array(key_params(r, db)));
        paths.insert(item_path(r), Value::Object(item));
    }
    schemas.insert(
        "Link".into(),
        json!({"type": "object", "required": ["href"], "properties": {"href": {"type": "string"}}}),
    );
    let mut info = json!({
        "title": format!("{service} API"),
        "version": "1",
        "description": format!(
            "Generated by Strangler from the tables of service {service}. Reserved query \
             parameters: {}; a column filter is `column` (equals) or `column[op]` with op one \
             of {}.", RESERVED.join(", "), FILTER_OPS.join(", ")),
    });
    if let Some(s) = &opts.sunset {
        info["x-sunset"] = json!(s);
    }
    json!({
        "openapi": "3.1.0",
        "info": info,
        "servers": [{"url": if opts.mount.is_empty() { "/".to_string() } else { opts.mount.clone() }}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": problem_responses(),
            "parameters": {
                "limit": {"name": "limit", "in": "query", "description": "rows per page",
                          "schema": {"type": "integer", "minimum": 1, "maximum": opts.max_limit}},
                "offset": {"name": "offset", "in": "query", "description": "rows to skip",
                           "schema": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}},
                "count": {"name": "count", "in": "query",
                          "description": "`exact`: also count every matching row",
                          "schema": {"enum": ["exact"]}},
            }
        }
    })
}

/// A regular expression for one part of a composite key in `after`.
fn key_pattern(ty: &ApiType) -> &'static str {
    match ty {
        ApiType::Integer { max, .. } if *max <= 127 => "-?[0-9]{1,2}",
        ApiType::Integer { max, .. } if *max <= 32767 => "-?[0-9]{1,4}",
        ApiType::Integer { max, .. } if *max <= i32::MAX as i128 => "-?[0-9]{1,9}",
        ApiType::Integer { .. } => "-?[0-9]{1,18}",
        ApiType::Uuid => {
            "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
        }
        ApiType::Date => "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])",
        _ => "[A-Za-z0-9_.~-]+",
    }
}

fn fields_param(r: &Resource) -> Value {
    json!({"name": "fields", "in": "query", "style": "form", "explode": false,
           "description": "columns to return",
           "schema": {"type": "array", "minItems": 1, "uniqueItems": true,
                      "items": {"enum": r.fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>()}}})
}
