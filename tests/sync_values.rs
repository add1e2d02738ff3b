//! Values in transit: whatever SQLite library the application links, capture never fails its
//! write, and every value — doubles of every range, integers beyond 2^53, Unicode text,
//! bytes — arrives bit-identical on SQLite, PostgreSQL and MariaDB.

mod sync_support;

use std::process::Command;

use mysql_async::prelude::Queryable;
use sync_support::*;

/// A row as MariaDB returns it.
type MyRow = (
    i64,
    Option<f64>,
    Option<Vec<u8>>,
    Option<String>,
    Option<i64>,
);

/// One row as the test compares it: id, the double's bits, bytes, text, big integer.
type Vals = (
    i64,
    Option<u64>,
    Option<Vec<u8>>,
    Option<String>,
    Option<i64>,
);

/// Doubles that lost digits or failed on SQLite 3.40's `json_object`, and random ones.
fn doubles(n: usize) -> Vec<f64> {
    let mut out = vec![
        79.67035288841524,
        0.1 + 0.2,
        f64::MAX,
        -f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        1e-310,
        1.0 / 3.0,
        1e22,
        123456789.12345679,
        100.0,
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    while out.len() < n {
        let x = f64::from_bits(rng.u64(..));
        if x.is_finite() && x != 0.0 {
            out.push(x);
        }
    }
    out
}

fn rows(n: usize, first_id: i64) -> Vec<Vals> {
    let mut rng = fastrand::Rng::with_seed(first_id as u64);
    doubles(n)
        .into_iter()
        .enumerate()
        .map(|(i, x)| {
            let bytes: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect();
            let text: String = (0..rng.usize(0..20))
                .map(|_| match rng.u8(0..4) {
                    0 => rng.char('a'..='z'),
                    1 => rng.char('\u{e0}'..='\u{ff}'),
                    2 => rng.char('\u{2600}'..='\u{26ff}'),
                    _ => ['"', '\\', '\n', '\'', '\t', '\u{1F600}'][rng.usize(0..6)],
                })
                .collect();
            let big = [i64::MAX, i64::MIN, (1 << 53) + 1, -(1 << 60) - 3][i % 4];
            (
                first_id + i as i64,
                Some(x.to_bits()),
                Some(bytes),
                Some(text),
                Some(big),
            )
        })
        .collect()
}

/// Writes rows through a SQLite library: Python's `sqlite3` module (the system's 3.40).
fn write_with_python(path: &std::path::Path, rows: &[Vals]) {
    let data: Vec<serde_json::Value> = rows
        .iter()
        .map(|(id, r, b, t, big)| {
            serde_json::json!([
                id,
                r.map(|x| f64::from_bits(x).to_string()),
                b.as_ref()
                    .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
                t,
                big
            ])
        })
        .collect();
    let script = r#"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
rows = json.loads(sys.stdin.read())
c.executemany("INSERT INTO vals (id, r, b, t, big, extra) VALUES (?, ?, ?, ?, ?, x'00ff')",
    [(i, float(r), bytes.fromhex(b), t, big) for i, r, b, t, big in rows])
c.commit()
"#;
    run_python(script, path, &data);
}

/// Writes one row through the system's `sqlite3` shell; returns its error text, if any.
fn write_with_shell(path: &std::path::Path, sql: &str) -> Result<(), String> {
    let out = Command::new("sqlite3")
        .arg(path)
        .arg(sql)
        .output()
        .map_err(|e| format!("sqlite3 shell: {e}"))?;
    if out.status.success() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn sqlite_vals(path: &std::path::Path) -> Vec<Vals> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT id, r, b, t, big FROM vals ORDER BY id")
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get::<_, Option<f64>>(1)?.map(f64::to_bits),
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

async fn pg_vals(url: &str) -> Vec<Vals> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.query("SELECT id, r, b, t, big FROM vals ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get::<_, Option<f64>>(1).map(f64::to_bits),
                r.get(2),
                r.get(3),
                r.get(4),
            )
        })
        .collect()
}

