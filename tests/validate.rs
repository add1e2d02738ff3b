//! The consistency validator on real SQLite, PostgreSQL and MariaDB: thousands of planted
//! discrepancies of every kind, through renamed and transformed columns, each reported with
//! its kind and columns and nothing else; a table where 30 % of rows differ; repair then a
//! clean re-validation; the levels; bad input; the audit chain tampered three ways.

mod sync_support;

use std::collections::{BTreeMap, BTreeSet};

use strangler::validate::command::{Options, run};
use strangler::validate::compare::Kind;
use sync_support::*;

/// Which databases hold the two sides.
#[derive(Debug, Clone, Copy)]
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

fn time_type(kind: Kinds) -> &'static str {
    match kind {
        Kinds::My => "DATETIME(6)",
        _ => "TIMESTAMP",
    }
}

/// The monolith's people and the service's members, mapped with a rename, a lower-case
/// transform and a split.
fn schemas(l: Kinds, r: Kinds) -> (String, String) {
    (
        format!(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, email VARCHAR(200), name VARCHAR(200), \
             price DECIMAL(12,2), born {}, active BOOLEAN, note TEXT)",
            time_type(l)
        ),
        format!(
            "CREATE TABLE members (member_id INTEGER PRIMARY KEY, mail VARCHAR(200), \
             first_name VARCHAR(100), last_name VARCHAR(100), price DECIMAL(12,2), born {}, \
             active BOOLEAN, note TEXT)",
            time_type(r)
        ),
    )
}

fn config(left: &str, right: &str, control: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
[gateway]
control = "sqlite://{}"

[sides.monolith]
database = "{left}"

[sides.members]
database = "{right}"

[[entities]]
name = "people"
monolith = {{ table = "people", key = ["id"] }}
members = {{ table = "members", key = ["member_id"] }}
columns = {{ id = "member_id", email = "mail", price = "price", born = "born", active = "active", note = "note" }}
transforms = [
  {{ split = "name", into = ["first_name", "last_name"], separator = " " }},
  {{ column = "email", op = "lower" }},
]
authority = "monolith"
lag_tolerance = "300ms"
{extra}
"#,
        control.display()
    )
}

fn row(i: i64) -> [String; 7] {
    let secs = i % 86_400;
    [
        i.to_string(),
        format!("'User{i}@Example.COM'"),
        format!("'Given{i} Family{i}'"),
        format!("{}.{:02}", i * 37 % 100_000, i % 100),
        format!(
            "'2026-0{}-1{} {:02}:{:02}:{:02}.{:06}'",
            1 + i % 9,
            i % 10,
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            i * 7 % 1_000_000
        ),
        if i % 3 == 0 { "TRUE" } else { "FALSE" }.into(),
        if i % 11 == 0 {
            "NULL".into()
        } else {
            format!("'note {i} – “quoted” ''x'' é'")
        },
    ]
}

/// Inserts rows `ids` on both sides, the right side in the mapped form.
async fn fill(left: &Db, right: &Db, ids: std::ops::RangeInclusive<i64>) {
    let all: Vec<i64> = ids.collect();
    for chunk in all.chunks(1000) {
        let (mut l, mut r) = (Vec::new(), Vec::new());
        for &i in chunk {
            let v = row(i);
            l.push(format!("({})", v.join(", ")));
            r.push(format!(
                "({}, 'user{i}@example.com', 'Given{i}', 'Family{i}', {}, {}, {}, {})",
                v[0], v[3], v[4], v[5], v[6]
            ));
        }
        left.exec(&format!("INSERT INTO people VALUES {}", l.join(", ")))
            .await;
        right
            .exec(&format!("INSERT INTO members VALUES {}", r.join(", ")))
            .await;
    }
}

/// The column a planted change touches: the right column, the statement's SET, and the
/// name the report gives it.
const CHANGES: &[(&str, &str)] = &[
    ("mail = 'changed@example.com'", "email"),
    ("first_name = 'Other'", "name:first_name"),
    ("last_name = NULL", "name:last_name"),
    ("price = price + 0.01", "price"),
    ("active = NOT active", "active"),
    ("note = 'edited'", "note"),
];

struct Planted {
    kinds: BTreeMap<i64, Kind>,
    columns: BTreeMap<i64, &'static str>,
}

