//! The API generator's start-up cost: introspection plus the OpenAPI document for 50 and 1,000
//! tables of a dozen typed columns each (a key, a foreign key to the previous table, a check
//! constraint), on SQLite and, when `STRANGLER_TEST_POSTGRES_URL` is set, on PostgreSQL (in a
//! database of its own, `apigen_bench`). Prints the median of seven runs.
//!
//! `cargo bench --bench apigen_bench`

use std::time::Instant;

use strangler::apigen::{Options, introspect, openapi};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The DDL of `n` tables; `serial` is the key type's spelling.
fn ddl(n: usize, pg: bool) -> Vec<String> {
    (0..n)
        .map(|i| {
            let key = if pg { "bigserial" } else { "INTEGER" };
            let parent = if i == 0 {
                String::new()
            } else {
                format!(", parent_id BIGINT REFERENCES t{:04}(id)", i - 1)
            };
            format!(
                "CREATE TABLE t{i:04} (id {key} PRIMARY KEY, name VARCHAR(80) NOT NULL, \
                 price NUMERIC(12,2) NOT NULL DEFAULT 0, qty INTEGER CHECK (qty >= 0), \
                 active BOOLEAN NOT NULL DEFAULT true, born DATE, seen TIMESTAMP, \
                 note TEXT, ratio REAL, code CHAR(8), flags SMALLINT{parent})"
            )
        })
        .collect()
}

/// Median milliseconds of the whole, and of introspection alone.
async fn time(url: &str, tables: &[String]) -> (f64, f64) {
    let (mut runs, mut schema) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let started = Instant::now();
        let (db, resources) = introspect(url, tables).await.expect("introspect");
        schema.push(started.elapsed().as_secs_f64() * 1000.0);
        let doc = openapi::document("bench", &resources, &Options::default(), db);
        let text = serde_json::to_string(&doc).expect("json");
        assert!(text.len() > 1000);
        runs.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    (median(runs), median(schema))
}

async fn sqlite(dir: &std::path::Path, n: usize) -> (f64, f64) {
    let path = dir.join(format!("t{n}.db"));
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch(&format!("BEGIN; {}; COMMIT;", ddl(n, false).join(";\n")))
        .expect("ddl");
    drop(conn);
    time(&format!("sqlite://{}", path.display()), &[]).await
}

async fn postgres(base: &str, n: usize) -> Option<(f64, f64)> {
    let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    let _ = client
        .batch_execute("DROP DATABASE IF EXISTS apigen_bench")
        .await;
    client
        .batch_execute("CREATE DATABASE apigen_bench")
        .await
        .ok()?;
    let url = match base.rsplit_once('/') {
        Some((head, _)) => format!("{head}/apigen_bench"),
        None => return None,
    };
    let (bench, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(conn);
    bench
        .batch_execute(&format!("BEGIN; {}; COMMIT;", ddl(n, true).join(";\n")))
        .await
        .ok()?;
    drop(bench);
    let ms = time(&url, &[]).await;
    let _ = client
        .batch_execute("DROP DATABASE IF EXISTS apigen_bench WITH (FORCE)")
        .await;
    Some(ms)
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let pg = std::env::var("STRANGLER_TEST_POSTGRES_URL").ok();
    for n in [50, 1000] {
        let lite = rt.block_on(sqlite(dir.path(), n));
        let post = pg.as_deref().and_then(|u| rt.block_on(postgres(u, n)));
        match post {
            Some(p) => {
                println!(
                    "apigen {n} tables (ms): sqlite {:.1} postgres {:.1}",
                    lite.0, p.0
                );
                println!(
                    "  of which introspection (ms): sqlite {:.1} postgres {:.1}",
                    lite.1, p.1
                );
            }
            None => println!(
                "apigen {n} tables (ms): sqlite {:.1} (introspection {:.1}) postgres not measured",
                lite.0, lite.1
            ),
        }
    }
}
