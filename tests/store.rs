//! The store backends on their own, against every database: composite keys whose order differs
//! from the table's index, locks, deletes, and the checkpoint (record, look up, prune, unapply).

mod sync_support;

use std::collections::HashSet;

use serde_json::json;
use strangler::store::{Absent, ApplyBatch, Capture, CaptureSpec, Op, Row, Store, Write};
use sync_support::*;

fn obj(v: serde_json::Value) -> Row {
    v.as_object().unwrap().clone()
}

fn upsert(a: i64, b: i64, v: &str) -> Write {
    Write::Upsert {
        table: "pairs".into(),
        key: vec!["a".into(), "b".into()],
        row: obj(json!({"a": a, "b": b, "v": v})),
        insert_only: Row::new(),
        bytes: vec![],
    }
}

fn key(a: i64, b: i64) -> Row {
    obj(json!({"a": a, "b": b}))
}

fn set(v: &[i64]) -> HashSet<i64> {
    v.iter().copied().collect()
}

/// `race_check`: the backend re-checks written keys before commit (SQLite needs not: the
/// engine's transaction holds its single write lock from the start).
async fn composite_keys_and_checkpoint(db: &Db, url: &str, race_check: bool) {
    // The primary key is (b, a); the entity's key is [a, b].
    db.exec("CREATE TABLE pairs (b INTEGER NOT NULL, a INTEGER NOT NULL, v VARCHAR(20), PRIMARY KEY (b, a))")
        .await;
    let mut st = Store::connect(url).await.unwrap();
    let spec = CaptureSpec {
        table: "pairs".into(),
        key: vec!["a".into(), "b".into()],
    };
    st.install(std::slice::from_ref(&spec), false)
        .await
        .unwrap();
    let first = ApplyBatch {
        writes: vec![upsert(1, 1, "x"), upsert(1, 2, "y"), upsert(2, 1, "z")],
        source: "other".into(),
        applied: vec![10, 11, 12],
        ..ApplyBatch::default()
    };
    assert!(st.apply(&first).await.unwrap(), "{url}");
    assert_eq!(
        st.backlog().await.unwrap(),
        0,
        "{url}: own writes not captured"
    );
    assert_eq!(
        st.applied("other", &[9, 10, 11, 12, 13]).await.unwrap(),
        set(&[10, 11, 12]),
        "{url}"
    );
    assert!(st.applied("elsewhere", &[10]).await.unwrap().is_empty());

    st.begin().await.unwrap();
    st.lock_keys("pairs", &[key(1, 2), key(2, 1), key(9, 9)])
        .await
        .unwrap();
    let second = ApplyBatch {
        writes: vec![
            Write::Delete {
                table: "pairs".into(),
                key: key(1, 2),
            },
            upsert(2, 1, "w"),
        ],
        source: "other".into(),
        applied: vec![20, 21],
        prune_below: Some(12),
        ..ApplyBatch::default()
    };
    assert!(st.write_batch(&second).await.unwrap(), "{url}");
    st.finish(true).await.unwrap();
    assert_eq!(
        db.rows("SELECT a, b, v FROM pairs ORDER BY a, b").await,
        vec![vec!["1", "1", "x"], vec!["2", "1", "w"]],
        "{url}: (1, 2) deleted, (2, 1) updated, (1, 1) untouched"
    );
    let got = st.applied("other", &[10, 11, 12, 20, 21]).await.unwrap();
    assert!(got.is_superset(&set(&[12, 20, 21])), "{url}: {got:?}");

    // Explicit removal of some entries keeps the others of the same batch.
    let third = ApplyBatch {
        source: "other".into(),
        unapply: vec![20],
        ..ApplyBatch::default()
    };
    assert!(st.apply(&third).await.unwrap());
    let got = st.applied("other", &[12, 20, 21]).await.unwrap();
    assert!(!got.contains(&20) && got.contains(&21), "{url}: {got:?}");
    let last = ApplyBatch {
        source: "other".into(),
        prune_below: Some(22),
        unapply: vec![21],
        ..ApplyBatch::default()
    };
    assert!(st.apply(&last).await.unwrap());
    assert!(
        st.applied("other", &[10, 11, 12, 20, 21])
            .await
            .unwrap()
            .is_empty(),
        "{url}: pruned"
    );

    // Values that need quoting survive the batched statement as they are.
    let odd = "O'Brien \\ \"q\" ;--";
    assert!(
        st.apply(&ApplyBatch {
            writes: vec![upsert(3, 3, odd)],
            source: "other".into(),
            ..ApplyBatch::default()
        })
        .await
        .unwrap()
    );
    assert_eq!(
        db.rows("SELECT v FROM pairs WHERE a = 3 AND b = 3").await,
        vec![vec![odd.to_string()]],
        "{url}"
    );

    // A change on a written key that the round did not read is a race: the batch refuses.
    db.exec("UPDATE pairs SET v = 'user' WHERE a = 1 AND b = 1")
        .await;
    let mine = st.read_changes(10, &["pairs".into()]).await.unwrap();
    assert_eq!(mine.len(), 1, "{url}: the user's update is captured");
    let racing = |seen: HashSet<i64>| ApplyBatch {
        writes: vec![upsert(1, 1, "engine")],
        source: "other".into(),
        applied: vec![60],
        seen,
        ..ApplyBatch::default()
    };
    if race_check {
        assert!(!st.apply(&racing(HashSet::new())).await.unwrap(), "{url}");
        assert_eq!(
            db.rows("SELECT v FROM pairs WHERE a = 1 AND b = 1").await,
            vec![vec!["user"]],
            "{url}: rolled back"
        );
        assert!(st.applied("other", &[60]).await.unwrap().is_empty());
    }
    // Once the round has read it, the same batch goes through.
    assert!(
        st.apply(&racing(set(&[mine[0].seq]))).await.unwrap(),
        "{url}"
    );
    db.exec("DELETE FROM pairs WHERE a = 3").await;
    let consume = ApplyBatch {
        source: "other".into(),
        consumed: st
            .read_changes(10, &["pairs".into()])
            .await
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect(),
        ..ApplyBatch::default()
    };
    assert_eq!(consume.consumed.len(), 2, "{url}");
    assert!(st.apply(&consume).await.unwrap());
    assert_eq!(
        st.backlog().await.unwrap(),
        0,
        "{url}: consumed rows deleted"
    );

    // A rolled-back batch leaves neither rows nor checkpoint.
    assert!(
        st.prepare(&ApplyBatch {
            writes: vec![upsert(5, 5, "gone")],
            source: "other".into(),
            applied: vec![50],
            ..ApplyBatch::default()
        })
        .await
        .unwrap()
    );
    st.finish(false).await.unwrap();
    assert!(st.applied("other", &[50]).await.unwrap().is_empty());
    assert_eq!(db.count("SELECT count(*) FROM pairs").await, 2, "{url}");
}

