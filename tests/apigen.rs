//! Generated APIs over real SQLite, PostgreSQL and MariaDB schemas with every common column
//! type, a composite key, defaults, a check constraint and a foreign key: the whole CRUD
//! surface, pagination, filters, concurrency, errors, the write tap and metrics labels.

mod common;
mod sync_support;

use std::collections::HashSet;

use common::{client, send};
use serde_json::{Value, json};
use strangler::apigen::{command, serve};
use strangler::config::services::ServiceConfig;
use sync_support::service_url;
use tokio_util::sync::CancellationToken;

fn sqlite_schema() -> Vec<&'static str> {
    vec![
        "DROP TABLE IF EXISTS ag_parts",
        "DROP TABLE IF EXISTS ag_kinds",
        "CREATE TABLE ag_kinds (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL UNIQUE, \
         price NUMERIC(10,2) NOT NULL DEFAULT 0, ratio REAL, active BOOLEAN NOT NULL DEFAULT 1, \
         born DATE, seen TIMESTAMP, doc JSON, data BLOB, qty INTEGER CHECK (qty >= 0))",
        "CREATE TABLE ag_parts (kind_id INTEGER NOT NULL REFERENCES ag_kinds(id), \
         line INTEGER NOT NULL, note TEXT, PRIMARY KEY (kind_id, line))",
    ]
}

fn pg_schema() -> Vec<&'static str> {
    vec![
        "DROP TABLE IF EXISTS ag_parts",
        "DROP TABLE IF EXISTS ag_kinds",
        "CREATE TABLE ag_kinds (id bigserial PRIMARY KEY, name varchar(20) NOT NULL UNIQUE, \
         price numeric(10,2) NOT NULL DEFAULT 0, ratio double precision, \
         active boolean NOT NULL DEFAULT true, born date, seen timestamptz, local timestamp, \
         uid uuid, doc jsonb, data bytea, qty integer CHECK (qty >= 0))",
        "CREATE TABLE ag_parts (kind_id bigint NOT NULL REFERENCES ag_kinds(id), \
         line integer NOT NULL, note text, PRIMARY KEY (kind_id, line))",
    ]
}

fn mysql_schema() -> Vec<&'static str> {
    vec![
        "DROP TABLE IF EXISTS ag_parts",
        "DROP TABLE IF EXISTS ag_kinds",
        "CREATE TABLE ag_kinds (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
         name VARCHAR(20) NOT NULL UNIQUE, price DECIMAL(10,2) NOT NULL DEFAULT 0, \
         ratio DOUBLE, active BOOLEAN NOT NULL DEFAULT 1, born DATE, seen TIMESTAMP(6) NULL, \
         local DATETIME(6), doc JSON, data BLOB, qty INT CHECK (qty >= 0)) ENGINE=InnoDB",
        "CREATE TABLE ag_parts (kind_id BIGINT NOT NULL, line INT NOT NULL, note TEXT, \
         PRIMARY KEY (kind_id, line), FOREIGN KEY (kind_id) REFERENCES ag_kinds(id)) ENGINE=InnoDB",
    ]
}

async fn setup(url: &str, ddl: &[&str]) {
    let mut store = strangler::store::Store::connect(url)
        .await
        .expect("connect");
    for s in ddl {
        store.statements().control(s).await.expect(s);
    }
}

struct Running {
    base: String,
    stop: CancellationToken,
    events: tokio::sync::mpsc::Receiver<strangler::tap::WriteEvent>,
}

async fn start(url: &str) -> Running {
    let cfg = ServiceConfig {
        name: "catalog".into(),
        database: url.into(),
        tables: vec!["ag_kinds".into(), "ag_parts".into()],
        listen: "127.0.0.1:0".parse().expect("addr"),
        mount: None,
        max_limit: 50,
        read_only: false,
        deprecated: false,
        sunset: None,
        pool: 4,
    };
    let (tap, events) = strangler::tap::channel(1000);
    let service = command::prepare(&cfg, Some((tap, Default::default())))
        .await
        .expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(serve::serve(listener, service, stop.clone()));
    Running {
        base: format!("http://{addr}"),
        stop,
        events,
    }
}