async fn my_vals(url: &str) -> Vec<Vals> {
    let pool = mysql_async::Pool::new(url);
    let mut c = pool.get_conn().await.unwrap();
    let rows: Vec<MyRow> = c
        .query("SELECT id, r, b, t, big FROM vals ORDER BY id")
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, r, b, t, big)| (id, r.map(f64::to_bits), b, t, big))
        .collect()
}

const SQLITE_VALS: &str =
    "CREATE TABLE vals (id INTEGER PRIMARY KEY, r REAL, b BLOB, t TEXT, big INTEGER, extra BLOB);";

fn config(left: &str, right: &str, control: &std::path::Path) -> String {
    format!(
        r#"
[gateway]
control = "sqlite://{control}"
[sync]
poll = "20ms"
[sides.monolith]
database = "{left}"
[sides.service]
database = "{right}"
[[entities]]
name = "vals"
monolith = {{ table = "vals", key = ["id"] }}
service = {{ table = "vals", key = ["id"] }}
columns = {{ id = "id", r = "r", b = "b", t = "t", big = "big" }}
"#,
        control = control.display()
    )
}

/// The service's database kind.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Sqlite,
    Postgres,
    Mariadb,
}

/// The service side under test, and how to read it back.
enum Service {
    Sqlite(std::path::PathBuf),
    Pg(String),
    My(String),
}

impl Service {
    async fn vals(&self) -> Vec<Vals> {
        match self {
            Service::Sqlite(p) => sqlite_vals(p),
            Service::Pg(u) => pg_vals(u).await,
            Service::My(u) => my_vals(u).await,
        }
    }
}