/// Plants `n` discrepancies of each kind at random keys among `1..=rows`.
async fn plant(right: &Db, rows: i64, n: usize, seed: u64, born: &str) -> Planted {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut used = BTreeSet::new();
    let mut pick = |rng: &mut fastrand::Rng| loop {
        let id = rng.i64(1..=rows);
        if used.insert(id) {
            return id;
        }
    };
    let mut p = Planted {
        kinds: BTreeMap::new(),
        columns: BTreeMap::new(),
    };
    let missing: Vec<i64> = (0..n).map(|_| pick(&mut rng)).collect();
    for chunk in missing.chunks(500) {
        let ids: Vec<String> = chunk.iter().map(i64::to_string).collect();
        right
            .exec(&format!(
                "DELETE FROM members WHERE member_id IN ({})",
                ids.join(",")
            ))
            .await;
    }
    p.kinds.extend(missing.iter().map(|&i| (i, Kind::Missing)));
    for k in 0..n as i64 {
        let id = rows + 1 + k * 3;
        right
            .exec(&format!(
                "INSERT INTO members (member_id, mail, first_name) VALUES ({id}, 'extra@x', 'E')"
            ))
            .await;
        p.kinds.insert(id, Kind::Extra);
    }
    let mut by_change: Vec<Vec<String>> = vec![Vec::new(); CHANGES.len() + 1];
    for _ in 0..n {
        let id = pick(&mut rng);
        let c = rng.usize(0..=CHANGES.len());
        by_change[c].push(id.to_string());
        p.kinds.insert(id, Kind::Changed);
        p.columns
            .insert(id, CHANGES.get(c).map_or("born", |(_, name)| *name));
    }
    for (c, ids) in by_change.iter().enumerate() {
        if ids.is_empty() {
            continue;
        }
        let set = CHANGES
            .get(c)
            .map_or(born.to_string(), |(set, _)| set.to_string());
        for chunk in ids.chunks(500) {
            right
                .exec(&format!(
                    "UPDATE members SET {set} WHERE member_id IN ({})",
                    chunk.join(",")
                ))
                .await;
        }
    }
    p
}

/// A second added to the time (the statement differs by database).
fn later(kind: Kinds) -> &'static str {
    match kind {
        Kinds::Sqlite => "born = datetime(born, '+1 second')",
        Kinds::Pg => "born = born + interval '1 second'",
        Kinds::My => "born = born + INTERVAL 1 SECOND",
    }
}

