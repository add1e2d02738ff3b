//! Every type, written on each side, arrives exactly on the other: doubles (bit for bit),
//! integers beyond 2^53, decimals with their scale, timestamps with microseconds and zones
//! (instants; a zone-less date-time is UTC), JSON documents, bytes and Unicode text, between
//! SQLite, PostgreSQL and MariaDB. Random values, written through Python's `sqlite3` (the
//! system's library) and the engine's own on SQLite, and through ordinary client sessions in
//! a non-UTC zone on the servers; compared by reading each database back in SQL.

mod sync_support;

use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use sync_support::*;
use time::{OffsetDateTime, UtcOffset};

/// One row as the test compares it: id, double's bits, big integer, decimal text, `at` and
/// `ts` as Unix µs, JSON document, bytes, text.
#[derive(Debug, Clone, PartialEq)]
struct Every {
    id: i64,
    r: Option<u64>,
    big: Option<i64>,
    amount: Option<String>,
    at: Option<i64>,
    ts: Option<i64>,
    doc: Option<Value>,
    b: Option<Vec<u8>>,
    t: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Sqlite,
    Postgres,
    Mariadb,
}

fn text(rng: &mut fastrand::Rng, max: usize) -> String {
    (0..rng.usize(0..max))
        .map(|_| match rng.u8(0..5) {
            0 => rng.char('a'..='z'),
            1 => rng.char('\u{e0}'..='\u{ff}'),
            2 => rng.char('\u{4e00}'..='\u{4fff}'),
            3 => rng.char('\u{1F600}'..='\u{1F64F}'),
            _ => ['"', '\\', '\n', '\'', '\t', '/', '\u{7f}'][rng.usize(0..7)],
        })
        .collect()
}

/// A decimal of NUMERIC(38,10) / DECIMAL(38,10) as both servers print it.
fn decimal(rng: &mut fastrand::Rng) -> String {
    let whole: u128 = match rng.u8(0..3) {
        0 => 0,
        1 => rng.u128(..10u128.pow(6)),
        _ => rng.u128(..10u128.pow(28)),
    };
    let sign = if rng.bool() && (whole > 0 || rng.bool()) {
        "-"
    } else {
        ""
    };
    let frac = rng.u64(..10u64.pow(10));
    let sign = if whole == 0 && frac == 0 { "" } else { sign };
    format!("{sign}{whole}.{frac:010}")
}

