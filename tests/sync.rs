//! The sync engine against real SQLite files and the real PostgreSQL and MariaDB servers:
//! no loops, convergence under concurrent writers, transactions, transforms, conflict
//! policies field by field, mapping errors and schema drift.

mod sync_support;

use std::sync::Arc;

use serde_json::Value;
use strangler::sync::SyncEngine;
use strangler::sync::conflict::ConflictRule;
use sync_support::*;

async fn one_insert_one_apply(pair: Pair) {
    let Some(s) = Sides::new(pair).await else {
        return;
    };
    let eng = start(&s.config("")).await;
    s.left
        .exec("INSERT INTO users (id, email, name, stock) VALUES (1, 'a@x.io', 'Ann', 5)")
        .await;
    assert!(
        converged(&s, 10).await,
        "{pair:?}: insert reached the service"
    );
    // Many idle rounds later the insert has still been applied exactly once: no echo.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        applied(&eng.status, "users"),
        1,
        "{pair:?}: one insert, one apply"
    );
    s.right
        .exec("UPDATE accounts SET full_name = 'Ann B' WHERE user_id = 1")
        .await;
    assert!(converged(&s, 10).await);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        applied(&eng.status, "users"),
        2,
        "{pair:?}: one update back, one apply"
    );
    assert_eq!(users(&s).await.0[0][2], "Ann B");
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_sqlite_one_insert_is_applied_once_and_never_echoed() {
    one_insert_one_apply(Pair::SqliteSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_postgres_one_insert_is_applied_once_and_never_echoed() {
    one_insert_one_apply(Pair::PgPg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_mariadb_one_insert_is_applied_once_and_never_echoed() {
    one_insert_one_apply(Pair::PgMy).await;
}

/// 10,000 modifications from 8 writers, 4 on each side: inserts of their own keys, deletes of
/// some of them, renames, and increments of 20 shared counters (counter policy). Every
/// increment must count exactly once on both sides.
async fn concurrent_writers_converge(pair: Pair) {
    let Some(s) = Sides::new(pair).await else {
        return;
    };
    let mut seed = String::new();
    for k in 0..20 {
        seed.push_str(&format!(
            "INSERT INTO users (id, email, name, stock) VALUES ({k}, 'shared{k}@x.io', 'shared', 1000);"
        ));
    }
    // Rows written before capture is installed are not captured: seed after the start.
    let eng = start(&s.config(r#"column_conflict = { stock = "counter" }"#)).await;
    s.left.exec(&seed).await;
    assert!(converged(&s, 20).await, "seed synced");
    const WRITERS: i64 = 4;
    const OPS: i64 = 1250;
    let s = Arc::new(s);
    let mut handles = Vec::new();
    for side in 0..2 {
        for w in 0..WRITERS {
            let s = s.clone();
            handles.push(tokio::spawn(async move {
                let (db, table, key, name) = if side == 0 {
                    (&s.left, "users", "id", "name")
                } else {
                    (&s.right, "accounts", "user_id", "full_name")
                };
                let base = 1000 + (side * WRITERS + w) * 100_000;
                let mut increments = vec![0i64; 20];
                for op in 0..OPS {
                    let id = base + op;
                    let sql = match op % 5 {
                        0 | 1 => format!("INSERT INTO {table} ({key}, email, {name}) VALUES ({id}, 'u{id}@x.io', 'n{id}')"),
                        2 => {
                            let k = (op / 5 + w) % 20;
                            increments[k as usize] += 1;
                            format!("UPDATE {table} SET stock = stock + 1 WHERE {key} = {k}")
                        }
                        3 => format!("UPDATE {table} SET {name} = 'renamed{id}' WHERE {key} = {}", id - 2),
                        _ => format!("DELETE FROM {table} WHERE {key} = {}", id - 3),
                    };
                    db.exec(&sql).await;
                }
                increments
            }));
        }
    }
    let mut total = [0i64; 20];
    for h in handles {
        for (t, n) in total.iter_mut().zip(h.await.unwrap()) {
            *t += n;
        }
    }
    assert!(
        converged(&s, 120).await,
        "{pair:?}: both sides identical row by row"
    );
    let (left, _) = users(&s).await;
    for (k, inc) in total.iter().enumerate() {
        assert_eq!(
            left[k][3],
            (1000 + inc).to_string(),
            "{pair:?}: counter {k}: every increment exactly once"
        );
    }
    // Each writer inserted 500 rows and deleted 250 of them.
    assert_eq!(
        left.len() as i64,
        20 + 2 * WRITERS * 250,
        "{pair:?}: nothing lost, nothing duplicated"
    );
    // Renames hit rows that are deleted right after: none may survive, every other row keeps its name.
    let renamed = left.iter().filter(|r| r[2].starts_with("renamed")).count();
    eprintln!("{pair:?}: {:?}", &left[20..23]);
    assert_eq!(renamed, 0, "{pair:?}: a delete after a rename wins");
    Arc::try_unwrap(s).ok();
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_sqlite_ten_thousand_concurrent_modifications_converge() {
    concurrent_writers_converge(Pair::SqliteSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_postgres_ten_thousand_concurrent_modifications_converge() {
    concurrent_writers_converge(Pair::PgPg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_mariadb_ten_thousand_concurrent_modifications_converge() {
    concurrent_writers_converge(Pair::PgMy).await;
}

async fn transactions_arrive_whole(pair: Pair) {
    let Some(s) = Sides::new(pair).await else {
        return;
    };
    let eng = start(&s.config("")).await;
    let s = Arc::new(s);
    let watcher = {
        let s = s.clone();
        tokio::spawn(async move {
            // Whenever an order is visible on the service, all three of its items are too.
            let mut torn = 0;
            for _ in 0..300 {
                let rows = s
                    .right
                    .rows("SELECT o.id, (SELECT count(*) FROM items i WHERE i.order_id = o.id) FROM orders o")
                    .await;
                torn += rows.iter().filter(|r| r[1] != "3").count();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            torn
        })
    };
    for o in 1..=50 {
        let mut sql = String::from("BEGIN;");
        sql.push_str(&format!(
            "INSERT INTO orders (id, total) VALUES ({o}, {});",
            o * 10
        ));
        for i in 0..3 {
            sql.push_str(&format!(
                "INSERT INTO items (id, order_id, qty) VALUES ({}, {o}, {i});",
                o * 10 + i
            ));
        }
        sql.push_str("COMMIT;");
        s.left.exec(&sql).await;
    }
    assert_eq!(
        watcher.await.unwrap(),
        0,
        "{pair:?}: an order never appeared without its items"
    );
    assert!(converged(&s, 20).await);
    assert_eq!(s.right.count("SELECT count(*) FROM items").await, 150);
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_sqlite_source_transactions_arrive_whole() {
    transactions_arrive_whole(Pair::SqliteSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_postgres_source_transactions_arrive_whole() {
    transactions_arrive_whole(Pair::PgPg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_mariadb_source_transactions_arrive_whole() {
    transactions_arrive_whole(Pair::PgMy).await;
}

/// Writes both sides while no engine runs, then starts one: a true conflict on key 1.
async fn conflict(
    pair: Pair,
    extra: &str,
    left_sql: &str,
    right_sql: &str,
    rule: Option<(&str, Arc<dyn ConflictRule>)>,
) -> (Sides, Vec<String>, Value) {
    let s = Sides::new(pair).await.expect("sides");
    let text = s.config(extra);
    let first = rule.clone();
    let eng = start_with(&text, |e| match first {
        Some((name, r)) => e.with_rule(name, r),
        None => e,
    })
    .await;
    s.left
        .exec("INSERT INTO users (id, email, name, stock, nick, score) VALUES (1, 'base@x.io', 'Base', 10, NULL, 50)")
        .await;
    assert!(converged(&s, 10).await);
    eng.stop().await;
    s.left.exec(left_sql).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    s.right.exec(right_sql).await;
    let eng = start_with(&text, |e| match rule {
        Some((name, r)) => e.with_rule(name, r),
        None => e,
    })
    .await;
    assert!(converged(&s, 10).await, "converged after the conflict");
    let c = eng.status.conflicts(10);
    assert_eq!(c.len(), 1, "exactly one conflict recorded: {c:?}");
    eng.stop().await;
    let row = users(&s).await.0.remove(0);
    (s, row, c[0].clone())
}

const L: &str =
    "UPDATE users SET name = 'Left', email = 'left@x.io', stock = 7, score = 40 WHERE id = 1";
const R: &str = "UPDATE accounts SET email = 'right@x.io', stock = 15, nick = 'rn', score = 90 WHERE user_id = 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflict_last_write_wins_takes_the_later_row_whole() {
    let (_s, row, c) = conflict(Pair::SqliteSqlite, "", L, R, None).await;
    assert_eq!(row, ["1", "right@x.io", "Base", "15", "rn", "90"]);
    assert_eq!(c["policy"], "last_write_wins");
    assert_eq!(c["outcome"], "right");
    assert_eq!(c["left"]["row"]["name"], "Left", "both images kept: {c}");
    assert_eq!(c["right"]["row"]["email"], "right@x.io");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflict_priority_takes_the_priority_side_whole() {
    let (_s, row, c) = conflict(Pair::SqliteSqlite, r#"conflict = "priority""#, L, R, None).await;
    assert_eq!(row, ["1", "left@x.io", "Left", "7", "NULL", "40"]);
    assert_eq!(c["outcome"], "left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflict_field_merge_keeps_both_sides_disjoint_changes() {
    let (_s, row, c) = conflict(
        Pair::SqliteSqlite,
        r#"conflict = "field_merge""#,
        "UPDATE users SET name = 'Left', score = 40 WHERE id = 1",
        "UPDATE accounts SET nick = 'rn', score = 90 WHERE user_id = 1",
        None,
    )
    .await;
    // name from the left, nick from the right, score changed on both: later (right) wins.
    assert_eq!(row, ["1", "base@x.io", "Left", "10", "rn", "90"]);
    assert_eq!(c["outcome"], "merged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflict_column_rules_counter_max_min_prefer_non_null() {
    let (_s, row, _) = conflict(
        Pair::SqliteSqlite,
        r#"conflict = "priority"
column_conflict = { stock = "counter", score = "max", email = "min", nick = "prefer_non_null" }"#,
        L,
        R,
        None,
    )
    .await;
    // Row policy priority (left) for name; stock 10 - 3 + 5; score max; email min; nick non-null.
    assert_eq!(row, ["1", "left@x.io", "Left", "12", "rn", "90"]);
}

struct Concat;

impl ConflictRule for Concat {
    fn resolve(&self, _c: &str, _b: Option<&Value>, l: &Value, r: &Value) -> Value {
        match (l, r) {
            (Value::String(a), Value::String(b)) => Value::from(format!("{a}+{b}")),
            _ => l.clone(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflict_custom_rule_from_rust() {
    let (_s, row, c) = conflict(
        Pair::SqliteSqlite,
        r#"conflict = "custom:concat""#,
        "UPDATE users SET name = 'L' WHERE id = 1",
        "UPDATE accounts SET full_name = 'R' WHERE user_id = 1",
        Some(("concat", Arc::new(Concat))),
    )
    .await;
    assert_eq!(row[2], "L+R");
    assert_eq!(c["policy"], "custom:concat");
}

/// A `custom:NAME` policy whose rule nobody registered is refused before anything runs —
/// by the engine's check, by `serve`, and by `strangler check` — naming the entity and the
/// rule; it used to act as last-write-wins without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unregistered_custom_rules_are_refused_before_start() {
    let s = Sides::new(Pair::SqliteSqlite).await.expect("sides");
    let text = s.config(
        r#"conflict = "custom:concat"
column_conflict = { nick = "custom:longest" }"#,
    );
    let cfg = parse(&text);
    SyncEngine::install(&cfg.sync).await.expect("install");
    let err = SyncEngine::new(cfg.sync.clone(), None)
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("entity \"users\"")
            && err.contains("custom:concat")
            && err.contains("none are"),
        "{err}"
    );
    let err = SyncEngine::new(cfg.sync.clone(), None)
        .with_rule("concat", Arc::new(Concat))
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("custom:longest") && err.contains("registered: concat"),
        "{err}"
    );
    let mut rules = strangler::sync::conflict::Rules::new();
    rules.insert("concat".into(), Arc::new(Concat));
    rules.insert("longest".into(), Arc::new(Concat));
    let engine = SyncEngine::new(cfg.sync.clone(), None).with_rules(&rules);
    assert!(engine.check().await.is_ok());

    // `serve` refuses it unless the embedding program passes the rules.
    let mut serve_cfg = parse(&text);
    serve_cfg.gateway.listen = "127.0.0.1:0".parse().unwrap();
    serve_cfg.gateway.admin_listen = "127.0.0.1:0".parse().unwrap();
    let err = match strangler::app::start(serve_cfg.clone()).await {
        Ok(_) => panic!("serve started with an unregistered rule"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("custom:concat"), "{err}");
    let running = strangler::app::start_with_rules(serve_cfg, rules)
        .await
        .expect("serve with the rules registered");
    running.shutdown().await;

    // The `strangler` binary registers none: `check` says so.
    let path = s.dir.path().join("custom.toml");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("custom:concat"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflict_between_postgres_and_mariadb_is_settled_the_same_way() {
    if service_url("STRANGLER_TEST_POSTGRES_URL").is_none()
        || service_url("STRANGLER_TEST_MYSQL_URL").is_none()
    {
        return;
    }
    let (_s, row, _) = conflict(
        Pair::PgMy,
        r#"conflict = "field_merge"
column_conflict = { stock = "counter" }"#,
        "UPDATE users SET name = 'Left', stock = stock - 3 WHERE id = 1",
        "UPDATE accounts SET nick = 'rn', stock = stock + 5 WHERE user_id = 1",
        None,
    )
    .await;
    assert_eq!(row, ["1", "base@x.io", "Left", "12", "rn", "50"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transforms_rename_split_join_case_cast_and_default_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (l, lu) = Db::fresh_sqlite(dir.path(), "m");
    let (r, ru) = Db::fresh_sqlite(dir.path(), "s");
    l.exec("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, email TEXT, age TEXT)")
        .await;
    r.exec("CREATE TABLE persons (pid INTEGER PRIMARY KEY, first TEXT, last TEXT, mail TEXT, age INTEGER, tier TEXT NOT NULL)").await;
    let text = format!(
        r#"
[gateway]
control = "sqlite://{}/c.db"
[sync]
poll = "20ms"
[sides.monolith]
database = "{lu}"
[sides.people]
database = "{ru}"
[[entities]]
name = "people"
monolith = {{ table = "people", key = ["id"] }}
people = {{ table = "persons", key = ["pid"] }}
columns = {{ id = "pid", email = "mail", age = "age" }}
transforms = [
  {{ split = "name", into = ["first", "last"] }},
  {{ column = "email", op = "lower" }},
  {{ column = "age", cast = "integer" }},
  {{ column = "tier", default = "basic" }},
]
"#,
        dir.path().display()
    );
    let eng = start(&text).await;
    l.exec("INSERT INTO people VALUES (1, 'Ada Lovelace', 'ADA@X.IO', '36')")
        .await;
    let want = vec![vec!["1", "Ada", "Lovelace", "ada@x.io", "36", "basic"]];
    assert!(
        eventually(10, || async {
            r.rows("SELECT * FROM persons").await == want
        })
        .await,
        "{:?}",
        r.rows("SELECT * FROM persons").await
    );
    r.exec("UPDATE persons SET last = 'King', age = 37 WHERE pid = 1")
        .await;
    let back = vec![vec!["1", "Ada King", "ada@x.io", "37"]];
    assert!(
        eventually(10, || async {
            l.rows("SELECT * FROM people").await == back
        })
        .await,
        "{:?}",
        l.rows("SELECT * FROM people").await
    );
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_mappings_are_refused_naming_entity_side_table_and_column() {
    let s = Sides::new(Pair::SqliteSqlite).await.unwrap();
    let base = s.config("");
    let cases = [
        (
            base.replace(r#"table = "accounts""#, r#"table = "nope""#),
            r#"entity "users": side "users": table "nope": table does not exist"#,
        ),
        (
            base.replace(r#"nick = "nick""#, r#"nick = "nickname""#),
            r#"entity "users": side "users": table "accounts": column "nickname" does not exist"#,
        ),
        (
            base.replace(r#"key = ["user_id"]"#, r#"key = ["email"]"#),
            "is not the primary key or a unique index",
        ),
        (
            base.replace(r#"name = "full_name""#, r#"name = "score""#)
                .replace(r#", score = "score""#, ""),
            r#"table "accounts": column "score" is INTEGER"#,
        ),
    ];
    for (text, want) in cases {
        let cfg = parse(&text);
        let err = match SyncEngine::install(&cfg.sync).await {
            Err(e) => e.to_string(),
            Ok(()) => SyncEngine::new(cfg.sync.clone(), None)
                .check()
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        };
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
    // And config-level mistakes, before any database is opened.
    let bad = base.replace(r#"authority = "monolith""#, r#"authority = "billing""#);
    let err = strangler::config::Config::parse(std::path::Path::new("sync.toml"), &bad)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        r#"sync.toml: entity "users": authority: "billing" is not one of the entity's sides"#
    );
}

async fn drift(pair: Pair, on_right: bool) {
    let Some(s) = Sides::new(pair).await else {
        return;
    };
    let eng = start(&s.config("")).await;
    s.left
        .exec("INSERT INTO users (id, email, name) VALUES (1, 'a@x.io', 'A')")
        .await;
    assert!(converged(&s, 10).await);
    let (db, table) = if on_right {
        (&s.right, "accounts")
    } else {
        (&s.left, "users")
    };
    // A new nullable column not in the map: a warning only, syncing goes on.
    db.exec(&format!("ALTER TABLE {table} ADD COLUMN extra VARCHAR(10)"))
        .await;
    s.left
        .exec("INSERT INTO users (id, email, name) VALUES (2, 'b@x.io', 'B')")
        .await;
    assert!(
        converged(&s, 10).await,
        "{pair:?}: a compatible change only warns"
    );
    // A mapped column retyped: the entity pauses instead of writing.
    let retype = match (pair, on_right) {
        (Pair::SqliteSqlite, _) => None,
        (Pair::PgMy, true) => Some(format!("ALTER TABLE {table} MODIFY score VARCHAR(20)")),
        _ => Some(format!(
            "ALTER TABLE {table} ALTER COLUMN score TYPE VARCHAR(20)"
        )),
    };
    let Some(retype) = retype else {
        eng.stop().await;
        return;
    };
    db.exec(&retype).await;
    let reason = paused_reason(&eng).await;
    assert!(reason.contains(r#"column "score""#), "{reason}");
    eprintln!("paused: {reason}");
    s.left
        .exec("UPDATE users SET name = 'held' WHERE id = 1")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_ne!(
        users(&s).await.1[0][2],
        "held",
        "nothing written while paused"
    );
    // Other entities keep syncing.
    s.left
        .exec("INSERT INTO orders (id, total) VALUES (1, 5)")
        .await;
    assert!(
        eventually(5, || async {
            s.right.count("SELECT count(*) FROM orders").await == 1
        })
        .await
    );
    // The operator reverts the column (or fixes the mapping) and restarts: the change flows.
    let revert = retype
        .replace("VARCHAR(20)", "INTEGER")
        .replace("TYPE INTEGER", "TYPE INTEGER USING score::integer");
    db.exec(&revert).await;
    eng.stop().await;
    let eng = start(&s.config("")).await;
    assert!(converged(&s, 10).await, "{pair:?}: resumed after the fix");
    assert_eq!(users(&s).await.1[0][2], "held");
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_drift_on_the_postgres_service_side_pauses_the_entity() {
    drift(Pair::PgPg, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_drift_on_the_postgres_monolith_side_pauses_the_entity() {
    drift(Pair::PgPg, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_drift_on_the_mariadb_side_pauses_the_entity() {
    drift(Pair::PgMy, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_drift_new_column_on_sqlite_only_warns() {
    drift(Pair::SqliteSqlite, true).await;
}

/// Waits until the `users` entity is paused and returns the reason.
async fn paused_reason(eng: &Running) -> String {
    assert!(
        eventually(5, || async {
            eng.status.snapshot()["paused"]["users"].is_string()
        })
        .await,
        "paused: {}",
        eng.status.snapshot()
    );
    eng.status.snapshot()["paused"]["users"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_drift_a_dropped_mapped_column_pauses_until_it_is_back() {
    let Some(s) = Sides::new(Pair::PgPg).await else {
        return;
    };
    let eng = start(&s.config("")).await;
    s.left
        .exec("INSERT INTO users (id, email, name, nick) VALUES (1, 'a@x.io', 'A', 'n')")
        .await;
    assert!(converged(&s, 10).await);
    s.right.exec("ALTER TABLE accounts DROP COLUMN nick").await;
    let reason = paused_reason(&eng).await;
    assert!(
        reason.contains(r#"table "accounts""#) && reason.contains(r#"column "nick""#),
        "{reason}"
    );
    s.left
        .exec("UPDATE users SET name = 'held', nick = 'm' WHERE id = 1")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        s.right
            .rows("SELECT full_name FROM accounts WHERE user_id = 1")
            .await,
        vec![vec!["A"]],
        "nothing written while paused"
    );
    // The column comes back as it was (a different length would be a type change, which
    // keeps the entity paused): the entity resumes on its own, with the held change.
    s.right
        .exec("ALTER TABLE accounts ADD COLUMN nick VARCHAR(100)")
        .await;
    assert!(
        eventually(10, || async {
            s.right
                .rows("SELECT full_name, nick FROM accounts WHERE user_id = 1")
                .await
                == vec![vec!["held", "m"]]
        })
        .await,
        "resumed: {}",
        eng.status.snapshot()
    );
    assert!(eng.status.snapshot()["paused"]["users"].is_null());
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_drift_on_both_sides_at_once_with_conflicting_types_pauses_the_entity() {
    let Some(s) = Sides::new(Pair::PgMy).await else {
        return;
    };
    let eng = start(&s.config("")).await;
    s.left
        .exec("INSERT INTO users (id, email, name, score) VALUES (1, 'a@x.io', 'A', 3)")
        .await;
    assert!(converged(&s, 10).await);
    s.left
        .exec("ALTER TABLE users ALTER COLUMN score TYPE BOOLEAN USING score <> 0")
        .await;
    s.right
        .exec("ALTER TABLE accounts MODIFY score VARCHAR(20)")
        .await;
    let reason = paused_reason(&eng).await;
    assert!(reason.contains(r#"column "score""#), "{reason}");
    s.left
        .exec("UPDATE users SET name = 'held' WHERE id = 1")
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(users(&s).await.1[0][2], "A", "nothing written while paused");
    eng.stop().await;
    // Restarting on the conflicting schema is refused with the same kind of error.
    let err = strangler::sync::SyncEngine::new(parse(&s.config("")).sync, None)
        .check()
        .await
        .expect_err("conflicting types are refused at start")
        .to_string();
    assert!(err.contains(r#"column "score""#), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uninstall_removes_every_trace() {
    let Some(s) = Sides::new(Pair::PgMy).await else {
        return;
    };
    let cfg = parse(&s.config(""));
    SyncEngine::install(&cfg.sync).await.unwrap();
    SyncEngine::install(&cfg.sync)
        .await
        .expect("install is idempotent");
    SyncEngine::uninstall(&cfg.sync).await.unwrap();
    assert_eq!(
        s.left
            .count("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '_strangler%'")
            .await
            + s.left
                .count("SELECT count(*) FROM pg_tables WHERE tablename LIKE '_strangler%'")
                .await
            + s.left
                .count("SELECT count(*) FROM pg_proc WHERE proname LIKE '_strangler%'")
                .await,
        0
    );
    assert_eq!(
        s.right.count("SELECT count(*) FROM information_schema.triggers WHERE trigger_schema = DATABASE()").await
            + s.right.count("SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE '\\_strangler%'").await,
        0
    );
    // Writes work untouched afterwards.
    s.right
        .exec("INSERT INTO accounts (user_id) VALUES (9)")
        .await;
}