async fn planted_discrepancies_are_reported_exactly(l: Kinds, r: Kinds) {
    let dir = tempfile::tempdir().unwrap();
    let Some((left, lurl)) = fresh(l, dir.path(), "monolith").await else {
        return;
    };
    let Some((right, rurl)) = fresh(r, dir.path(), "members").await else {
        return;
    };
    let (ls, rs) = schemas(l, r);
    left.exec(&ls).await;
    right.exec(&rs).await;
    const ROWS: i64 = 100_000;
    fill(&left, &right, 1..=ROWS).await;
    let planted = plant(&right, ROWS, 1500, 7, later(r)).await;
    let control = dir.path().join("control.db");
    let cfg = parse(&config(&lurl, &rurl, &control, ""));
    let progress = std::sync::Arc::new(strangler::validate::command::RunProgress::default());
    let opts = Options {
        examples: usize::MAX,
        page: 7_777,
        progress: Some(progress.clone()),
        ..Default::default()
    };
    let report = run(&cfg.sync, None, &opts).await.expect("validate");
    // The progress line's figures: every left row read, of the count taken at the start.
    let read = progress.rows.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (
            read,
            progress.total.load(std::sync::atomic::Ordering::Relaxed)
        ),
        (ROWS as u64, ROWS as u64)
    );
    assert_eq!(*progress.entity.lock().unwrap(), "people");
    let e = &report.entities[0];
    assert!(!report.consistent);
    assert_eq!(e.drift, vec![], "{l:?} -> {r:?}");
    assert_eq!(e.rows["monolith"], ROWS as u64);
    assert_eq!(e.rows["members"], ROWS as u64);
    assert_eq!(e.only_in["monolith"], 1500);
    assert_eq!(e.only_in["members"], 1500);
    assert_eq!(e.changed, 1500);
    assert_eq!(e.duplicate_keys.values().sum::<u64>(), 0);
    let mut found: BTreeMap<i64, Kind> = BTreeMap::new();
    for (kind, list) in &e.examples {
        let kind = match kind.as_str() {
            "missing" => Kind::Missing,
            "extra" => Kind::Extra,
            "changed" => Kind::Changed,
            other => panic!("unexpected kind {other}: {list:?}"),
        };
        for ex in list {
            let id = ex.key["id"].as_i64().unwrap();
            assert!(found.insert(id, kind).is_none(), "key {id} reported twice");
            if kind == Kind::Changed {
                let cols: Vec<&String> = ex.columns.keys().collect();
                assert_eq!(
                    cols,
                    vec![planted.columns[&id]],
                    "{l:?} -> {r:?}: key {id}: {:?}",
                    ex.columns
                );
            }
        }
    }
    assert_eq!(found, planted.kinds, "{l:?} -> {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_sqlite_to_sqlite() {
    planted_discrepancies_are_reported_exactly(Kinds::Sqlite, Kinds::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_sqlite_to_postgres() {
    planted_discrepancies_are_reported_exactly(Kinds::Sqlite, Kinds::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_postgres_to_mariadb() {
    planted_discrepancies_are_reported_exactly(Kinds::Pg, Kinds::My).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_mariadb_to_sqlite() {
    planted_discrepancies_are_reported_exactly(Kinds::My, Kinds::Sqlite).await;
}

/// Both sides filled alike with `rows` rows; returns them, the config text and the dir.
async fn pair(
    l: Kinds,
    r: Kinds,
    rows: i64,
    extra: &str,
) -> Option<(Db, Db, String, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let (left, lurl) = fresh(l, dir.path(), "monolith").await?;
    let (right, rurl) = fresh(r, dir.path(), "members").await?;
    let (ls, rs) = schemas(l, r);
    left.exec(&ls).await;
    right.exec(&rs).await;
    fill(&left, &right, 1..=rows).await;
    let text = config(&lurl, &rurl, &dir.path().join("control.db"), extra);
    Some((left, right, text, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_of_rows_differing_then_repair_leaves_both_sides_equal() {
    let Some((left, right, text, _dir)) = pair(Kinds::Pg, Kinds::My, 30_000, "").await else {
        return;
    };
    right
        .exec("UPDATE members SET note = 'drifted' WHERE member_id % 10 < 3")
        .await;
    right
        .exec("DELETE FROM members WHERE member_id % 1000 = 5")
        .await;
    right
        .exec("INSERT INTO members (member_id, mail) VALUES (900001, 'x'), (900002, 'y')")
        .await;
    let cfg = parse(&text);
    let first = run(&cfg.sync, None, &Options::default()).await.unwrap();
    let e = &first.entities[0];
    assert_eq!(e.only_in["monolith"], 30);
    assert_eq!(e.only_in["members"], 2);
    assert_eq!(e.changed, 9_000);
    assert_eq!(e.changed_columns["note"], 9_000);
    assert_eq!(e.examples["changed"].len(), 10);

    // The plan alone writes nothing.
    let opts = Options {
        repair: true,
        dry_run: true,
        ..Default::default()
    };
    let plan = run(&cfg.sync, None, &opts).await.unwrap();
    let r = plan.entities[0].repair.as_ref().unwrap();
    assert_eq!((r.upserts, r.deletes, r.dry_run), (9_030, 2, true));
    assert_eq!(r.actions.len(), 1000);
    assert!(
        r.actions
            .iter()
            .any(|a| a.why == "missing" && a.action == "upsert" && a.to == "members")
    );
    assert_eq!(right.count("SELECT count(*) FROM members").await, 29_972);

    // Repair needs the apply path, which needs capture installed.
    let opts = Options {
        repair: true,
        ..Default::default()
    };
    let err = run(&cfg.sync, None, &opts).await.unwrap_err().to_string();
    assert!(err.contains("capture is not installed"), "{err}");
    strangler::sync::SyncEngine::install(&cfg.sync)
        .await
        .unwrap();
    // A write the application made on the target and the sync engine has not carried yet:
    // the repair leaves that key to the engine.
    right
        .exec("UPDATE members SET note = 'app write' WHERE member_id = 1")
        .await;
    let fixed = run(&cfg.sync, None, &opts).await.unwrap();
    let r = fixed.entities[0].repair.as_ref().unwrap();
    assert_eq!((r.upserts, r.deletes, r.deferred), (9_030, 2, 1));
    assert_eq!(r.still_different, 1);
    assert!(!fixed.consistent);
    // Repaired rows were not captured: nothing to echo back.
    assert_eq!(
        right.count("SELECT count(*) FROM _strangler_changes").await,
        1
    );
    right.exec("DELETE FROM _strangler_changes").await;
    let again = run(&cfg.sync, None, &opts).await.unwrap();
    assert!(again.consistent, "{}", again.text());
    let clean = run(&cfg.sync, None, &Options::default()).await.unwrap();
    assert!(clean.consistent, "{}", clean.text());
    assert_eq!(clean.entities[0].rows["members"], 30_000);
    drop(left);
}

fn simple_config(left: &str, right: &str, control: &std::path::Path, entity: &str) -> String {
    format!(
        r#"
[gateway]
control = "sqlite://{}"

[sides.monolith]
database = "{left}"

[sides.svc]
database = "{right}"

{entity}
"#,
        control.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_keys_are_walked_in_one_order_on_postgres_and_mariadb() {
    let dir = tempfile::tempdir().unwrap();
    let Some((left, lurl)) = fresh(Kinds::Pg, dir.path(), "l").await else {
        return;
    };
    let Some((right, rurl)) = fresh(Kinds::My, dir.path(), "r").await else {
        return;
    };
    // Case, accents, digits and punctuation: collations order these differently; the
    // validator walks both sides in byte order.
    let codes = [
        "B", "a", "é", "Z", "zz", "ä", "10", "9", "-x", "Ω", "b2", "A1", "_u", "~", "f",
    ];
    for db in [&left, &right] {
        db.exec("CREATE TABLE tags (code VARCHAR(40) PRIMARY KEY, n INTEGER)")
            .await;
        let values: Vec<String> = codes
            .iter()
            .enumerate()
            .filter(|(_, c)| !(std::ptr::eq(db, &right) && **c == "ä"))
            .map(|(i, c)| format!("('{c}', {i})"))
            .collect();
        db.exec(&format!("INSERT INTO tags VALUES {}", values.join(", ")))
            .await;
    }
    right.exec("UPDATE tags SET n = 99 WHERE code = 'Ω'").await;
    let entity = r#"[[entities]]
name = "tags"
monolith = { table = "tags", key = ["code"] }
svc = { table = "tags", key = ["code"] }
columns = { code = "code", n = "n" }"#;
    let cfg = parse(&simple_config(
        &lurl,
        &rurl,
        &dir.path().join("c.db"),
        entity,
    ));
    let opts = Options {
        page: 3,
        ..Default::default()
    };
    let report = run(&cfg.sync, None, &opts).await.unwrap();
    let e = &report.entities[0];
    assert_eq!(e.rows["monolith"], 15);
    assert_eq!(e.only_in["monolith"], 1, "{}", report.text());
    assert_eq!(e.only_in["svc"], 0, "{}", report.text());
    assert_eq!(e.changed, 1);
    assert_eq!(e.examples["missing"][0].key["code"], "ä");
    assert_eq!(e.examples["changed"][0].key["code"], "Ω");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_and_rows_the_mapping_cannot_carry() {
    let dir = tempfile::tempdir().unwrap();
    let (left, lurl) = Db::fresh_sqlite(dir.path(), "l");
    let (right, rurl) = Db::fresh_sqlite(dir.path(), "r");
    left.exec("CREATE TABLE src (id INTEGER PRIMARY KEY, code TEXT)")
        .await;
    // The service's key is not enforced: duplicates can exist there.
    right
        .exec("CREATE TABLE dst (id INTEGER, code INTEGER); CREATE INDEX dst_id ON dst (id)")
        .await;
    let lv: Vec<String> = (1..=10)
        .map(|i| {
            format!(
                "({i}, '{}')",
                if i == 5 { "abc".into() } else { i.to_string() }
            )
        })
        .collect();
    left.exec(&format!("INSERT INTO src VALUES {}", lv.join(", ")))
        .await;
    let rv: Vec<String> = (1..=10)
        .chain([3, 3, 7])
        .map(|i| format!("({i}, {i})"))
        .collect();
    right
        .exec(&format!("INSERT INTO dst VALUES {}", rv.join(", ")))
        .await;
    let entity = r#"[[entities]]
name = "codes"
monolith = { table = "src", key = ["id"] }
svc = { table = "dst", key = ["id"] }
columns = { id = "id", code = "code" }
transforms = [{ column = "code", cast = "integer" }]"#;
    let cfg = parse(&simple_config(
        &lurl,
        &rurl,
        &dir.path().join("c.db"),
        entity,
    ));
    let opts = Options {
        page: 3,
        ..Default::default()
    };
    let report = run(&cfg.sync, None, &opts).await.unwrap();
    let e = &report.entities[0];
    assert!(!e.consistent);
    assert_eq!(e.rows["svc"], 13);
    assert_eq!(e.duplicate_keys["svc"], 3, "{}", report.text());
    assert_eq!(e.duplicate_keys["monolith"], 0);
    let dups: Vec<i64> = e.examples["duplicate_key"]
        .iter()
        .map(|x| x.key["id"].as_i64().unwrap())
        .collect();
    assert_eq!(dups, vec![3, 3, 7]);
    assert_eq!(e.invalid["monolith"], 1);
    let bad = &e.examples["invalid"][0];
    assert_eq!(bad.key["id"], 5);
    assert!(
        bad.error
            .as_deref()
            .unwrap()
            .contains("\"abc\" is not an integer")
    );
    // Nothing else: the other rows match through the cast.
    assert_eq!(
        (e.changed, e.only_in["monolith"], e.only_in["svc"]),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_level_reports_only_what_outlives_the_lag_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let (left, lurl) = Db::fresh_sqlite(dir.path(), "l");
    let (right, rurl) = Db::fresh_sqlite(dir.path(), "r");
    for db in [&left, &right] {
        db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .await;
        db.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
            .await;
    }
    right.exec("UPDATE t SET v = 'late' WHERE id = 1").await;
    right.exec("UPDATE t SET v = 'wrong' WHERE id = 2").await;
    let entity = r#"[[entities]]
name = "t"
monolith = { table = "t", key = ["id"] }
svc = { table = "t", key = ["id"] }
columns = { id = "id", v = "v" }
lag_tolerance = "3s"
validate = { level = "eventual" }"#;
    let cfg = parse(&simple_config(
        &lurl,
        &rurl,
        &dir.path().join("c.db"),
        entity,
    ));
    let sync = cfg.sync.clone();
    let task = tokio::spawn(async move { run(&sync, None, &Options::default()).await });
    // The change in flight arrives within the tolerance.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    right.exec("UPDATE t SET v = 'a' WHERE id = 1").await;
    let report = task.await.unwrap().unwrap();
    let e = &report.entities[0];
    assert_eq!(e.level, "eventual");
    assert_eq!(e.rechecked, Some(2));
    assert_eq!(e.changed, 1);
    assert_eq!(e.examples["changed"][0].key["id"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_level_compares_a_share_and_states_its_bound() {
    let Some((_left, right, text, _dir)) = pair(
        Kinds::Sqlite,
        Kinds::Sqlite,
        20_000,
        r#"validate = { level = "sampled", sample = 0.25 }"#,
    )
    .await
    else {
        return;
    };
    right
        .exec("UPDATE members SET note = 'x' WHERE member_id % 50 = 0")
        .await;
    let cfg = parse(&text);
    let opts = Options {
        seed: Some(42),
        ..Default::default()
    };
    let a = run(&cfg.sync, None, &opts).await.unwrap();
    let b = run(&cfg.sync, None, &opts).await.unwrap();
    let (ea, eb) = (&a.entities[0], &b.entities[0]);
    let s = ea.sample.as_ref().unwrap();
    assert_eq!(ea.level, "sampled");
    assert!((4_000..6_000).contains(&s.compared), "{s:?}");
    assert!((50..150).contains(&s.differing), "{s:?}");
    assert_eq!(s.differing, ea.changed);
    let rate = s.differing as f64 / s.compared as f64;
    assert!(
        s.upper_bound_95 > rate && s.upper_bound_95 < rate * 2.0,
        "{s:?}"
    );
    // Same seed, same keys.
    assert_eq!(eb.sample.as_ref().unwrap().compared, s.compared);
    assert_eq!(eb.changed, ea.changed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_entity_side_and_column_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (left, lurl) = Db::fresh_sqlite(dir.path(), "l");
    let (right, rurl) = Db::fresh_sqlite(dir.path(), "r");
    left.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, d REAL)")
        .await;
    right
        .exec("CREATE TABLE t (id INTEGER PRIMARY KEY, w TEXT, d REAL)")
        .await;
    let control_path = dir.path().join("c.db");
    let control =
        strangler::control::ControlStore::open(&format!("sqlite://{}", control_path.display()))
            .await
            .unwrap();
    let attempt = |entity: &str, right: &str| {
        let text = simple_config(&lurl, right, &control_path, entity);
        let cfg = parse(&text);
        let control = &control;
        async move {
            run(&cfg.sync, Some(control), &Options::default())
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let entity = |cols: &str, key: &str| {
        format!(
            "[[entities]]\nname = \"t\"\nmonolith = {{ table = \"t\", key = [\"{key}\"] }}\nsvc = {{ table = \"t\", key = [\"{key}\"] }}\ncolumns = {{ {cols} }}"
        )
    };
    let err = attempt(&entity("id = \"id\", v = \"v\"", "id"), &rurl).await;
    assert!(
        err.contains("entity \"t\"") && err.contains("side \"svc\"") && err.contains("\"v\""),
        "{err}"
    );
    let err = attempt(
        &entity("id = \"id\", v = \"w\"", "id")
            .replace("table = \"t\", key", "table = \"gone\", key"),
        &rurl,
    )
    .await;
    assert!(err.contains("table \"gone\" does not exist"), "{err}");
    let err = attempt(&entity("id = \"id\", d = \"d\"", "d"), &rurl).await;
    assert!(err.contains("key column \"d\""), "{err}");
    let err = attempt(
        &entity("id = \"id\", v = \"w\"", "id"),
        "postgres://postgres@127.0.0.1:1/none",
    )
    .await;
    assert!(err.contains("side \"svc\""), "{err}");
    let text = simple_config(
        &lurl,
        &rurl,
        &control_path,
        &entity("id = \"id\", v = \"w\"", "id"),
    );
    let cfg = parse(&text);
    let opts = Options {
        entity: Some("nope".into()),
        ..Default::default()
    };
    let err = run(&cfg.sync, Some(&control), &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"nope\" is not in the config (entities: t)"),
        "{err}"
    );
    // Nothing was recorded for the runs that failed.
    assert!(control.audit(0, 10).await.unwrap().is_empty());
    drop(right);
}

/// Runs two validations recording to `control`; returns the records.
async fn recorded(
    control: &strangler::control::ControlStore,
    text: &str,
) -> Vec<strangler::control::AuditRecord> {
    let cfg = parse(text);
    for _ in 0..2 {
        run(&cfg.sync, Some(control), &Options::default())
            .await
            .unwrap();
    }
    strangler::validate::audit::records(control).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_shows_a_changed_byte_a_removed_record_and_a_swap() {
    use strangler::validate::audit::{Break, verify};
    let Some((_left, right, text, dir)) = pair(Kinds::Sqlite, Kinds::Sqlite, 2_000, "").await
    else {
        return;
    };
    right
        .exec("DELETE FROM members WHERE member_id % 100 = 1")
        .await;
    let path = dir.path().join("control.db");
    let control = strangler::control::ControlStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let records = recorded(&control, &text).await;
    // A validation record and a discrepancy record per run.
    assert_eq!(records.len(), 4);
    assert_eq!(records[0].kind, "validation");
    assert_eq!(records[1].kind, "discrepancy");
    assert!(records[1].body.contains("\"kind\":\"missing\""));
    let v = verify(&records, None);
    assert_eq!(v.broken, None);
    let head = v.head.clone().unwrap();
    assert_eq!(head.0, 4);

    let db = rusqlite::Connection::open(&path).unwrap();
    let reread = || async { strangler::validate::audit::records(&control).await.unwrap() };
    // One byte of one record.
    db.execute(
        "UPDATE strangler_audit SET body = replace(body, '\"consistent\":false', '\"consistent\":true ') WHERE seq = 3",
        [],
    )
    .unwrap();
    assert_eq!(
        verify(&reread().await, None).broken,
        Some(Break::Altered { seq: 3 })
    );
    db.execute(
        "UPDATE strangler_audit SET body = ?1 WHERE seq = 3",
        [&records[2].body],
    )
    .unwrap();
    assert_eq!(verify(&reread().await, None).broken, None);
    // Two records swapped.
    for (to, from) in [(2, &records[2]), (3, &records[1])] {
        db.execute(
            "UPDATE strangler_audit SET at_ms = ?1, kind = ?2, entity = ?3, body = ?4, prev = ?5, hash = ?6 WHERE seq = ?7",
            rusqlite::params![from.at_ms, from.kind, from.entity, from.body, from.prev, from.hash, to],
        )
        .unwrap();
    }
    assert_eq!(
        verify(&reread().await, None).broken,
        Some(Break::Reordered { seq: 2, belongs: 3 })
    );
    // One record removed (the swap undone first).
    for (to, from) in [(2, &records[1]), (3, &records[2])] {
        db.execute(
            "UPDATE strangler_audit SET at_ms = ?1, kind = ?2, entity = ?3, body = ?4, prev = ?5, hash = ?6 WHERE seq = ?7",
            rusqlite::params![from.at_ms, from.kind, from.entity, from.body, from.prev, from.hash, to],
        )
        .unwrap();
    }
    assert_eq!(verify(&reread().await, None).broken, None);
    db.execute("DELETE FROM strangler_audit WHERE seq = 2", [])
        .unwrap();
    assert_eq!(
        verify(&reread().await, None).broken,
        Some(Break::Removed { from: 2, to: 2 })
    );
    // The last record cut: only the anchor kept elsewhere shows it.
    let mut cut = records.clone();
    cut.pop();
    assert_eq!(verify(&cut, None).broken, None);
    assert_eq!(
        verify(&cut, Some((head.0, &head.1))).broken,
        Some(Break::Anchor {
            seq: 4,
            found: None
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_chains_across_appenders_in_a_postgres_control_database() {
    let Some(base) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    let (_db, url) = Db::fresh_pg(&base).await;
    let a = strangler::control::ControlStore::open(&url).await.unwrap();
    let b = strangler::control::ControlStore::open(&url).await.unwrap();
    let entry = |n: usize| strangler::control::AuditEntry {
        kind: "validation".into(),
        entity: "e".into(),
        body: format!("{{\"n\":{n}}}"),
    };
    let tasks: Vec<_> = [a, b]
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            tokio::spawn(async move {
                for n in 0..20 {
                    c.append_audit(vec![entry(i * 100 + n), entry(i * 100 + n + 50)])
                        .await
                        .unwrap();
                }
                c
            })
        })
        .collect();
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.unwrap());
    }
    let records = strangler::validate::audit::records(&stores[0])
        .await
        .unwrap();
    assert_eq!(records.len(), 80);
    let v = strangler::validate::audit::verify(&records, None);
    assert_eq!(v.broken, None);
}

/// Type modifiers are read from PostgreSQL's catalog, so a length, a scale or a time
/// precision that differs between mapped columns is reported as drift, once per column.
#[tokio::test]
async fn modifier_drift_is_reported_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some((left, lurl)) = fresh(Kinds::Pg, dir.path(), "monolith").await else {
        return;
    };
    let Some((right, rurl)) = fresh(Kinds::Pg, dir.path(), "members").await else {
        return;
    };
    left.exec(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, email VARCHAR(200), name VARCHAR(200), \
         price NUMERIC(12,2), born TIMESTAMP(3), active BOOLEAN, note TEXT)",
    )
    .await;
    right
        .exec(
            "CREATE TABLE members (member_id INTEGER PRIMARY KEY, mail VARCHAR(80), \
             first_name VARCHAR(100), last_name VARCHAR(100), price NUMERIC(12,4), \
             born TIMESTAMP(6), active BOOLEAN, note TEXT)",
        )
        .await;
    fill(&left, &right, 1..=50).await;
    let control = dir.path().join("control.db");
    let cfg = parse(&config(&lurl, &rurl, &control, ""));
    let report = run(&cfg.sync, None, &Options::default())
        .await
        .expect("validate");
    let mut drift: Vec<(String, String, String, String)> = report.entities[0]
        .drift
        .iter()
        .map(|d| {
            (
                d.column.clone(),
                d.left.clone(),
                d.right.clone(),
                d.why.clone(),
            )
        })
        .collect();
    drift.sort();
    let want = |c: &str, l: &str, r: &str, why: &str| {
        (c.to_string(), l.to_string(), r.to_string(), why.to_string())
    };
    assert_eq!(
        drift,
        vec![
            want(
                "born",
                "timestamp(3) without time zone",
                "timestamp(6) without time zone",
                "precision"
            ),
            want(
                "email",
                "character varying(200)",
                "character varying(80)",
                "length"
            ),
            want("price", "numeric(12,2)", "numeric(12,4)", "scale"),
        ]
    );
}