#[tokio::test]
async fn sqlite_composite_keys_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (db, url) = Db::fresh_sqlite(dir.path(), "store");
    composite_keys_and_checkpoint(&db, &url, false).await;
}

#[tokio::test]
async fn postgres_composite_keys_and_checkpoint() {
    let Some(base) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    let (db, url) = Db::fresh_pg(&base).await;
    composite_keys_and_checkpoint(&db, &url, true).await;
}

#[tokio::test]
async fn mariadb_composite_keys_and_checkpoint() {
    let Some(base) = service_url("STRANGLER_TEST_MYSQL_URL") else {
        return;
    };
    let (db, url) = Db::fresh_my(&base).await;
    composite_keys_and_checkpoint(&db, &url, true).await;
}

/// An install made by an earlier release kept one checkpoint row per change in
/// `_strangler_applied`; installing again carries those entries over.
#[tokio::test]
async fn postgres_install_carries_over_an_old_checkpoint() {
    let Some(base) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    let (db, url) = Db::fresh_pg(&base).await;
    db.exec(
        "CREATE TABLE _strangler_applied (src text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (src, seq));
         INSERT INTO _strangler_applied VALUES ('a', 3), ('a', 4), ('b', 7);",
    )
    .await;
    let mut st = Store::connect(&url).await.unwrap();
    st.install(&[], false).await.unwrap();
    assert_eq!(st.applied("a", &[2, 3, 4]).await.unwrap(), set(&[3, 4]));
    assert_eq!(st.applied("b", &[7]).await.unwrap(), set(&[7]));
    assert_eq!(
        db.count("SELECT count(*) FROM pg_class WHERE relname = '_strangler_applied'")
            .await,
        0
    );
    // Installing is idempotent.
    st.install(&[], false).await.unwrap();
    assert_eq!(st.applied("a", &[3]).await.unwrap(), set(&[3]));
}

