//! Segment checksums in SQL on real SQLite, PostgreSQL and MariaDB: every planted discrepancy
//! found, with its kind and columns and nothing else, while only the differing keys are read
//! in full; a consistent table settled without reading a row; a representation that differs
//! but means the same (a trailing space under `trim_trailing`) not reported; many differing
//! rows handed to the full merge; keys a checksum cannot cut handed over too.

mod sync_support;

use std::collections::{BTreeMap, BTreeSet};

use strangler::validate::command::{Options, run};
use sync_support::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kinds {
    Sqlite,
    Pg,
    My,
}

async fn fresh(kind: Kinds, dir: &std::path::Path, name: &str) -> Option<(Db, String)> {
    Some(match kind {
        Kinds::Sqlite => Db::fresh_sqlite(dir, name),
        Kinds::Pg => Db::fresh_pg(&service_url("STRANGLER_TEST_POSTGRES_URL")?).await,
        Kinds::My => Db::fresh_my(&service_url("STRANGLER_TEST_MYSQL_URL")?).await,
    })
}

fn config(left: &str, right: &str, dir: &std::path::Path, key: &str) -> String {
    format!(
        r#"
[gateway]
control = "sqlite://{}"

[sides.monolith]
database = "{left}"

[sides.ledger]
database = "{right}"

[[entities]]
name = "accounts"
monolith = {{ table = "accounts", key = ["{key}"] }}
ledger = {{ table = "book", key = ["account_id"] }}
columns = {{ {key} = "account_id", owner = "holder", qty = "units", note = "memo" }}
authority = "monolith"
validate = {{ text = {{ owner = "trim_trailing" }} }}
"#,
        dir.join("control.db").display()
    )
}

/// Key of row `i`: spread out, with gaps, and one far away so that the first cut leaves
/// nearly every row in one segment and bisection must cut again.
fn key(i: i64, rows: i64) -> i64 {
    if i == rows { 9_000_000_000_000 } else { i * 3 }
}

async fn pair(
    l: Kinds,
    r: Kinds,
    rows: i64,
    key_type: &str,
) -> Option<(Db, Db, String, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let (left, lurl) = fresh(l, dir.path(), "monolith").await?;
    let (right, rurl) = fresh(r, dir.path(), "ledger").await?;
    left.exec(&format!(
        "CREATE TABLE accounts (id {key_type} PRIMARY KEY, owner VARCHAR(100), qty BIGINT, note TEXT)"
    ))
    .await;
    right
        .exec("CREATE TABLE book (account_id BIGINT PRIMARY KEY, holder VARCHAR(100), units BIGINT, memo TEXT)")
        .await;
    let all: Vec<i64> = (1..=rows).collect();
    for chunk in all.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|&i| {
                let note = match i % 7 {
                    0 => "NULL".to_string(),
                    1 => "''".to_string(),
                    _ => format!("'n{i} – é ''q'''"),
                };
                format!(
                    "({}, 'owner {i}', {}, {note})",
                    key(i, rows),
                    i * 11 - 500_000
                )
            })
            .collect();
        let v = values.join(", ");
        left.exec(&format!("INSERT INTO accounts VALUES {v}")).await;
        right.exec(&format!("INSERT INTO book VALUES {v}")).await;
    }
    let text = config(&lurl, &rurl, dir.path(), "id");
    Some((left, right, text, dir))
}

/// What a change does on the right, and the column the report names.
const CHANGES: &[(&str, &str)] = &[
    ("holder = 'someone else'", "owner"),
    ("units = units + 1", "qty"),
    ("memo = NULL", "note"),
    ("memo = ''", "note"),
    ("memo = 'x'", "note"),
];

