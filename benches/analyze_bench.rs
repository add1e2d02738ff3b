//! The boundary analyzer on synthetic monoliths with planted services: 100 and 1,000 tables
//! with 100,000 transactions of evidence. Prints the median of five runs of the analysis, the
//! same from an SQLite database's catalog and a JSON lines evidence file (introspection and
//! parsing included), the adjusted Rand index against the planted split, and peak RSS.
//!
//! `cargo bench --bench analyze_bench`

use std::time::Instant;

use strangler::analyze::synthetic::{Plan, Planted, adjusted_rand_index, generate};
use strangler::analyze::{Input, LogFormat, Options, Report, analyze};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ari(planted: &Planted, report: &Report) -> f64 {
    let names: Vec<&String> = planted
        .input
        .schema
        .tables
        .iter()
        .map(|t| &t.name)
        .collect();
    let mut found = vec![usize::MAX; names.len()];
    for (s, svc) in report.services.iter().enumerate() {
        for t in &svc.tables {
            if let Some(i) = names.iter().position(|n| *n == t) {
                found[i] = s;
            }
        }
    }
    adjusted_rand_index(&planted.groups, &found)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Writes the planted schema into an SQLite file and the evidence as JSON lines.
fn to_files(planted: &Planted, dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let db = dir.join("monolith.db");
    let conn = rusqlite::Connection::open(&db).expect("sqlite");
    let schema = &planted.input.schema;
    let mut ddl = String::from("BEGIN;");
    for (i, t) in schema.tables.iter().enumerate() {
        let mut cols: Vec<String> = t
            .columns
            .iter()
            .map(|(c, _)| {
                if c == "id" {
                    "id INTEGER PRIMARY KEY".to_string()
                } else {
                    format!("{c} INTEGER")
                }
            })
            .collect();
        for r in schema.references.iter().filter(|r| r.from == i) {
            cols.push(format!(
                "FOREIGN KEY ({}) REFERENCES {} (id)",
                r.columns[0], schema.tables[r.to].name
            ));
        }
        ddl.push_str(&format!("CREATE TABLE {} ({});", t.name, cols.join(", ")));
    }
    ddl.push_str("COMMIT;");
    conn.execute_batch(&ddl).expect("ddl");
    let mut lines = String::new();
    for o in &planted.input.observations {
        lines.push_str(
            &serde_json::json!({"tables": o.tables, "writes": o.writes, "count": o.count})
                .to_string(),
        );
        lines.push('\n');
    }
    let ev = dir.join("evidence.jsonl");
    std::fs::write(&ev, lines).expect("evidence");
    (format!("sqlite://{}", db.display()), ev)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for tables in [100usize, 1_000] {
        let plan = Plan {
            tables,
            group: 10,
            noise: 0.05,
            undeclared: 0.3,
            transactions: 100_000,
            seed: 42,
        };
        let planted = generate(&plan);
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..5 {
            let input = planted.input.clone();
            let start = Instant::now();
            let r = analyze(input, &Options::default()).expect("analysis");
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            last = Some(r);
        }
        let report = last.expect("ran");
        println!("analyze {tables} tables (ms): {:.1}", median(times));
        println!(
            "analyze {tables} tables: {} services, ARI {:.3} against the {} planted",
            report.services.len(),
            ari(&planted, &report),
            tables / 10
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, evidence) = to_files(&planted, dir.path());
        let mut times = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let mut input = rt.block_on(Input::from_database(&url)).expect("catalog");
            input
                .read(&evidence, LogFormat::Evidence)
                .expect("evidence");
            let _ = analyze(input, &Options::default()).expect("analysis");
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        println!(
            "analyze {tables} tables from sqlite + 100000 evidence lines (ms): {:.1}",
            median(times)
        );
        println!(
            "analyze peak RSS after {tables} tables (MiB): {:.1}",
            peak_rss_mib()
        );
    }
}