const JSON: &[(&str, &str)] = &[("content-type", "application/json")];

async fn exercise(url: &str, ddl: &[&str], extra: Value) {
    setup(url, ddl).await;
    let mut api = start(url).await;
    let c = client();
    let u = |p: &str| format!("{}{p}", api.base);

    // The document describes both resources, the composite key path included.
    let doc = common::get(&c, &u("/openapi.json"), &[]).await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/ag_parts/{kind_id},{line}"]["put"].is_object());
    let qty = &doc["components"]["schemas"]["ag_kindsWrite"]["properties"]["qty"];
    assert_eq!(qty["minimum"], 0, "check constraint in the schema: {qty}");

    // Create: every type, values back as sent.
    let mut body = json!({
        "name": "alpha", "price": 12.50, "ratio": 0.1, "active": false,
        "born": "2024-02-29", "seen": "2024-01-01T01:30:00+02:00",
        "doc": {"b": [1, 2], "a": "x"}, "data": "AAH/", "qty": 3
    });
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    let r = send(&c, "POST", &u("/v1/ag_kinds"), JSON, &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let created = r.json();
    let id = created["id"].as_i64().expect("id");
    assert_eq!(
        r.headers["location"].to_str().expect("location"),
        format!("/v1/ag_kinds/{id}")
    );
    if url.starts_with("sqlite") {
        assert_eq!(
            created["price"],
            json!(12.5),
            "SQLite keeps a NUMERIC as a float"
        );
    } else {
        assert_eq!(
            created["price"].to_string(),
            "12.50",
            "exact decimal: {created}"
        );
    }
    assert_eq!(created["ratio"], json!(0.1));
    assert_eq!(created["active"], json!(false));
    assert_eq!(created["born"], json!("2024-02-29"));
    assert_eq!(created["seen"], json!("2023-12-31T23:30:00Z"));
    assert_eq!(created["doc"], json!({"a": "x", "b": [1, 2]}));
    assert_eq!(created["data"], json!("AAH/"));
    for (k, v) in extra.as_object().expect("object") {
        assert_eq!(&created[k], v, "{k}");
    }
    let etag = r.headers["etag"].to_str().expect("etag").to_string();

    // Read by key: same row, same ETag.
    let r = common::get(&c, &u(&format!("/v1/ag_kinds/{id}")), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["etag"].to_str().expect("etag"), etag);
    let fields = common::get(&c, &u(&format!("/v1/ag_kinds/{id}?fields=name")), &[])
        .await
        .json();
    assert_eq!(fields["name"], "alpha");
    assert!(fields.get("price").is_none());

    // Defaults fill what a create leaves out; a duplicate unique value is a 409.
    for i in 0..24 {
        let r = send(
            &c,
            "POST",
            &u("/v1/ag_kinds"),
            JSON,
            &json!({"name": format!("k{i:02}"), "qty": i}).to_string(),
        )
        .await;
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["active"], json!(true));
    }
    let dup = send(&c, "POST", &u("/v1/ag_kinds"), JSON, r#"{"name": "alpha"}"#).await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.headers["content-type"], "application/problem+json");
    assert!(
        !String::from_utf8_lossy(&dup.body).contains("UNIQUE"),
        "no driver words"
    );

    // Keyset pagination: every row once, in key order, following `next`.
    let mut seen = HashSet::new();
    let mut next = u("/v1/ag_kinds?limit=7&fields=id");
    let mut pages = 0;
    loop {
        let r = common::get(&c, &next, &[]).await;
        assert_eq!(r.status, 200);
        let page = r.json();
        for item in page["items"].as_array().expect("items") {
            assert!(seen.insert(item["id"].as_i64().expect("id")));
        }
        pages += 1;
        match page["next"].as_str() {
            Some(_) => {
                let link = r.headers["link"].to_str().expect("link");
                let path = link
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .expect("target");
                next = u(path);
            }
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (25, 4));

    // Filters, sorting, counting.
    let page = common::get(
        &c,
        &u("/v1/ag_kinds?qty[gte]=20&sort=-qty&count=exact"),
        &[],
    )
    .await
    .json();
    let qtys: Vec<i64> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["qty"].as_i64().expect("qty"))
        .collect();
    assert_eq!(qtys, vec![23, 22, 21, 20]);
    assert_eq!(page["count"], 4);
    let page = common::get(
        &c,
        &u("/v1/ag_kinds?name[in]=k01,k02&name[like]=k0%25"),
        &[],
    )
    .await
    .json();
    assert_eq!(page["items"].as_array().expect("items").len(), 2);
    // An injection attempt is a literal value: nothing matches and nothing is dropped.
    let evil = "x'%20OR%20'1'='1";
    let r = common::get(&c, &u(&format!("/v1/ag_kinds?name={evil}")), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"], json!([]));
    let r = common::get(
        &c,
        &u("/v1/ag_kinds?name[like]=%25'%3B%20DROP%20TABLE%20x%3B--"),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = common::get(&c, &u("/v1/ag_kinds?qty=1%20OR%201=1"), &[]).await;
    assert_eq!(r.status, 400, "a non-integer for an integer column");
    let r = common::get(&c, &u("/v1/ag_kinds?nope=1"), &[]).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("nope"));
    let r = common::get(&c, &u("/v1/ag_kinds?limit=51"), &[]).await;
    assert_eq!(r.status, 400, "max_limit");

    // Validation names the field; nothing is written.
    let r = send(
        &c,
        "POST",
        &u("/v1/ag_kinds"),
        JSON,
        r#"{"name": "this name is far too long"}"#,
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["errors"][0]["field"], "name");
    let r = send(
        &c,
        "POST",
        &u("/v1/ag_kinds"),
        JSON,
        r#"{"name": "q", "qty": -1}"#,
    )
    .await;
    assert_eq!(r.status, 422, "the check constraint");
    let r = send(
        &c,
        "POST",
        &u("/v1/ag_kinds"),
        JSON,
        r#"{"name": "q", "colour": 1}"#,
    )
    .await;
    assert_eq!(r.status, 422);
    let r = send(&c, "POST", &u("/v1/ag_kinds"), JSON, "{not json").await;
    assert_eq!(r.status, 400);
    let r = send(
        &c,
        "POST",
        &u("/v1/ag_kinds"),
        &[("content-type", "text/plain")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 415);
    let r = common::get(&c, &u("/v1/ag_kinds"), &[("accept", "text/html")]).await;
    assert_eq!(r.status, 406);
    let r = send(&c, "POST", &u(&format!("/v1/ag_kinds/{id}")), JSON, "{}").await;
    assert_eq!(r.status, 405);
    assert!(
        r.headers["allow"]
            .to_str()
            .expect("allow")
            .contains("PATCH")
    );
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(serve::MAX_BODY));
    let r = send(&c, "POST", &u("/v1/ag_kinds"), JSON, &big).await;
    assert_eq!(r.status, 413);

    // Optimistic concurrency: a stale ETag is a 412, the current one writes.
    let item = u(&format!("/v1/ag_kinds/{id}"));
    let r = send(
        &c,
        "PATCH",
        &item,
        &[
            ("content-type", "application/json"),
            ("if-match", "\"0000000000000000\""),
        ],
        r#"{"qty": 9}"#,
    )
    .await;
    assert_eq!(r.status, 412);
    let r = send(
        &c,
        "PATCH",
        &item,
        &[("content-type", "application/json"), ("if-match", &etag)],
        r#"{"qty": 9}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["qty"], 9);
    assert_eq!(r.json()["name"], "alpha", "a patch leaves other columns");
    assert_ne!(r.headers["etag"].to_str().expect("etag"), etag);
    let r = send(&c, "PATCH", &item, JSON, &format!("{{\"id\": {id}}}")).await;
    assert_eq!(r.status, 422, "a key never changes");
    let r = send(&c, "PUT", &item, JSON, r#"{"name": "alpha2"}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["doc"],
        Value::Null,
        "a replacement clears what it leaves out"
    );

    // The composite key and the foreign key.
    let r = send(
        &c,
        "POST",
        &u("/v1/ag_parts"),
        JSON,
        &format!(r#"{{"kind_id": {id}, "line": 1, "note": "a,b"}}"#),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json()["_links"]["kind"]["href"],
        format!("/v1/ag_kinds/{id}")
    );
    let part = common::get(&c, &u(&format!("/v1/ag_parts/{id},1")), &[]).await;
    assert_eq!(part.json()["note"], "a,b");
    let r = send(
        &c,
        "POST",
        &u("/v1/ag_parts"),
        JSON,
        r#"{"kind_id": 999999, "line": 1}"#,
    )
    .await;
    assert_eq!(r.status, 409, "a missing parent");
    let r = send(&c, "DELETE", &item, &[], "").await;
    assert_eq!(r.status, 409, "a referenced row");
    let r = send(&c, "DELETE", &u(&format!("/v1/ag_parts/{id},1")), &[], "").await;
    assert_eq!(r.status, 204);
    let r = send(&c, "DELETE", &item, &[], "").await;
    assert_eq!(r.status, 204);
    let r = common::get(&c, &item, &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["status"], 404);

    // Writes were offered to the tap, side = the service.
    let mut methods = Vec::new();
    while let Ok(e) = api.events.try_recv() {
        assert_eq!(e.side, "catalog");
        methods.push(e.method.to_string());
    }
    assert!(methods.iter().filter(|m| *m == "POST").count() >= 26);
    assert!(methods.contains(&"DELETE".to_string()) && methods.contains(&"PATCH".to_string()));
    api.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_api_serves_every_operation() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("api.db").display());
    exercise(&url, &sqlite_schema(), json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_api_serves_every_operation() {
    let Some(url) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    exercise(
        &url,
        &pg_schema(),
        json!({"uid": "0e8400e2-9b1d-41d4-a716-446655440000", "local": "2024-05-06T07:08:09.5"}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_api_serves_every_operation() {
    let Some(url) = service_url("STRANGLER_TEST_MYSQL_URL") else {
        return;
    };
    exercise(
        &url,
        &mysql_schema(),
        json!({"local": "2024-05-06T07:08:09.5"}),
    )
    .await;
}

#[tokio::test]
async fn a_database_that_is_down_is_a_503() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("api.db").display());
    setup(&url, &sqlite_schema()).await;
    let (_, resources) = strangler::apigen::introspect(&url, &[])
        .await
        .expect("schema");
    // Nothing listens on port 1: every connection attempt is refused.
    let service = strangler::apigen::Service::new(
        "down",
        strangler::apigen::Db::Postgres,
        resources,
        strangler::apigen::Options::default(),
        "postgres://postgres@127.0.0.1:1/test",
        None,
    );
    let r = service
        .handle(
            &http::Method::GET,
            "/v1/ag_kinds",
            "",
            &http::HeaderMap::new(),
            Ok(b""),
        )
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = service
        .handle(
            &http::Method::GET,
            "/openapi.json",
            "",
            &http::HeaderMap::new(),
            Ok(b""),
        )
        .await;
    assert_eq!(r.status(), 200, "the document needs no database");
}

#[tokio::test]
async fn unknown_tables_and_bad_urls_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("api.db").display());
    setup(&url, &sqlite_schema()).await;
    let err = strangler::apigen::introspect(&url, &["nope".into()])
        .await
        .expect_err("error");
    assert!(err.to_string().contains("\"nope\""), "{err}");
    let err = strangler::apigen::introspect("oracle://x", &[])
        .await
        .expect_err("error");
    assert!(err.to_string().contains("oracle://x"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_services_and_their_writes_reach_the_tap_as_entity_writes() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("svc.db");
    let url = format!("sqlite://{}", db.display());
    setup(&url, &sqlite_schema()).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let text = format!(
        "{}\n[services.catalog]\ndatabase = \"{url}\"\ntables = [\"ag_kinds\"]\nlisten = \"127.0.0.1:{port}\"\nmount = \"/api/catalog\"\n\
         [sides.monolith]\ndatabase = \"sqlite://{{dir}}/mono.db\"\n[sides.catalog]\ndatabase = \"{url}\"\n\
         [[entities]]\nname = \"kinds\"\nmonolith = {{ table = \"kinds\", key = [\"id\"] }}\n\
         catalog = {{ table = \"ag_kinds\", key = [\"id\"] }}\n\
         columns = {{ id = \"id\", name = \"name\" }}\nauthority = \"monolith\"\n",
        common::gateway_section()
    );
    let (cfg_dir, path) = common::config_file(&text);
    setup(
        &format!("sqlite://{}/mono.db", cfg_dir.path().display()),
        &["CREATE TABLE kinds (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"],
    )
    .await;
    let cfg = strangler::config::Config::load(&path).expect("valid config");
    strangler::sync::SyncEngine::install(&cfg.sync)
        .await
        .expect("capture installed");
    let running = strangler::app::start(cfg).await.expect("gateway starts");
    let gw = common::InProcess {
        running,
        dir: cfg_dir,
        path,
    };
    let c = client();
    let r = send(
        &c,
        "POST",
        &format!("http://127.0.0.1:{port}/v1/ag_kinds"),
        JSON,
        r#"{"name": "tapped"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let mut found = false;
    for _ in 0..50 {
        let tap = common::get(&c, &gw.admin("/admin/tap"), &[]).await.json();
        if let Some(e) = tap["events"].as_array().and_then(|a| a.first()) {
            assert_eq!(e["entity"], "kinds");
            assert_eq!(e["side"], "catalog");
            assert_eq!(e["method"], "POST");
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(found, "the API's write reached the gateway's tap");
    // Mounted: the gateway's listener serves it under the prefix, links included.
    let r = common::get(&c, &gw.url("/api/catalog/v1/ag_kinds?name=tapped"), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let href = r.json()["items"][0]["_links"]["self"]["href"].clone();
    assert!(
        href.as_str()
            .is_some_and(|h| h.starts_with("/api/catalog/v1/ag_kinds/")),
        "{href}"
    );
    let doc = common::get(&c, &gw.url("/api/catalog/openapi.json"), &[])
        .await
        .json();
    assert_eq!(doc["servers"][0]["url"], "/api/catalog");
    gw.running.shutdown().await;
}

#[tokio::test]
async fn read_only_deprecated_services_say_so_and_count_their_requests() {
    let handle = strangler::metrics::install();
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("api.db").display());
    setup(&url, &sqlite_schema()).await;
    let cfg = ServiceConfig {
        name: "legacy".into(),
        database: url,
        tables: vec![],
        listen: "127.0.0.1:0".parse().expect("addr"),
        mount: None,
        max_limit: 10,
        read_only: true,
        deprecated: true,
        sunset: Some("Sat, 01 Aug 2027 00:00:00 GMT".into()),
        pool: 1,
    };
    let service = command::prepare(&cfg, None).await.expect("service");
    let h = http::HeaderMap::new();
    let r = service
        .handle(&http::Method::GET, "/v1/ag_kinds", "", &h, Ok(b""))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["deprecation"], "true");
    assert_eq!(r.headers()["sunset"], "Sat, 01 Aug 2027 00:00:00 GMT");
    let r = service
        .handle(&http::Method::POST, "/v1/ag_kinds", "", &h, Ok(b"{}"))
        .await;
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    let doc: Value = serde_json::from_slice(&service.document).expect("doc");
    assert!(doc["paths"]["/v1/ag_kinds"]["post"].is_null());
    assert_eq!(doc["paths"]["/v1/ag_kinds"]["get"]["deprecated"], true);
    let text = handle.render();
    for want in [
        "strangler_api_requests_total{service=\"legacy\",operation=\"list_ag_kinds\",status=\"2xx\"}",
        "strangler_api_errors_total{service=\"legacy\",operation=\"other_ag_kinds\",status=\"405\"}",
        "strangler_api_request_duration_seconds_bucket{service=\"legacy\",operation=\"list_ag_kinds\"",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
}