fn document(rng: &mut fastrand::Rng, depth: u32) -> Value {
    match rng.u8(0..if depth > 2 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => serde_json::from_str(&format!("{}{}", rng.u128(..10u128.pow(30)), ".50")).unwrap(),
        4 => serde_json::from_str("123456789012345678901234567890").unwrap(),
        5 => Value::String(text(rng, 12)),
        6 => Value::Array(
            (0..rng.usize(0..4))
                .map(|_| document(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.usize(0..4))
                .map(|_| (text(rng, 6), document(rng, depth + 1)))
                .collect(),
        ),
    }
}

/// Instants a MariaDB TIMESTAMP can hold (1971 to 2037), to the microsecond.
fn instant(rng: &mut fastrand::Rng) -> i64 {
    rng.i64(31_536_000_000_000..2_145_916_800_000_000)
}

fn rows(n: usize, first_id: i64) -> Vec<Every> {
    let mut rng = fastrand::Rng::with_seed(first_id as u64);
    let specials = [
        79.67035288841524,
        0.1 + 0.2,
        f64::MAX,
        -f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        1e-310,
        123456789.12345679,
    ];
    (0..n)
        .map(|i| {
            let id = first_id + i as i64;
            if i == n - 1 {
                // All NULL but the key.
                return Every {
                    id,
                    r: None,
                    big: None,
                    amount: None,
                    at: None,
                    ts: None,
                    doc: None,
                    b: None,
                    t: None,
                };
            }
            let r = specials.get(i).copied().unwrap_or_else(|| {
                loop {
                    let x = f64::from_bits(rng.u64(..));
                    if x.is_finite() && x != 0.0 {
                        break x;
                    }
                }
            });
            Every {
                id,
                r: Some(r.to_bits()),
                big: Some([i64::MAX, i64::MIN, (1 << 53) + 1, rng.i64(..)][i % 4]),
                amount: Some(decimal(&mut rng)),
                at: Some(instant(&mut rng)),
                ts: Some(instant(&mut rng)),
                // A document that is JSON's `null` travels as SQL NULL (one value in an
                // image): documents here are anything else.
                doc: Some(if i % 5 == 0 {
                    Value::String(text(&mut rng, 10))
                } else {
                    loop {
                        match document(&mut rng, 0) {
                            Value::Null => continue,
                            d => break d,
                        }
                    }
                }),
                b: Some((0..rng.usize(0..40)).map(|_| rng.u8(..)).collect()),
                t: Some(text(&mut rng, 30)),
            }
        })
        .collect()
}

/// Unix µs as `YYYY-MM-DD?HH:MM:SS.ffffff` in `offset` seconds east, with the offset when
/// `zone` (`+HH:MM`, or `Z` at zero).
fn render(us: i64, offset: i32, sep: char, zone: bool) -> String {
    let off = UtcOffset::from_whole_seconds(offset).unwrap();
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap()
        .to_offset(off);
    let mut s = format!(
        "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}.{:06}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    );
    if zone {
        if offset == 0 && sep == 'T' {
            s.push('Z');
        } else {
            let a = offset.abs();
            s.push_str(&format!(
                "{}{:02}:{:02}",
                if offset < 0 { '-' } else { '+' },
                a / 3600,
                a % 3600 / 60
            ));
        }
    }
    s
}

/// Unix µs of `YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|±HH:MM]` (zone-less: UTC).
fn parse_instant(s: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap_or_else(|_| panic!("{s}"));
    let date = time::Date::from_calendar_date(
        n(0..4) as i32,
        time::Month::try_from(n(5..7) as u8).unwrap(),
        n(8..10) as u8,
    )
    .unwrap();
    let t = time::Time::from_hms(n(11..13) as u8, n(14..16) as u8, n(17..19) as u8).unwrap();
    let mut i = 19;
    let mut micros = 0i64;
    if s.as_bytes().get(19) == Some(&b'.') {
        let digits: String = s[20..].chars().take_while(char::is_ascii_digit).collect();
        i = 20 + digits.len();
        micros = format!("{digits:0<6}")[..6].parse().unwrap();
    }
    let offset = match &s[i..] {
        "" | "Z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (z[1..3].parse::<i64>().unwrap() * 3600 + z[4..6].parse::<i64>().unwrap() * 60)
        }
    };
    (time::PrimitiveDateTime::new(date, t)
        .assume_utc()
        .unix_timestamp()
        - offset)
        * 1_000_000
        + micros
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const SQLITE_TABLE: &str = "CREATE TABLE every (id INTEGER PRIMARY KEY, r REAL, big INTEGER, \
    amount TEXT, at TEXT, ts TEXT, doc TEXT, b BLOB, t TEXT, extra BLOB);";
const PG_TABLE: &str = "CREATE TABLE every (id BIGINT PRIMARY KEY, r DOUBLE PRECISION, \
    big BIGINT, amount NUMERIC(38,10), at TIMESTAMPTZ, ts TIMESTAMPTZ, doc JSONB, b BYTEA, t TEXT);";
const MY_TABLE: &str = "CREATE TABLE every (id BIGINT PRIMARY KEY, r DOUBLE, big BIGINT, \
    amount DECIMAL(38,10), at DATETIME(6), ts TIMESTAMP(6) NULL, doc JSON, b BLOB, t TEXT) \
    CHARACTER SET utf8mb4";

/// One side of the pair under test.
struct Side {
    kind: Kind,
    db: Db,
    url: String,
}

impl Side {
    async fn new(kind: Kind, dir: &std::path::Path, name: &str) -> Option<Side> {
        let (db, url) = match kind {
            Kind::Sqlite => Db::fresh_sqlite(dir, name),
            Kind::Postgres => Db::fresh_pg(&service_url("STRANGLER_TEST_POSTGRES_URL")?).await,
            Kind::Mariadb => Db::fresh_my(&service_url("STRANGLER_TEST_MYSQL_URL")?).await,
        };
        db.exec(match kind {
            Kind::Sqlite => SQLITE_TABLE,
            Kind::Postgres => PG_TABLE,
            Kind::Mariadb => MY_TABLE,
        })
        .await;
        Some(Side { kind, db, url })
    }

    /// Writes `rows` as an application would: half through Python's sqlite3 and half through
    /// rusqlite on SQLite (date-times in assorted spellings and zones); in a session whose
    /// zone is not UTC on the servers.
    async fn write(&self, rows: &[Every]) {
        match &self.db {
            Db::Sqlite(path) => {
                let (py, ours) = rows.split_at(rows.len() / 2);
                write_with_python(path, py);
                let c = rusqlite::Connection::open(path).unwrap();
                for (i, e) in ours.iter().enumerate() {
                    c.execute(
                        "INSERT INTO every (id, r, big, amount, at, ts, doc, b, t) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        rusqlite::params![
                            e.id,
                            e.r.map(f64::from_bits),
                            e.big,
                            e.amount,
                            e.at.map(|us| render(us, 0, ' ', false)),
                            e.ts.map(|us| render(us, (i as i32 % 53 - 24) * 1800, 'T', true)),
                            e.doc.as_ref().map(Value::to_string),
                            e.b,
                            e.t
                        ],
                    )
                    .unwrap();
                }
            }
            Db::Pg(c) => {
                c.batch_execute("SET TIME ZONE 'Asia/Kolkata'")
                    .await
                    .unwrap();
                for e in rows {
                    c.execute(
                        "INSERT INTO every VALUES ($1, $2, $3, $4::text::numeric, \
                         $5::text::timestamptz, $6::text::timestamptz, $7::text::jsonb, $8, $9)",
                        &[
                            &e.id,
                            &e.r.map(f64::from_bits),
                            &e.big,
                            &e.amount,
                            &e.at.map(|us| render(us, 9000, ' ', true)),
                            &e.ts.map(|us| render(us, -25200, 'T', true)),
                            &e.doc.as_ref().map(Value::to_string),
                            &e.b,
                            &e.t,
                        ],
                    )
                    .await
                    .unwrap();
                }
            }
            Db::My(pool) => {
                let mut c = pool.get_conn().await.unwrap();
                c.query_drop("SET time_zone = '-03:00'").await.unwrap();
                for e in rows {
                    c.exec_drop(
                        "INSERT INTO every VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            e.id,
                            e.r.map(f64::from_bits),
                            e.big,
                            e.amount.clone(),
                            // A DATETIME holds UTC; a TIMESTAMP reads in the session's zone.
                            e.at.map(|us| render(us, 0, ' ', false)),
                            e.ts.map(|us| render(us, -10800, ' ', false)),
                            e.doc.as_ref().map(Value::to_string),
                            e.b.clone(),
                            e.t.clone(),
                        ),
                    )
                    .await
                    .unwrap();
                }
            }
        }
    }

    /// Updates the given rows in place (old and new images travel).
    async fn update(&self, rows: &[Every]) {
        for e in rows {
            let amount = match (&e.amount, self.kind) {
                (None, _) => "NULL".to_string(),
                (Some(a), Kind::Sqlite) => format!("'{a}'"),
                (Some(a), _) => a.clone(),
            };
            let t = match &e.t {
                None => "NULL".to_string(),
                Some(t) if self.kind == Kind::Mariadb => {
                    format!("'{}'", t.replace('\\', "\\\\").replace('\'', "''"))
                }
                Some(t) => format!("'{}'", t.replace('\'', "''")),
            };
            let b = match (&e.b, self.kind) {
                (None, _) => "NULL".to_string(),
                (Some(b), Kind::Postgres) => format!("'\\x{}'", hex(b)),
                (Some(b), _) => format!("x'{}'", hex(b)),
            };
            self.db
                .exec(&format!(
                    "UPDATE every SET amount = {amount}, t = {t}, b = {b} WHERE id = {}",
                    e.id
                ))
                .await;
        }
    }

    /// Reads every row back, each column rendered in SQL to what the test compares.
    async fn read(&self) -> Vec<Every> {
        match &self.db {
            Db::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                let mut st = c
                    .prepare("SELECT id, r, big, amount, at, ts, doc, b, t FROM every ORDER BY id")
                    .unwrap();
                st.query_map([], |r| {
                    Ok(Every {
                        id: r.get(0)?,
                        r: r.get::<_, Option<f64>>(1)?.map(f64::to_bits),
                        big: r.get(2)?,
                        amount: r.get(3)?,
                        at: r.get::<_, Option<String>>(4)?.map(|s| parse_instant(&s)),
                        ts: r.get::<_, Option<String>>(5)?.map(|s| parse_instant(&s)),
                        doc: r
                            .get::<_, Option<String>>(6)?
                            .map(|s| serde_json::from_str(&s).expect("a JSON document")),
                        b: r.get(7)?,
                        t: r.get(8)?,
                    })
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            Db::Pg(c) => c
                .query(
                    "SELECT id, r, big, amount::text, (extract(epoch FROM at) * 1000000)::bigint, \
                     (extract(epoch FROM ts) * 1000000)::bigint, doc::text, b, t \
                     FROM every ORDER BY id",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| Every {
                    id: r.get(0),
                    r: r.get::<_, Option<f64>>(1).map(f64::to_bits),
                    big: r.get(2),
                    amount: r.get(3),
                    at: r.get(4),
                    ts: r.get(5),
                    doc: r
                        .get::<_, Option<String>>(6)
                        .map(|s| serde_json::from_str(&s).unwrap()),
                    b: r.get(7),
                    t: r.get(8),
                })
                .collect(),
            Db::My(pool) => {
                let mut c = pool.get_conn().await.unwrap();
                type MyRow = (
                    i64,
                    Option<f64>,
                    Option<i64>,
                    Option<String>,
                    Option<i64>,
                    Option<i64>,
                    Option<String>,
                    Option<Vec<u8>>,
                    Option<String>,
                );
                let rows: Vec<MyRow> = c
                    .query(
                        "SELECT id, r, big, CAST(amount AS CHAR), \
                         TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', at), \
                         CAST(UNIX_TIMESTAMP(ts) * 1000000 AS SIGNED), doc, b, t \
                         FROM every ORDER BY id",
                    )
                    .await
                    .unwrap();
                rows.into_iter()
                    .map(|(id, r, big, amount, at, ts, doc, b, t)| Every {
                        id,
                        r: r.map(f64::to_bits),
                        big,
                        amount,
                        at,
                        ts,
                        doc: doc.map(|s| serde_json::from_str(&s).unwrap()),
                        b,
                        t,
                    })
                    .collect()
            }
        }
    }
}

/// Writes rows through Python's `sqlite3` module (the system's SQLite 3.40), date-times in
/// the `T` spelling with assorted zones.
fn write_with_python(path: &std::path::Path, rows: &[Every]) {
    let data: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!([
                e.id,
                e.r.map(|x| format!("{:?}", f64::from_bits(x))),
                e.big,
                e.amount,
                e.at.map(|us| render(us, (i as i32 % 29 - 14) * 3600, 'T', true)),
                e.ts.map(|us| render(us, 0, 'T', true)),
                e.doc.as_ref().map(Value::to_string),
                e.b.as_deref().map(hex),
                e.t
            ])
        })
        .collect();
    let script = r#"
import json, sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
rows = json.loads(sys.stdin.read())
c.executemany("INSERT INTO every (id, r, big, amount, at, ts, doc, b, t, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, x'00ff')",
    [(i, None if r is None else float(r), big, a, at, ts, doc, None if b is None else bytes.fromhex(b), t)
     for i, r, big, a, at, ts, doc, b, t in rows])
c.commit()
"#;
    run_python(script, path, &data);
}