/// The capture contract, driven through `dyn Capture` only (the seam a log-based source plugs
/// into): changes of other writers come back in commit order with their images, the engine's
/// own writes never do, the broker flag and the in-transaction key fetch work, and consumed
/// changes are gone. `tx_ids`: the database names source transactions to its triggers.
async fn capture_contract(db: &Db, url: &str, tx_ids: bool) {
    db.exec("CREATE TABLE items (id INTEGER PRIMARY KEY, v VARCHAR(20))")
        .await;
    let mut st = Store::connect(url).await.unwrap();
    let cap: &mut dyn Capture = st.capture();
    assert_eq!(cap.method(), "triggers");
    assert!(!cap.installed().await.unwrap(), "{url}");
    let spec = CaptureSpec {
        table: "items".into(),
        key: vec!["id".into()],
    };
    cap.install(std::slice::from_ref(&spec), true)
        .await
        .unwrap();
    cap.install(std::slice::from_ref(&spec), true)
        .await
        .unwrap();
    assert!(cap.installed().await.unwrap(), "{url}: idempotent install");

    db.exec("INSERT INTO items VALUES (1, 'a')").await;
    db.exec("UPDATE items SET v = 'b' WHERE id = 1").await;
    db.exec("INSERT INTO items VALUES (2, 'c')").await;
    db.exec("DELETE FROM items WHERE id = 2").await;
    let tables = ["items".to_string()];
    let all = cap.read_changes(100, &tables, false).await.unwrap();
    let ops: Vec<(Op, &str)> = all.iter().map(|c| (c.op, c.pk.as_str())).collect();
    assert_eq!(
        ops,
        [
            (Op::Insert, "1"),
            (Op::Update, "1"),
            (Op::Insert, "2"),
            (Op::Delete, "2")
        ],
        "{url}"
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "{url}");
    let update = &all[1];
    assert_eq!(update.old.as_ref().unwrap()["v"], "a", "{url}");
    assert_eq!(update.new.as_ref().unwrap()["v"], "b", "{url}");
    assert!(all[3].new.is_none() && all[3].old.as_ref().unwrap()["v"] == "c");
    assert_eq!(cap.backlog().await.unwrap(), 4, "{url}");
    assert_eq!(
        cap.read_changes(2, &tables, false).await.unwrap(),
        all[..2],
        "{url}: a limit reads a prefix"
    );
    assert!(
        cap.read_changes(10, &["other".into()], false)
            .await
            .unwrap()
            .is_empty()
    );
    match (&all[0].tx, tx_ids) {
        (Some(tx), true) => {
            assert_ne!(all[0].tx, all[1].tx, "{url}: separate transactions");
            assert_eq!(cap.read_tx(tx).await.unwrap(), all[..1], "{url}");
        }
        (None, false) => assert!(cap.read_tx("1").await.unwrap().is_empty()),
        (tx, _) => panic!("{url}: transaction id {tx:?}"),
    }

    // Broker outbox: published changes leave the unpublished view, not the changelog.
    cap.mark_published(&[all[0].seq, all[1].seq]).await.unwrap();
    let unpublished = cap.read_changes(100, &tables, true).await.unwrap();
    assert_eq!(unpublished, all[2..], "{url}");
    let seqs: Vec<i64> = all.iter().map(|c| c.seq).collect();
    assert_eq!(cap.existing(&seqs).await.unwrap(), set(&seqs), "{url}");

    // Key fetch: every change of key 2, and the later ones only when `after` is given.
    let key2: HashSet<(String, String)> = [("items".to_string(), "2".to_string())].into();
    let got: HashSet<i64> = cap
        .fetch_keys(&key2, None)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.pk == "2")
        .map(|c| c.seq)
        .collect();
    assert_eq!(got, set(&seqs[2..]), "{url}");
    let after: HashSet<i64> = cap
        .fetch_keys(&key2, Some(all[2].seq))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.pk == "2")
        .map(|c| c.seq)
        .collect();
    assert!(
        after.contains(&all[3].seq) && after.is_subset(&got),
        "{url}: {after:?}"
    );

    // The engine's own writes are not captured; consumed changes are gone for good.
    assert!(
        st.apply(&ApplyBatch {
            writes: vec![Write::Upsert {
                table: "items".into(),
                key: vec!["id".into()],
                row: obj(json!({"id": 3, "v": "engine"})),
                insert_only: Row::new(),
                bytes: vec![],
            }],
            source: "peer".into(),
            consumed: seqs.clone(),
            ..ApplyBatch::default()
        })
        .await
        .unwrap()
    );
    let cap = st.capture();
    assert_eq!(cap.backlog().await.unwrap(), 0, "{url}");
    assert!(cap.existing(&seqs).await.unwrap().is_empty(), "{url}");
    assert!(
        cap.read_changes(100, &tables, false)
            .await
            .unwrap()
            .is_empty()
    );

    cap.uninstall(&tables).await.unwrap();
    assert!(!cap.installed().await.unwrap(), "{url}: uninstalled");
    db.exec("INSERT INTO items VALUES (4, 'd')").await;
    assert_eq!(db.count("SELECT count(*) FROM items").await, 3, "{url}");
}

