//! The analyzer inside `serve`: `GET /admin/analysis` analyzes the monolith's database with
//! the writes the gateway routed and the transactions the sync engine captured.

mod common;
mod sync_support;

use std::time::Duration;

use strangler::sync::SyncEngine;

const TABLES: &str = "CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR(100));
CREATE TABLE addresses (id INTEGER PRIMARY KEY, user_id INTEGER, city VARCHAR(100));
CREATE TABLE products (id INTEGER PRIMARY KEY, sku VARCHAR(40));
CREATE TABLE product_images (id INTEGER PRIMARY KEY, product_id INTEGER, url VARCHAR(100))";

fn config(monolith: &str, service: &str, upstream: &str) -> String {
    format!(
        r#"{}
[sync]
poll = "20ms"
[upstreams.monolith]
url = "{upstream}"
[[routes]]
name = "users"
path_prefix = "/api/users"
split = {{ monolith = 100 }}
entity = "users"
[sides.monolith]
database = "{monolith}"
[sides.accounts]
database = "{service}"
[[entities]]
name = "users"
monolith = {{ table = "users", key = ["id"] }}
accounts = {{ table = "users", key = ["id"] }}
columns = {{ id = "id", email = "email" }}
[[entities]]
name = "addresses"
monolith = {{ table = "addresses", key = ["id"] }}
accounts = {{ table = "addresses", key = ["id"] }}
columns = {{ id = "id", user_id = "user_id", city = "city" }}
"#,
        common::gateway_section()
    )
}

/// `GET /admin/analysis` with an Accept header: status, content type, body.
async fn analysis(gw: &common::InProcess, accept: &str) -> (u16, String, String) {
    let client = common::client();
    let reply = common::get(&client, &gw.admin("/admin/analysis"), &[("accept", accept)]).await;
    let ctype = reply
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (
        reply.status.as_u16(),
        ctype,
        String::from_utf8_lossy(&reply.body).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_writes_and_the_schema_are_analyzed_live_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (m, mu) = sync_support::Db::fresh_sqlite(dir.path(), "m");
    let (s, su) = sync_support::Db::fresh_sqlite(dir.path(), "s");
    for t in TABLES.split(';') {
        m.exec(t).await;
        s.exec(t).await;
    }
    let upstream = common::named_upstream("monolith").await;
    let text = config(&mu, &su, &upstream.uri());
    let (_d, path) = common::config_file(&text);
    let cfg = strangler::config::Config::load(&path).unwrap();
    SyncEngine::install(&cfg.sync).await.unwrap();
    let gw = common::start(&text).await;
    let client = common::client();
    for i in 0..5 {
        let r = common::send(
            &client,
            "POST",
            &gw.url(&format!("/api/users/{i}")),
            &[],
            "{}",
        )
        .await;
        assert!(r.status.is_success(), "{}", r.status);
    }
    m.exec("INSERT INTO users VALUES (1, 'a@x')").await;
    let mut report = serde_json::Value::Null;
    for _ in 0..50 {
        let (status, ctype, body) = analysis(&gw, "application/json").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(ctype, "application/json");
        report = serde_json::from_str(&body).unwrap();
        let sources = report["evidence"]["sources"].to_string();
        if sources.contains("5 routed writes") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sources = report["evidence"]["sources"].to_string();
    assert!(sources.contains("write tap: 5 routed writes"), "{sources}");
    assert!(sources.contains("sync engine:"), "{sources}");
    assert_eq!(report["evidence"]["requests"], 5);
    assert_eq!(report["evidence"]["tables"], 4);
    // Names alone tie addresses to users and product_images to products.
    assert_eq!(report["inferred_fks"], 2);
    assert_eq!(
        report["services"].as_array().unwrap().len(),
        2,
        "{report:#}"
    );
    let (status, ctype, md) = analysis(&gw, "text/markdown").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/markdown"), "{ctype}");
    assert!(md.starts_with("# Proposed services"), "{md}");
    gw.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_transactions_on_postgres_hold_their_tables_together() {
    let Some(base) = sync_support::service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    let (m, mu) = sync_support::Db::fresh_pg(&base).await;
    let dir = tempfile::tempdir().unwrap();
    let (s, su) = sync_support::Db::fresh_sqlite(dir.path(), "s");
    for t in TABLES.split(';') {
        m.exec(t).await;
        s.exec(t).await;
    }
    let upstream = common::named_upstream("monolith").await;
    let text = config(&mu, &su, &upstream.uri());
    let (_d, path) = common::config_file(&text);
    let cfg = strangler::config::Config::load(&path).unwrap();
    SyncEngine::install(&cfg.sync).await.unwrap();
    let gw = common::start(&text).await;
    // users and addresses are written together; names would not tie them (no user_id rule
    // breaks: addresses.user_id is inferred either way), the transactions make it certain.
    for i in 0..20 {
        m.exec(&format!(
            "BEGIN; INSERT INTO users VALUES ({i}, 'u{i}'); INSERT INTO addresses VALUES ({i}, {i}, 'c'); COMMIT"
        ))
        .await;
    }
    let mut report = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, _, body) = analysis(&gw, "application/json").await;
        assert_eq!(status, 200, "{body}");
        report = serde_json::from_str(&body).unwrap();
        if report["evidence"]["transactions"].as_u64() >= Some(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(report["evidence"]["transactions"], 20, "{report:#}");
    let users = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tables"].to_string().contains("public.users"))
        .unwrap();
    assert!(users["tables"].to_string().contains("public.addresses"));
    assert!(
        users["why"]
            .to_string()
            .contains("written together in 100%"),
        "{users:#}"
    );
    gw.running.shutdown().await;
}
