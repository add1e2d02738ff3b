//! The store backends on their own, against every database: composite keys whose order differs
//! from the table's index, locks, deletes, and the checkpoint (record, look up, prune, unapply).

mod sync_support;

use std::collections::HashSet;

use serde_json::json;
use strangler::store::{ApplyBatch, CaptureSpec, Row, Store, Write};
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