#[tokio::test]
async fn sqlite_capture_contract() {
    let dir = tempfile::tempdir().unwrap();
    let (db, url) = Db::fresh_sqlite(dir.path(), "capture");
    capture_contract(&db, &url, false).await;
}

#[tokio::test]
async fn postgres_capture_contract() {
    let Some(base) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    let (db, url) = Db::fresh_pg(&base).await;
    capture_contract(&db, &url, true).await;
}

#[tokio::test]
async fn mariadb_capture_contract() {
    let Some(base) = service_url("STRANGLER_TEST_MYSQL_URL") else {
        return;
    };
    let (db, url) = Db::fresh_my(&base).await;
    // MariaDB names a transaction to a trigger only through the binary log's GTIDs.
    let binlog = db.count("SELECT @@log_bin").await == 1;
    capture_contract(&db, &url, binlog).await;
}

/// Introspection reports declared foreign keys (composite, and SQLite's shorthand that names
/// no parent columns) and every index with its uniqueness, on each database.
async fn foreign_keys_and_indexes(db: &Db, url: &str) {
    db.exec("CREATE TABLE customers (id INTEGER NOT NULL PRIMARY KEY, region INTEGER NOT NULL, UNIQUE (region, id))")
        .await;
    db.exec(
        "CREATE TABLE orders (id INTEGER NOT NULL PRIMARY KEY, customer_id INTEGER, region INTEGER, \
         code VARCHAR(20) UNIQUE, placed_at INTEGER, \
         FOREIGN KEY (customer_id) REFERENCES customers (id), \
         FOREIGN KEY (region, customer_id) REFERENCES customers (region, id))",
    )
    .await;
    db.exec("CREATE INDEX orders_placed ON orders (placed_at)")
        .await;
    let mut st = Store::connect(url).await.unwrap();
    let info = st.table_info("orders").await.unwrap().unwrap();
    let mut fks: Vec<(Vec<String>, String, Vec<String>)> = info
        .foreign_keys
        .iter()
        .map(|f| (f.columns.clone(), f.table.clone(), f.references.clone()))
        .collect();
    fks.sort();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        fks,
        vec![
            (s(&["customer_id"]), "customers".to_string(), s(&["id"])),
            (
                s(&["region", "customer_id"]),
                "customers".to_string(),
                s(&["region", "id"])
            ),
        ],
        "{url}"
    );
    let placed = info
        .indexes
        .iter()
        .find(|i| i.name == "orders_placed")
        .expect("the plain index is listed");
    assert_eq!(
        (placed.columns.clone(), placed.unique),
        (s(&["placed_at"]), false)
    );
    assert!(
        info.indexes
            .iter()
            .any(|i| i.unique && i.columns == s(&["code"])),
        "{:?}",
        info.indexes
    );
    assert!(info.unique_keys.contains(&s(&["code"])));
    assert!(info.unique_keys.contains(&s(&["id"])));
    assert!(!info.unique_keys.contains(&s(&["placed_at"])));
    // SQLite's `REFERENCES parent` with no columns means the parent's primary key.
    if url.starts_with("sqlite://") {
        db.exec(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, customer INTEGER REFERENCES customers)",
        )
        .await;
        let notes = st.table_info("notes").await.unwrap().unwrap();
        assert_eq!(notes.foreign_keys[0].references, s(&["id"]));
    }
}

