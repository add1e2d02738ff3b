//! The boundary analyzer on a real-shaped e-commerce monolith (tests/fixtures/shop.sql) on
//! SQLite, PostgreSQL and MariaDB, and on transactions recovered from each server's own log.

mod sync_support;

use mysql_async::prelude::Queryable;
use strangler::analyze::{Input, LogFormat, Options, Report, analyze};
use sync_support::service_url;

const SHOP: &str = include_str!("fixtures/shop.sql");
const EVIDENCE: &str = "tests/fixtures/shop-evidence.jsonl";

fn statements() -> Vec<String> {
    let text: String = SHOP
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The service holding `table`.
fn service_of<'a>(r: &'a Report, table: &str) -> &'a str {
    &r.services
        .iter()
        .find(|s| s.tables.iter().any(|t| t == table))
        .unwrap_or_else(|| panic!("{table} is in no service"))
        .name
}

/// What any sound split of the shop must show, with table names as the database spells them.
fn check_shop(r: &Report, q: impl Fn(&str) -> String, inferred: usize) {
    let same = |a: &str, b: &str| {
        assert_eq!(
            service_of(r, &q(a)),
            service_of(r, &q(b)),
            "{a} and {b} apart: {r:#?}"
        );
    };
    let apart = |a: &str, b: &str| {
        assert_ne!(
            service_of(r, &q(a)),
            service_of(r, &q(b)),
            "{a} and {b} together"
        );
    };
    same("users", "user_sessions");
    same("users", "addresses");
    same("products", "product_images");
    same("products", "categories");
    same("payments", "refunds");
    same("payments", "invoices");
    same("orders", "order_items");
    same("shipments", "shipment_items");
    apart("users", "products");
    apart("products", "orders");
    apart("orders", "payments");
    apart("orders", "shipments");
    assert_eq!(service_of(r, &q("products")), "products");
    assert_eq!(r.inferred_fks, inferred, "undeclared references");
    assert_eq!(r.unknown_tables.get("ghost_table"), Some(&3));
    // reviews.user_id (inferred) makes products depend on users, and carts' items on products.
    assert!(
        r.cut
            .foreign_keys
            .iter()
            .any(|k| k.from == q("order_items") && k.to == q("products") && !k.inferred)
    );
    assert!(r.metrics.modularity > 0.3, "{:?}", r.metrics);
    assert_eq!(r.order.len(), r.services.len());
    let keyless = r.order.last().unwrap();
    assert_eq!(
        keyless.without_key,
        [q("audit_log")],
        "keyless tables come last"
    );
}

async fn shop_report(url: &str) -> Report {
    let mut input = Input::from_database(url).await.unwrap();
    input.read(EVIDENCE.as_ref(), LogFormat::Evidence).unwrap();
    analyze(input, &Options::default()).unwrap()
}

#[tokio::test]
async fn the_shop_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(SHOP).unwrap();
    drop(c);
    let url = format!("sqlite://{}", path.display());
    let r = shop_report(&url).await;
    check_shop(&r, |t| t.to_string(), 7);
    // Determinism: the same input gives the same JSON.
    let again = shop_report(&url).await;
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        serde_json::to_string(&again).unwrap()
    );
}