async fn planted_are_found_by_checksum(l: Kinds, r: Kinds) {
    const ROWS: i64 = 100_000;
    let Some((left, right, text, _dir)) = pair(l, r, ROWS, "BIGINT").await else {
        return;
    };
    let cfg = parse(&text);
    // Nothing differs: settled by the checksums alone.
    let clean = run(&cfg.sync, None, &Options::default()).await.unwrap();
    let e = &clean.entities[0];
    assert!(clean.consistent, "{l:?} -> {r:?}: {}", clean.text());
    assert_eq!(e.method.by, "checksum", "{l:?} -> {r:?}");
    assert_eq!(e.method.rows_compared, 0);
    assert_eq!(e.method.hashes_compared, 0);
    assert_eq!(e.rows["monolith"], ROWS as u64);
    assert_eq!(e.rows["ledger"], ROWS as u64);

    let mut rng = fastrand::Rng::with_seed(11);
    let mut used = BTreeSet::new();
    let mut pick = |rng: &mut fastrand::Rng| loop {
        let i = rng.i64(1..ROWS);
        if i % 7 > 1 && used.insert(i) {
            return key(i, ROWS);
        }
    };
    let mut want: BTreeMap<i64, (&str, Option<&str>)> = BTreeMap::new();
    // A few differences: bisection narrows to the segments that hold them, past the first
    // cut where the far key leaves every other row in one segment.
    let few = [pick(&mut rng), pick(&mut rng)];
    for k in few {
        right
            .exec(&format!(
                "UPDATE book SET units = units - 1 WHERE account_id = {k}"
            ))
            .await;
        want.insert(k, ("changed", Some("qty")));
    }
    right
        .exec("UPDATE book SET units = 0 WHERE account_id = 9000000000000")
        .await;
    want.insert(9_000_000_000_000, ("changed", Some("qty")));
    let report = run(&cfg.sync, None, &Options::default()).await.unwrap();
    let e = &report.entities[0];
    assert_eq!(e.changed, 3, "{l:?} -> {r:?}");
    assert_eq!(e.method.rows_compared, 3);
    assert!(
        e.method.hashes_compared < 5_000,
        "{l:?} -> {r:?}: {:?}",
        e.method
    );
    for _ in 0..300 {
        let k = pick(&mut rng);
        right
            .exec(&format!("DELETE FROM book WHERE account_id = {k}"))
            .await;
        want.insert(k, ("missing", None));
    }
    for n in 0..300 {
        let k = 3 * n + 1;
        right
            .exec(&format!("INSERT INTO book VALUES ({k}, 'extra', 1, 'e')"))
            .await;
        want.insert(k, ("extra", None));
    }
    for n in 0..600 {
        let k = pick(&mut rng);
        let (set, col) = CHANGES[n % CHANGES.len()];
        right
            .exec(&format!("UPDATE book SET {set} WHERE account_id = {k}"))
            .await;
        want.insert(k, ("changed", Some(col)));
    }
    // A trailing space the owner column's rule ignores: the hashes differ, the values do not.
    let same = pick(&mut rng);
    right
        .exec(&format!(
            "UPDATE book SET holder = CONCAT(holder, ' ') WHERE account_id = {same}"
        ))
        .await;

    let opts = Options {
        examples: usize::MAX,
        ..Default::default()
    };
    let report = run(&cfg.sync, None, &opts).await.unwrap();
    let e = &report.entities[0];
    assert!(!report.consistent);
    assert_eq!(e.method.by, "checksum", "{l:?} -> {r:?}");
    assert_eq!(e.rows["monolith"], ROWS as u64);
    assert_eq!(e.rows["ledger"], ROWS as u64);
    assert_eq!(e.only_in["monolith"], 300);
    assert_eq!(e.only_in["ledger"], 300);
    assert_eq!(e.changed, 603);
    // Only the keys whose hashes differ were read in full.
    assert_eq!(e.method.rows_compared, 1204, "{l:?} -> {r:?}");
    assert!(e.method.hashes_compared < ROWS as u64, "{:?}", e.method);
    let mut found: BTreeMap<i64, (&str, Option<&str>)> = BTreeMap::new();
    for (kind, list) in &e.examples {
        for ex in list {
            let id = ex.key["id"].as_i64().unwrap();
            let col = (kind == "changed").then(|| {
                let cols: Vec<&String> = ex.columns.keys().collect();
                assert_eq!(cols.len(), 1, "{id}: {:?}", ex.columns);
                CHANGES
                    .iter()
                    .map(|(_, c)| *c)
                    .find(|c| *c == cols[0])
                    .unwrap_or("qty")
            });
            assert!(
                found.insert(id, (kind.as_str(), col)).is_none(),
                "{id} twice"
            );
        }
    }
    assert_eq!(found, want, "{l:?} -> {r:?}");
    drop(left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_sqlite_to_sqlite() {
    planted_are_found_by_checksum(Kinds::Sqlite, Kinds::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_sqlite_to_postgres() {
    planted_are_found_by_checksum(Kinds::Sqlite, Kinds::Pg).await;
}

/// Both sides PostgreSQL: PostgreSQL's own row hash instead of MD5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_postgres_to_postgres() {
    planted_are_found_by_checksum(Kinds::Pg, Kinds::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_postgres_to_mariadb() {
    planted_are_found_by_checksum(Kinds::Pg, Kinds::My).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_mariadb_to_sqlite() {
    planted_are_found_by_checksum(Kinds::My, Kinds::Sqlite).await;
}

/// PostgreSQL's own row hash is taken over the value's bytes, not under the column's
/// collation (the hashed text is cast to `text` and put in the "C" collation): a value that
/// differs only in case, in a column whose collation ignores case, is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_insensitive_collation_does_not_hide_a_change_on_postgres() {
    let Some((_left, right, text, _dir)) = pair(Kinds::Pg, Kinds::Pg, 1_000, "BIGINT").await else {
        return;
    };
    right
        .exec("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
        .await;
    right
        .exec("ALTER TABLE book ALTER COLUMN memo TYPE TEXT COLLATE ci")
        .await;
    right
        .exec("UPDATE book SET memo = upper(memo) WHERE account_id = 15")
        .await;
    let report = run(&parse(&text).sync, None, &Options::default())
        .await
        .unwrap();
    let e = &report.entities[0];
    assert_eq!(e.method.by, "checksum", "{}", report.text());
    assert_eq!(e.changed, 1, "{}", report.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_differing_rows_go_to_the_full_merge() {
    let Some((_left, right, text, _dir)) = pair(Kinds::Pg, Kinds::Pg, 20_000, "BIGINT").await
    else {
        return;
    };
    right
        .exec("UPDATE book SET units = units + 1 WHERE account_id % 5 < 2")
        .await;
    let report = run(&parse(&text).sync, None, &Options::default())
        .await
        .unwrap();
    let e = &report.entities[0];
    assert_eq!(e.method.by, "merge");
    assert_eq!(
        e.method.fallback.as_deref(),
        Some("more than a quarter of the streamed rows differ")
    );
    // Keys are 3i: those with 3i % 5 < 2 are two in five.
    assert_eq!(e.changed, 8_000);
    assert_eq!(e.changed_columns["qty"], 8_000);
    assert_eq!(e.rows["ledger"], 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_are_not_integers_go_to_the_full_merge() {
    // `INT PRIMARY KEY` (not `INTEGER`) is no rowid: SQLite keeps a text key as text.
    let Some((left, _right, text, _dir)) = pair(Kinds::Sqlite, Kinds::Sqlite, 1_000, "INT").await
    else {
        return;
    };
    left.exec("INSERT INTO accounts VALUES ('abc', 'o', 1, 'n')")
        .await;
    let report = run(&parse(&text).sync, None, &Options::default())
        .await
        .unwrap();
    let e = &report.entities[0];
    assert_eq!(e.method.by, "merge");
    assert_eq!(
        e.method.fallback.as_deref(),
        Some("keys that are not 64-bit integers, or too far apart for 64-bit arithmetic")
    );
    assert_eq!(e.only_in["monolith"], 1);
    assert_eq!(e.rows["monolith"], 1_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booleans_and_date_times_compare_by_checksum_between_postgres_and_mariadb() {
    let dir = tempfile::tempdir().unwrap();
    let Some((left, lurl)) = fresh(Kinds::Pg, dir.path(), "l").await else {
        return;
    };
    let Some((right, rurl)) = fresh(Kinds::My, dir.path(), "r").await else {
        return;
    };
    left.exec(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, ok BOOLEAN, at TIMESTAMP(6), seen TIMESTAMPTZ)",
    )
    .await;
    right
        .exec("CREATE TABLE t (id BIGINT PRIMARY KEY, ok TINYINT(1), at DATETIME(6), seen DATETIME(6))")
        .await;
    left.exec(
        "INSERT INTO t SELECT g, g % 2 = 0, timestamp '2026-01-01' + g * interval '1.5 second', \
         timestamptz '2026-01-01 00:00:00+02' + g * interval '1 second' FROM generate_series(1, 20000) g",
    )
    .await;
    right
        .exec(
            "INSERT INTO t SELECT seq, seq % 2 = 0, TIMESTAMP'2026-01-01 00:00:00' + INTERVAL seq * 1500000 MICROSECOND, \
             TIMESTAMP'2025-12-31 22:00:00' + INTERVAL seq SECOND FROM seq_1_to_20000",
        )
        .await;
    let text = format!(
        r#"
[gateway]
control = "sqlite://{}"
[sides.monolith]
database = "{lurl}"
[sides.svc]
database = "{rurl}"
[[entities]]
name = "t"
monolith = {{ table = "t", key = ["id"] }}
svc = {{ table = "t", key = ["id"] }}
columns = {{ id = "id", ok = "ok", at = "at", seen = "seen" }}
authority = "monolith"
"#,
        dir.path().join("control.db").display()
    );
    let cfg = parse(&text);
    let clean = run(&cfg.sync, None, &Options::default()).await.unwrap();
    let e = &clean.entities[0];
    assert!(clean.consistent, "{}", clean.text());
    assert_eq!(e.method.by, "checksum");
    assert_eq!(e.method.rows_compared, 0);

    right.exec("UPDATE t SET ok = 1 - ok WHERE id = 10").await;
    right
        .exec("UPDATE t SET at = at + INTERVAL 1 MICROSECOND WHERE id = 20")
        .await;
    right.exec("UPDATE t SET seen = NULL WHERE id = 30").await;
    // PostgreSQL's infinity is no NULL.
    left.exec("UPDATE t SET at = 'infinity' WHERE id = 40")
        .await;
    right.exec("UPDATE t SET at = NULL WHERE id = 40").await;
    let opts = Options {
        examples: 100,
        ..Default::default()
    };
    let report = run(&cfg.sync, None, &opts).await.unwrap();
    let e = &report.entities[0];
    assert_eq!(e.method.by, "checksum");
    let changed: BTreeMap<i64, Vec<String>> = e.examples["changed"]
        .iter()
        .map(|ex| {
            (
                ex.key["id"].as_i64().unwrap(),
                ex.columns.keys().cloned().collect(),
            )
        })
        .collect();
    let want: BTreeMap<i64, Vec<String>> = [
        (10, vec!["ok".to_string()]),
        (20, vec!["at".into()]),
        (30, vec!["seen".into()]),
        (40, vec!["at".into()]),
    ]
    .into();
    assert_eq!(changed, want);
    assert_eq!(e.changed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_too_far_apart_for_64_bit_arithmetic_go_to_the_full_merge() {
    let Some((left, right, text, _dir)) = pair(Kinds::Sqlite, Kinds::Sqlite, 100, "BIGINT").await
    else {
        return;
    };
    // In SQLite the segment arithmetic would overflow into floating point.
    left.exec("INSERT INTO accounts VALUES (-9223372036854775807, 'low', 1, NULL)")
        .await;
    right
        .exec("INSERT INTO book VALUES (-9223372036854775807, 'low', 2, NULL)")
        .await;
    let report = run(&parse(&text).sync, None, &Options::default())
        .await
        .unwrap();
    let e = &report.entities[0];
    assert_eq!(e.method.by, "merge");
    assert_eq!(e.changed, 1);
    assert_eq!(e.changed_columns["qty"], 1);
    assert_eq!(e.rows["ledger"], 101);
}