#[tokio::test]
async fn sqlite_reports_foreign_keys_and_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let (db, url) = Db::fresh_sqlite(dir.path(), "fk");
    foreign_keys_and_indexes(&db, &url).await;
}

#[tokio::test]
async fn postgres_reports_foreign_keys_and_indexes() {
    let Some(base) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    let (db, url) = Db::fresh_pg(&base).await;
    foreign_keys_and_indexes(&db, &url).await;
}

#[tokio::test]
async fn mariadb_reports_foreign_keys_and_indexes() {
    let Some(base) = service_url("STRANGLER_TEST_MYSQL_URL") else {
        return;
    };
    let (db, url) = Db::fresh_my(&base).await;
    foreign_keys_and_indexes(&db, &url).await;
}

#[tokio::test]
async fn a_malformed_mysql_url_is_refused_with_its_parse_error_as_source() {
    let err = Store::connect("mysql://root@127.0.0.1:port/db")
        .await
        .err()
        .expect("a URL with a port that is not a number is refused");
    assert!(err.to_string().starts_with("mysql URL:"), "{err}");
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
}

/// The side's gate: a transaction that holds it alone keeps every engine transaction from
/// beginning until it ends, and waits for those already open.
async fn the_gate_holds_engine_transactions_off(url: &str) {
    use std::time::Duration;
    let spec = CaptureSpec {
        table: "pairs".into(),
        key: vec!["a".into(), "b".into()],
    };
    let mut alone = Store::connect(url).await.unwrap();
    alone
        .install(std::slice::from_ref(&spec), false)
        .await
        .unwrap();
    let mut engine = Store::connect(url).await.unwrap();
    alone.begin_alone().await.unwrap();
    let mut begun = Box::pin(engine.begin());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut begun)
            .await
            .is_err(),
        "{url}: an engine transaction began beside the gate's holder"
    );
    alone.finish(true).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut begun)
        .await
        .expect("the engine transaction begins once the holder ends")
        .unwrap();
    drop(begun);
    // And the other way round: the holder waits for an engine transaction already open.
    let mut held = Box::pin(alone.begin_alone());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut held)
            .await
            .is_err(),
        "{url}: the gate was taken beside an open engine transaction"
    );
    engine.finish(true).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut held)
        .await
        .expect("the holder takes the gate once the engine transaction ends")
        .unwrap();
    drop(held);
    alone.finish(true).await.unwrap();
}

#[tokio::test]
async fn sqlite_gate() {
    let dir = tempfile::tempdir().unwrap();
    let (db, url) = Db::fresh_sqlite(dir.path(), "gate");
    db.exec("CREATE TABLE pairs (a INTEGER NOT NULL, b INTEGER NOT NULL, PRIMARY KEY (a, b))")
        .await;
    the_gate_holds_engine_transactions_off(&url).await;
}

#[tokio::test]
async fn postgres_gate() {
    let Some(base) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    let (db, url) = Db::fresh_pg(&base).await;
    db.exec("CREATE TABLE pairs (a INTEGER NOT NULL, b INTEGER NOT NULL, PRIMARY KEY (a, b))")
        .await;
    the_gate_holds_engine_transactions_off(&url).await;
}

#[tokio::test]
async fn mariadb_gate() {
    let Some(base) = service_url("STRANGLER_TEST_MYSQL_URL") else {
        return;
    };
    let (db, url) = Db::fresh_my(&base).await;
    db.exec("CREATE TABLE pairs (a INTEGER NOT NULL, b INTEGER NOT NULL, PRIMARY KEY (a, b))")
        .await;
    the_gate_holds_engine_transactions_off(&url).await;
    // An install that predates the gate row: holding the gate names the fix.
    db.exec("DELETE FROM _strangler_fence WHERE unit = 'strangler:gate'")
        .await;
    let mut st = Store::connect(&url).await.unwrap();
    let err = st.begin_alone().await.unwrap_err().to_string();
    assert!(err.contains("strangler sync install"), "{err}");
}