fn config(left: &Side, right: &Side, control: &std::path::Path) -> String {
    // SQLite keeps a decimal exactly only as text: the text column is cast to and from the
    // servers' decimals.
    let cast = match (left.kind, right.kind) {
        (Kind::Sqlite, Kind::Sqlite) => "",
        (Kind::Sqlite, _) => r#"transforms = [{ column = "amount", cast = "real" }]"#,
        (_, Kind::Sqlite) => r#"transforms = [{ column = "amount", cast = "text" }]"#,
        _ => "",
    };
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
name = "every"
monolith = {{ table = "every", key = ["id"] }}
service = {{ table = "every", key = ["id"] }}
columns = {{ id = "id", r = "r", big = "big", amount = "amount", at = "at", ts = "ts", doc = "doc", b = "b", t = "t" }}
{cast}
"#,
        control = control.display(),
        left = left.url,
        right = right.url,
    )
}

/// Random rows of every type written on both sides, some then updated on the other side;
/// both databases end holding exactly what was written.
async fn every_type_both_ways(left: Kind, right: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let (Some(l), Some(r)) = (
        Side::new(left, dir.path(), "left").await,
        Side::new(right, dir.path(), "right").await,
    ) else {
        return;
    };
    let eng = start(&config(&l, &r, &dir.path().join("control.db"))).await;
    let mut want = rows(120, 1);
    let theirs = rows(120, 100_001);
    l.write(&want).await;
    r.write(&theirs).await;
    want.extend(theirs);
    let both = |n: usize| {
        let (l, r) = (&l, &r);
        async move { l.read().await.len() == n && r.read().await.len() == n }
    };
    assert!(
        eventually(30, || both(want.len())).await,
        "{left:?}/{right:?}: rows did not all arrive: {}",
        eng.status.snapshot()
    );
    // Rows written on one side updated on the other: the old image travels too.
    let mut fresh = rows(40, 7_000);
    for (w, f) in want.iter_mut().zip(fresh.iter_mut()) {
        f.id = w.id;
    }
    let (to_l, to_r) = fresh.split_at(20);
    let to_r: Vec<Every> = to_r
        .iter()
        .cloned()
        .map(|mut f| {
            f.id += 100_000 - 20;
            f
        })
        .collect();
    r.update(to_l).await;
    l.update(&to_r).await;
    for f in to_l.iter().chain(&to_r) {
        let w = want.iter_mut().find(|w| w.id == f.id).unwrap();
        w.amount = f.amount.clone();
        w.t = f.t.clone();
        w.b = f.b.clone();
    }
    let settled = eventually(30, || async {
        l.read().await == want && r.read().await == want
    })
    .await;
    for (name, side) in [("left", &l), ("right", &r)] {
        let got = side.read().await;
        assert_eq!(got.len(), want.len(), "{name} ({:?})", side.kind);
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(
                w, g,
                "{left:?}/{right:?}: {name} ({:?}) row {}",
                side.kind, w.id
            );
        }
    }
    assert!(settled);
    let status = eng.status.snapshot();
    assert_eq!(status["quarantine"], json!([]), "{status}");
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_between_sqlite_and_postgres() {
    every_type_both_ways(Kind::Sqlite, Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_between_sqlite_and_mariadb() {
    every_type_both_ways(Kind::Sqlite, Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_between_postgres_and_mariadb() {
    every_type_both_ways(Kind::Postgres, Kind::Mariadb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_between_mariadb_and_sqlite() {
    every_type_both_ways(Kind::Mariadb, Kind::Sqlite).await;
}

/// A SQLite column declared JSON travels as the document it holds (digits kept), or as a
/// string when it holds no valid document; a text column's document is parsed for a JSON
/// column, and refused (quarantined, the rest going on) when it is not JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_json_and_text_columns_into_jsonb() {
    let Some(pg) = service_url("STRANGLER_TEST_POSTGRES_URL") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (sq, sq_url) = Db::fresh_sqlite(dir.path(), "left");
    sq.exec("CREATE TABLE docs (id INTEGER PRIMARY KEY, j JSON, t TEXT);")
        .await;
    let (right, right_url) = Db::fresh_pg(&pg).await;
    right
        .exec("CREATE TABLE docs (id BIGINT PRIMARY KEY, j JSONB, t JSONB);")
        .await;
    let eng = start(&format!(
        r#"
[gateway]
control = "sqlite://{control}"
[sync]
poll = "20ms"
[sides.monolith]
database = "{sq_url}"
[sides.service]
database = "{right_url}"
[[entities]]
name = "docs"
monolith = {{ table = "docs", key = ["id"] }}
service = {{ table = "docs", key = ["id"] }}
columns = {{ id = "id", j = "j", t = "t" }}
"#,
        control = dir.path().join("control.db").display()
    ))
    .await;
    sq.exec(
        "INSERT INTO docs VALUES (1, '{\"a\": 2.50, \"n\": 123456789012345678901234567890}', '[1, \"x\"]');
         INSERT INTO docs VALUES (2, 'not json', '\"s\"');
         INSERT INTO docs VALUES (3, '{}', 'not json either');
         INSERT INTO docs VALUES (4, NULL, NULL);",
    )
    .await;
    let q = "SELECT id::text, j::text, t::text FROM docs ORDER BY id";
    assert!(eventually(10, || async { right.rows(q).await.len() == 3 }).await);
    let quarantined = eventually(10, || async {
        eng.status.snapshot()["quarantine"]
            .as_array()
            .is_some_and(|q| q.len() == 1)
    })
    .await;
    let status = eng.status.snapshot();
    assert!(quarantined, "{status}");
    let reason = status["quarantine"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("column \"t\"") && reason.contains("not a JSON document"),
        "{reason}"
    );
    assert_eq!(
        right.rows(q).await,
        vec![
            vec![
                "1".to_string(),
                r#"{"a": 2.50, "n": 123456789012345678901234567890}"#.into(),
                r#"[1, "x"]"#.into()
            ],
            vec!["2".into(), r#""not json""#.into(), r#""s""#.into()],
            vec!["4".into(), "NULL".into(), "NULL".into()],
        ]
    );
    eng.stop().await;
}

#[test]
fn instants_render_and_parse_back() {
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..1000 {
        let us = instant(&mut rng);
        let off = rng.i32(-50400..50400) / 900 * 900;
        assert_eq!(parse_instant(&render(us, off, 'T', true)), us);
        assert_eq!(parse_instant(&render(us, 0, ' ', false)), us);
    }
}