async fn fresh_pg(base: &str, name: &str) -> (tokio_postgres::Client, String) {
    let (admin, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    (client, url)
}

#[tokio::test]
async fn the_shop_on_postgres_with_schemas_and_partitions() {
    let Some(base) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    let (c, url) = fresh_pg(&base, "strangler_analyze_shop").await;
    for s in statements() {
        c.batch_execute(&s).await.unwrap();
    }
    c.batch_execute(
        "CREATE SCHEMA billing;
         CREATE TABLE billing.ledger (id INTEGER PRIMARY KEY, payment_id INTEGER REFERENCES public.payments (id));
         CREATE TABLE events (id INTEGER, at DATE NOT NULL, user_id INTEGER) PARTITION BY RANGE (at);
         CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
         CREATE TABLE events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');",
    )
    .await
    .unwrap();
    let r = shop_report(&url).await;
    // The partitioned table's user_id is inferred too.
    check_shop(&r, |t| format!("public.{t}"), 8);
    let all: Vec<&String> = r.services.iter().flat_map(|s| &s.tables).collect();
    assert!(all.contains(&&"billing.ledger".to_string()));
    assert!(all.contains(&&"public.events".to_string()));
    assert!(
        !all.iter().any(|t| t.contains("events_20")),
        "partitions fold into events"
    );
    assert_eq!(
        service_of(&r, "billing.ledger"),
        service_of(&r, "public.payments")
    );
}

#[tokio::test]
async fn the_shop_on_mariadb() {
    let Some(base) = service_url("STRANGLER_TEST_MYSQL_URL") else {
        return;
    };
    let pool = mysql_async::Pool::new(base.as_str());
    let mut c = pool.get_conn().await.unwrap();
    c.query_drop(
        "DROP DATABASE IF EXISTS strangler_analyze_shop; CREATE DATABASE strangler_analyze_shop",
    )
    .await
    .unwrap();
    c.query_drop("USE strangler_analyze_shop").await.unwrap();
    for s in statements() {
        c.query_drop(&s).await.unwrap();
    }
    let url = format!(
        "{}/strangler_analyze_shop",
        base.rsplit_once('/').unwrap().0
    );
    let r = shop_report(&url).await;
    check_shop(&r, |t| t.to_string(), 7);
    drop(c);
    pool.disconnect().await.unwrap();
}

/// The bytes a server log gained after `from`, once `marker` shows up in them.
async fn log_tail(path: &std::path::Path, from: u64, marker: &str) -> String {
    for _ in 0..100 {
        let bytes = std::fs::read(path).unwrap();
        let tail = String::from_utf8_lossy(&bytes[from as usize..]).to_string();
        if tail.contains(marker) {
            return tail;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{marker} never reached {}", path.display());
}

/// Where this PostgreSQL server writes its log: `pg_current_logfile()` with the logging
/// collector, else the newest file in Debian's /var/log/postgresql.
async fn pg_log_path(c: &tokio_postgres::Client) -> std::path::PathBuf {
    let row = c
        .query_one(
            "SELECT pg_current_logfile(), current_setting('data_directory')",
            &[],
        )
        .await
        .unwrap();
    if let Some(file) = row.get::<_, Option<String>>(0) {
        return std::path::Path::new(&row.get::<_, String>(1)).join(file);
    }
    std::fs::read_dir("/var/log/postgresql")
        .expect("no logging collector and no /var/log/postgresql")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .expect("no PostgreSQL log file")
        .path()
}

const LOG_TABLES: &str = "CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER);
     CREATE TABLE journal (id INTEGER PRIMARY KEY, note VARCHAR(100));
     CREATE TABLE stock (id INTEGER PRIMARY KEY, n INTEGER);
     CREATE TABLE visits (id INTEGER PRIMARY KEY, at INTEGER)";

/// Transactions recovered from a log: ledger and journal are always written together (and
/// share nothing else), the rolled-back write to stock is not a transaction.
fn check_log_report(r: &Report) {
    let find = |t: &str| {
        r.services
            .iter()
            .find(|s| {
                s.tables
                    .iter()
                    .any(|x| x == t || x.ends_with(&format!(".{t}")))
            })
            .unwrap()
    };
    let ledger = find("ledger");
    assert!(
        ledger.tables.iter().any(|t| t.ends_with("journal")),
        "{r:#?}"
    );
    assert!(
        ledger
            .why
            .iter()
            .any(|w| w.contains("written together in 100%")),
        "{:?}",
        ledger.why
    );
    assert!(r.evidence.transactions >= 4, "{:?}", r.evidence);
    assert!(!find("stock").tables.iter().any(|t| t.ends_with("ledger")));
}

#[tokio::test]
async fn transactions_from_a_real_postgres_log() {
    let Some(base) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    let (mut c, url) = fresh_pg(&base, "strangler_analyze_log").await;
    c.batch_execute(LOG_TABLES).await.unwrap();
    let path = pg_log_path(&c).await;
    let from = std::fs::metadata(&path).unwrap().len();
    c.batch_execute("SET log_statement = 'all'").await.unwrap();
    for i in 0..3 {
        // Simple and extended protocol, multi-line statements, a rollback in between.
        c.batch_execute(&format!(
            "BEGIN; INSERT INTO ledger VALUES ({i}, 10);\nINSERT INTO journal\n  VALUES ({i}, 'x'); COMMIT"
        ))
        .await
        .unwrap();
        c.execute("INSERT INTO visits VALUES ($1, 1)", &[&i])
            .await
            .unwrap();
        c.batch_execute("BEGIN; UPDATE stock SET n = 0; UPDATE ledger SET amount = 0; ROLLBACK")
            .await
            .unwrap();
    }
    let t = c.transaction().await.unwrap();
    t.execute("INSERT INTO ledger VALUES (100, $1)", &[&5i32])
        .await
        .unwrap();
    t.execute("INSERT INTO journal VALUES (100, $1)", &[&"y"])
        .await
        .unwrap();
    t.commit().await.unwrap();
    let marker = format!("analyze-marker-{}", std::process::id());
    c.batch_execute(&format!("SELECT '{marker}'"))
        .await
        .unwrap();
    let tail = log_tail(&path, from, &marker).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg.log");
    std::fs::write(&file, &tail).unwrap();
    let mut input = Input::from_database(&url).await.unwrap();
    input.read(&file, LogFormat::Postgres).unwrap();
    let r = analyze(input, &Options::default()).unwrap();
    check_log_report(&r);
    assert_eq!(r.evidence.transactions, 3 + 3 + 1, "{tail}");
}

#[tokio::test]
async fn transactions_from_a_real_mariadb_general_log() {
    let Some(base) = service_url("STRANGLER_TEST_MYSQL_URL") else {
        return;
    };
    let pool = mysql_async::Pool::new(base.as_str());
    let mut admin = pool.get_conn().await.unwrap();
    admin
        .query_drop(
            "DROP DATABASE IF EXISTS strangler_analyze_log; CREATE DATABASE strangler_analyze_log",
        )
        .await
        .unwrap();
    admin.query_drop("USE strangler_analyze_log").await.unwrap();
    for s in LOG_TABLES.split(';') {
        admin.query_drop(s).await.unwrap();
    }
    let (dir, file): (String, String) = admin
        .query_first("SELECT @@datadir, @@general_log_file")
        .await
        .unwrap()
        .unwrap();
    let path = std::path::Path::new(&dir).join(file);
    let from = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    admin
        .query_drop("SET GLOBAL general_log = 1")
        .await
        .unwrap();
    let url = format!("{}/strangler_analyze_log", base.rsplit_once('/').unwrap().0);
    let writer = mysql_async::Pool::new(url.as_str());
    let mut c = writer.get_conn().await.unwrap();
    for i in 0..3i32 {
        c.query_drop(format!(
            "START TRANSACTION; INSERT INTO ledger VALUES ({i}, 10); INSERT INTO journal\nVALUES ({i}, 'x'); COMMIT"
        ))
        .await
        .unwrap();
        c.exec_drop("INSERT INTO visits VALUES (?, 1)", (i,))
            .await
            .unwrap();
        c.query_drop("BEGIN; UPDATE stock SET n = 0; UPDATE ledger SET amount = 0; ROLLBACK")
            .await
            .unwrap();
    }
    c.query_drop("SET autocommit = 0").await.unwrap();
    c.exec_drop("INSERT INTO ledger VALUES (?, 5)", (100,))
        .await
        .unwrap();
    c.exec_drop("INSERT INTO journal VALUES (?, 'y')", (100,))
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
    let marker = format!("analyze-marker-{}", std::process::id());
    c.query_drop(format!("SELECT '{marker}'")).await.unwrap();
    admin
        .query_drop("SET GLOBAL general_log = 0")
        .await
        .unwrap();
    let tail = log_tail(&path, from, &marker).await;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("general.log");
    std::fs::write(&log, &tail).unwrap();
    let mut input = Input::from_database(&url).await.unwrap();
    input.read(&log, LogFormat::Mysql).unwrap();
    let r = analyze(input, &Options::default()).unwrap();
    check_log_report(&r);
    drop((c, admin));
    writer.disconnect().await.unwrap();
    pool.disconnect().await.unwrap();
}