/// A SQLite monolith written by Python, the sqlite3 shell and our own library; a service
/// of `kind`; values compared bit for bit both ways.
async fn values_arrive_exactly(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (mono, mono_url) = Db::fresh_sqlite(dir.path(), "monolith");
    mono.exec(SQLITE_VALS).await;
    let Db::Sqlite(mono_path) = &mono else {
        unreachable!()
    };
    let (service, url, svc) = match kind {
        Kind::Sqlite => {
            let (db, url) = Db::fresh_sqlite(dir.path(), "service");
            db.exec(
                "CREATE TABLE vals (id INTEGER PRIMARY KEY, r REAL, b BLOB, t TEXT, big INTEGER);",
            )
            .await;
            let Db::Sqlite(p) = &db else { unreachable!() };
            let p = p.clone();
            (db, url, Service::Sqlite(p))
        }
        Kind::Postgres => {
            let Some(base) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
                return;
            };
            let (db, url) = Db::fresh_pg(&base).await;
            db.exec("CREATE TABLE vals (id BIGINT PRIMARY KEY, r DOUBLE PRECISION, b BYTEA, t TEXT, big BIGINT);")
                .await;
            (db, url.clone(), Service::Pg(url))
        }
        Kind::Mariadb => {
            let Some(base) = service_url("STRANGLER_TEST_MYSQL_URL") else {
                return;
            };
            let (db, url) = Db::fresh_my(&base).await;
            db.exec("CREATE TABLE vals (id BIGINT PRIMARY KEY, r DOUBLE, b BLOB, t TEXT, big BIGINT) CHARACTER SET utf8mb4;")
                .await;
            (db, url.clone(), Service::My(url))
        }
    };
    let eng = start(&config(&mono_url, &url, &dir.path().join("control.db"))).await;

    // The system's sqlite3 shell (3.40) writes a BLOB, an unmapped BLOB and the double that
    // json_object() cut to 15 digits: the write must succeed.
    write_with_shell(
        mono_path,
        "INSERT INTO vals VALUES (1, 79.67035288841524, x'00ff', 'shell', 9007199254740993, x'00');",
    )
    .expect("the application's write with BLOBs succeeds after capture is installed");
    let mut want = vec![(
        1i64,
        Some(79.67035288841524f64.to_bits()),
        Some(vec![0u8, 0xff]),
        Some("shell".to_string()),
        Some(9007199254740993i64),
    )];
    // Python's sqlite3 module (the system's library) writes 300 random rows.
    let py = rows(300, 100);
    write_with_python(mono_path, &py);
    want.extend(py);
    // Our own library writes 100 more.
    let ours = rows(100, 1000);
    {
        let c = rusqlite::Connection::open(mono_path).unwrap();
        for (id, r, b, t, big) in &ours {
            c.execute(
                "INSERT INTO vals (id, r, b, t, big) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![id, r.map(f64::from_bits), b, t, big],
            )
            .unwrap();
        }
    }
    want.extend(ours);
    assert_eq!(
        sqlite_vals(mono_path),
        want,
        "the monolith holds what was written"
    );
    let arrived = eventually(20, || async { svc.vals().await.len() == want.len() }).await;
    assert!(arrived, "{kind:?}: rows did not all arrive");
    let got = svc.vals().await;
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g, "{kind:?}: row {} differs", w.0);
    }

    // And back: the service's own writes arrive bit-identical on the SQLite monolith.
    let back = rows(50, 5000);
    for (id, r, b, t, big) in &back {
        let r = f64::from_bits(r.unwrap());
        let hex: String = b
            .as_ref()
            .unwrap()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        let t = t.as_ref().unwrap().replace('\'', "''");
        let big = big.unwrap();
        let sql = match (kind, &svc) {
            (_, Service::Sqlite(p)) => {
                // SQLite's own text-to-double is not always correctly rounded: bind the value.
                rusqlite::Connection::open(p)
                    .unwrap()
                    .execute(
                        "INSERT INTO vals VALUES (?1, ?2, ?3, ?4, ?5)",
                        rusqlite::params![id, r, b, t.replace("''", "'"), big],
                    )
                    .unwrap();
                continue;
            }
            (Kind::Postgres, _) => format!(
                "INSERT INTO vals VALUES ({id}, '{r:e}'::float8, '\\x{hex}'::bytea, '{t}', {big})"
            ),
            _ => format!(
                "INSERT INTO vals VALUES ({id}, {r:e}, x'{hex}', '{}', {big})",
                t.replace('\\', "\\\\")
            ),
        };
        service.exec(&sql).await;
    }
    want.extend(back);
    let arrived = eventually(20, || async { sqlite_vals(mono_path).len() == want.len() }).await;
    assert!(arrived, "{kind:?}: rows did not all come back");
    let got = sqlite_vals(mono_path);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w, g, "{kind:?}: row {} differs on the monolith", w.0);
    }
    assert_eq!(svc.vals().await, want);
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_sqlite_values_arrive_bit_identical() {
    values_arrive_exactly(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_postgres_values_arrive_bit_identical() {
    values_arrive_exactly(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_to_mariadb_values_arrive_bit_identical() {
    values_arrive_exactly(Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_binary_columns_are_captured_as_bytes() {
    let Some(base) = service_url("STRANGLER_TEST_MYSQL_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (my, my_url) = Db::fresh_my(&base).await;
    my.exec("CREATE TABLE vals (id BIGINT PRIMARY KEY, r DOUBLE, b VARBINARY(64), t TEXT, big BIGINT) CHARACTER SET utf8mb4;")
        .await;
    let (sq, sq_url) = Db::fresh_sqlite(dir.path(), "service");
    sq.exec("CREATE TABLE vals (id INTEGER PRIMARY KEY, r REAL, b BLOB, t TEXT, big INTEGER);")
        .await;
    let eng = start(&config(&my_url, &sq_url, &dir.path().join("control.db"))).await;
    my.exec("INSERT INTO vals VALUES (1, 5e-324, x'00ff80', 'a', -1)")
        .await;
    let Db::Sqlite(p) = &sq else { unreachable!() };
    assert!(eventually(10, || async { sqlite_vals(p).len() == 1 }).await);
    assert_eq!(
        sqlite_vals(p),
        vec![(
            1,
            Some(5e-324f64.to_bits()),
            Some(vec![0, 0xff, 0x80]),
            Some("a".into()),
            Some(-1)
        )]
    );
    eng.stop().await;
}

/// Decimals keep their digits and scale, timestamps their microseconds and zone, JSON its
/// document, between two PostgreSQL databases; decimals also into MariaDB. The table is
/// named like a built-in type on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_decimals_timestamps_and_json_arrive_exactly() {
    let (Some(pg), Some(my)) = (
        service_url("STRANGLER_TEST_POSTGRES_URL"),
        service_url("STRANGLER_TEST_MYSQL_URL"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (left, left_url) = Db::fresh_pg(&pg).await;
    let (right, right_url) = Db::fresh_pg(&pg).await;
    let (maria, maria_url) = Db::fresh_my(&my).await;
    let pg_table = "CREATE TABLE money (id BIGINT PRIMARY KEY, amount NUMERIC(38,10), at TIMESTAMPTZ, doc JSONB);";
    left.exec(pg_table).await;
    right.exec(pg_table).await;
    maria
        .exec("CREATE TABLE money (id BIGINT PRIMARY KEY, amount DECIMAL(38,10));")
        .await;
    let text = format!(
        r#"
[gateway]
control = "sqlite://{control}"
[sync]
poll = "20ms"
[sides.monolith]
database = "{left_url}"
[sides.service]
database = "{right_url}"
[sides.ledger]
database = "{maria_url}"
[[entities]]
name = "money"
monolith = {{ table = "money", key = ["id"] }}
service = {{ table = "money", key = ["id"] }}
columns = {{ id = "id", amount = "amount", at = "at", doc = "doc" }}
"#,
        control = dir.path().join("control.db").display()
    );
    let eng = start(&text).await;
    let amounts = [
        "12345678901234567890.1234567890",
        "0.1000000000",
        "-9999999999999999999999999999.9999999999",
        "1.5000000000",
    ];
    for (i, a) in amounts.iter().enumerate() {
        left.exec(&format!(
            "INSERT INTO money VALUES ({i}, {a}, '2026-12-03 13:00:00.{:06}+05:30', '{{\"a\": [1, 2.50, \"x\\u00e9\"], \"n\": null, \"big\": 123456789012345678901234567890}}')",
            123456 + i
        ))
        .await;
    }
    let q = "SELECT id, amount::text, at::text, doc::text FROM money ORDER BY id";
    assert!(
        eventually(10, || async { right.rows(q).await.len() == amounts.len() }).await,
        "{}",
        eng.status.snapshot()
    );
    assert_eq!(right.rows(q).await, left.rows(q).await);
    assert_eq!(right.rows(q).await[0][1], amounts[0]);
    eng.stop().await;

    // The same decimals into MariaDB.
    let text = text
        .replace(
            &format!("database = \"{right_url}\""),
            &format!("database = \"{maria_url}\""),
        )
        .replace(
            "columns = { id = \"id\", amount = \"amount\", at = \"at\", doc = \"doc\" }",
            "columns = { id = \"id\", amount = \"amount\" }",
        );
    let text = text.replace("[sides.ledger]", "[sides.unused]");
    let _ = right;
    let eng = start(&text).await;
    for (i, a) in amounts.iter().enumerate() {
        left.exec(&format!("UPDATE money SET amount = {a} WHERE id = {i}"))
            .await;
    }
    let mq = "SELECT id, CAST(amount AS CHAR) FROM money ORDER BY id";
    assert!(eventually(10, || async { maria.rows(mq).await.len() == amounts.len() }).await);
    let got: Vec<String> = maria
        .rows(mq)
        .await
        .into_iter()
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(got, amounts);
    eng.stop().await;
}