/// PostgreSQL takes a run of writes that only insert absent rows as one COPY: every value
/// arrives as the statement path (one write at a time) writes it — text with tabs, newlines
/// and backslashes, NULLs, JSON strings and documents, bytes, decimals, date-times — and a
/// present key falls back to the statement, which leaves that row as it was.
#[tokio::test]
async fn postgres_bulk_inserts_match_the_statement_path() {
    let Some(base) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    let (db, url) = Db::fresh_pg(&base).await;
    for t in ["bulk", "single"] {
        db.exec(&format!(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, s text, j jsonb, b bytea, n numeric(12,3), \
             at timestamp, ok boolean, f double precision)"
        ))
        .await;
    }
    // A row already there (written before capture): the bulk run falls back and leaves it.
    db.exec("INSERT INTO bulk (id, s) VALUES (40, 'kept')")
        .await;
    let mut st = Store::connect(&url).await.unwrap();
    st.install(
        &["bulk", "single"].map(|t| CaptureSpec {
            table: t.into(),
            key: vec!["id".into()],
        }),
        false,
    )
    .await
    .unwrap();
    let texts = [
        "a\tb",
        "line\nnext\r",
        "back\\slash",
        "\\N",
        "ünï ✓",
        "",
        "\\x41",
    ];
    let write = |table: &str, id: i64| {
        let s = texts[id as usize % texts.len()];
        let j = if id % 3 == 0 {
            json!({"k": [1, "t\tx"], "n": null})
        } else {
            json!("just a string")
        };
        let rest = obj(json!({
            "s": if id % 11 == 0 { serde_json::Value::Null } else { json!(s) },
            "j": j,
            "b": "\\x00ff5c0a",
            "n": format!("{}.125", id),
            "at": "2026-12-06 13:14:15.123456",
            "ok": id % 2 == 0,
            "f": 0.1 + id as f64,
        }));
        Write::Upsert {
            table: table.into(),
            key: vec!["id".into()],
            row: obj(json!({ "id": id })),
            insert_only: rest,
            bytes: vec!["b".into()],
        }
    };
    let batch = |writes: Vec<Write>| ApplyBatch {
        writes,
        source: "test".into(),
        ..ApplyBatch::default()
    };
    // The same rows as absent rows, values in one column order: the COPY's input.
    let absent = || {
        let mut a = Absent {
            table: "bulk".into(),
            key: vec!["id".into()],
            bytes: vec!["b".into()],
            ..Absent::default()
        };
        for i in 1..=80 {
            let Write::Upsert {
                row, insert_only, ..
            } = write("bulk", i)
            else {
                unreachable!()
            };
            let all: Vec<(String, serde_json::Value)> =
                row.into_iter().chain(insert_only).collect();
            a.columns = all.iter().map(|(c, _)| c.clone()).collect();
            a.rows.push(all.into_iter().map(|(_, v)| v).collect());
        }
        ApplyBatch {
            source: "test".into(),
            absent: Some(a),
            ..ApplyBatch::default()
        }
    };
    assert!(st.apply(&absent()).await.unwrap());
    for i in 1..=80 {
        assert!(st.apply(&batch(vec![write("single", i)])).await.unwrap());
    }
    let rows = |t: &str| {
        format!(
            "SELECT id, s, j::text, encode(b, 'hex'), n::text, at::text, ok::text, f::text FROM {t} ORDER BY id"
        )
    };
    let (bulk, single) = (db.rows(&rows("bulk")).await, db.rows(&rows("single")).await);
    assert_eq!(bulk.len(), 80);
    assert_eq!(bulk[39][1], "kept");
    for (i, (b, s)) in bulk.iter().zip(&single).enumerate() {
        if i != 39 {
            assert_eq!(b, s, "row {}", i + 1);
        }
    }
    // Now with nothing present: the COPY itself took them (no key left to fall back on).
    db.exec("TRUNCATE bulk").await;
    assert!(st.apply(&absent()).await.unwrap());
    assert_eq!(db.rows(&rows("bulk")).await, single);
}
