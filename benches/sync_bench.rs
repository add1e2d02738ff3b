//! Sync throughput and latency: writers on both sides at a set rate, each row carrying its
//! commit time; observers on the opposite sides record when each row becomes visible.
//! Reports changes/s and the p50/p95/p99 of commit → visible. With `--backlog N` it instead
//! writes N changes with the engine stopped, then measures the drain and the peak RSS.
//!
//! cargo bench --bench sync_bench -- --pair sqlite|postgres --rate 10000 --seconds 60 [--broker nats://127.0.0.1:4222]
//! (load/sync-bench.sh runs both pairs and the pgbench ceiling.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strangler::config::Config;
use strangler::sync::SyncEngine;
use tokio_util::sync::CancellationToken;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

const SCHEMA: &str = "CREATE TABLE bench (id BIGINT PRIMARY KEY, side INTEGER NOT NULL, t_us BIGINT NOT NULL, payload VARCHAR(64))";

#[derive(Clone)]
enum Side {
    Sqlite(std::path::PathBuf),
    Pg(String),
}

impl Side {
    async fn exec(&self, sql: String) {
        match self {
            Side::Sqlite(p) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || {
                    let c = rusqlite::Connection::open(p).unwrap();
                    c.busy_timeout(Duration::from_secs(30)).unwrap();
                    c.execute_batch(&sql).unwrap();
                })
                .await
                .unwrap();
            }
            Side::Pg(url) => {
                let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                c.batch_execute(&sql).await.unwrap();
            }
        }
    }
}

/// A writer's connection: inserts `rows` rows in one transaction.
enum Writer {
    Sqlite(Arc<std::sync::Mutex<rusqlite::Connection>>),
    Pg(tokio_postgres::Client),
}

impl Writer {
    async fn open(side: &Side) -> Writer {
        match side {
            Side::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).unwrap();
                c.busy_timeout(Duration::from_secs(30)).unwrap();
                c.pragma_update(None, "synchronous", "NORMAL").unwrap();
                Writer::Sqlite(Arc::new(std::sync::Mutex::new(c)))
            }
            Side::Pg(url) => {
                let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                Writer::Pg(c)
            }
        }
    }

    async fn insert(&self, side: i64, first: i64, rows: i64) {
        let t = now_us();
        let values: Vec<String> = (first..first + rows)
            .map(|id| format!("({id}, {side}, {t}, 'payload-{id}')"))
            .collect();
        let sql = format!(
            "INSERT INTO bench (id, side, t_us, payload) VALUES {}",
            values.join(",")
        );
        match self {
            Writer::Sqlite(c) => {
                let c = c.clone();
                tokio::task::spawn_blocking(move || c.lock().unwrap().execute_batch(&sql).unwrap())
                    .await
                    .unwrap();
            }
            Writer::Pg(c) => {
                c.batch_execute(&sql).await.unwrap();
            }
        }
    }

    /// Rows with `after` < id < `before`: (id, t_us). One writer's range: a primary-key range scan.
    async fn seen(&self, after: i64, before: i64) -> Vec<(i64, i64)> {
        let sql =
            format!("SELECT id, t_us FROM bench WHERE id > {after} AND id < {before} ORDER BY id");
        match self {
            Writer::Sqlite(c) => {
                let c = c.clone();
                tokio::task::spawn_blocking(move || {
                    let c = c.lock().unwrap();
                    let mut st = c.prepare(&sql).unwrap();
                    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                        .unwrap()
                        .collect::<Result<Vec<_>, _>>()
                        .unwrap()
                })
                .await
                .unwrap()
            }
            Writer::Pg(c) => c
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        }
    }
}

async fn sides(pair: &str, dir: &std::path::Path) -> (Side, Side) {
    match pair {
        "sqlite" => (
            Side::Sqlite(dir.join("a.db")),
            Side::Sqlite(dir.join("b.db")),
        ),
        _ => {
            let base = std::env::var("STRANGLER_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let root = base.rsplit_once('/').unwrap().0.to_string();
            let admin = Side::Pg(base.clone());
            let tag = std::process::id();
            for n in ["a", "b"] {
                admin
                    .exec(format!("DROP DATABASE IF EXISTS sync_bench_{n}_{tag}"))
                    .await;
                admin
                    .exec(format!("CREATE DATABASE sync_bench_{n}_{tag}"))
                    .await;
            }
            (
                Side::Pg(format!("{root}/sync_bench_a_{tag}")),
                Side::Pg(format!("{root}/sync_bench_b_{tag}")),
            )
        }
    }
}

fn url(s: &Side) -> String {
    match s {
        Side::Sqlite(p) => format!("sqlite://{}", p.display()),
        Side::Pg(u) => u.clone(),
    }
}

/// `--broker nats://…`: run through NATS JetStream (a stream and bucket of this run's own).
fn broker_section() -> String {
    let url = arg("--broker", "");
    if url.is_empty() {
        return String::new();
    }
    let n = std::process::id();
    format!(
        "[sync.broker]\nurl = \"{url}\"\nstream = \"BENCH{n}\"\nsubject = \"bench{n}\"\nbucket = \"bench{n}_leases\"\n"
    )
}

fn config(a: &Side, b: &Side, dir: &std::path::Path) -> Config {
    let text = format!(
        r#"
[gateway]
control = "sqlite://{}/control.db"
[sync]
poll = "5ms"
[sides.monolith]
database = "{}"
[sides.service]
database = "{}"
[[entities]]
name = "bench"
monolith = {{ table = "bench", key = ["id"] }}
service = {{ table = "bench", key = ["id"] }}
columns = {{ id = "id", side = "side", t_us = "t_us", payload = "payload" }}
{}"#,
        dir.display(),
        url(a),
        url(b),
        broker_section()
    );
    Config::parse(std::path::Path::new("bench.toml"), &text).unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    // `cargo test --all-targets` runs this file too: without arguments, a 2-second smoke run.
    let smoke = !std::env::args().any(|a| a == "--pair");
    let pair = arg("--pair", "sqlite");
    let rate: i64 = arg("--rate", if smoke { "1000" } else { "10000" })
        .parse()
        .unwrap();
    let seconds: u64 = arg("--seconds", if smoke { "2" } else { "60" })
        .parse()
        .unwrap();
    let per_tx: i64 = arg("--rows-per-tx", "10").parse().unwrap();
    let backlog: i64 = arg("--backlog", "0").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = sides(&pair, dir.path()).await;
    a.exec(SCHEMA.into()).await;
    b.exec(SCHEMA.into()).await;
    let cfg = config(&a, &b, dir.path());
    SyncEngine::install(&cfg.sync).await.unwrap();
    let token = CancellationToken::new();

    if backlog > 0 {
        let w = Writer::open(&a).await;
        let t0 = Instant::now();
        let mut id = 0;
        while id < backlog {
            let n = 1000.min(backlog - id);
            w.insert(0, id, n).await;
            id += n;
        }
        println!(
            "backlog: wrote {backlog} changes in {:.1}s with the engine stopped",
            t0.elapsed().as_secs_f64()
        );
        let rss_before = peak_rss_mb();
        let engine = SyncEngine::new(cfg.sync.clone(), None);
        let run = tokio::spawn(engine.run(token.clone()));
        let t0 = Instant::now();
        let obs = Writer::open(&b).await;
        loop {
            let n = obs.seen(backlog - 2, backlog).await;
            if !n.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "backlog: drained {backlog} changes in {secs:.1}s ({:.0} changes/s); peak RSS {:.0} MB (before the engine started: {:.0} MB)",
            backlog as f64 / secs,
            peak_rss_mb(),
            rss_before
        );
        token.cancel();
        let _ = run.await;
        return;
    }

    let engine = SyncEngine::new(cfg.sync.clone(), None);
    let run = tokio::spawn(engine.run(token.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writers_per_side = 2i64;
    let mut tasks = Vec::new();
    for (si, side) in [(0i64, a.clone()), (1, b.clone())] {
        for w in 0..writers_per_side {
            let (stop, committed, side) = (stop.clone(), committed.clone(), side.clone());
            tasks.push(tokio::spawn(async move {
                let conn = Writer::open(&side).await;
                let txs_per_sec = (rate / 2 / writers_per_side / per_tx).max(1);
                let mut tick =
                    tokio::time::interval(Duration::from_micros(1_000_000 / txs_per_sec as u64));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut next = (si * writers_per_side + w) * 1_000_000_000;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    conn.insert(si, next, per_tx).await;
                    next += per_tx;
                    committed.fetch_add(per_tx as u64, Ordering::Relaxed);
                }
            }));
        }
    }
    let hist = Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::<u64>::new(3).unwrap(),
    ));
    let mut observers = Vec::new();
    for (watch_side, side) in [(0i64, b.clone()), (1, a.clone())] {
        let (stop, hist) = (stop.clone(), hist.clone());
        observers.push(tokio::spawn(async move {
            let conn = Writer::open(&side).await;
            let mut last = vec![-1i64; writers_per_side as usize];
            let mut seen = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (w, l) in last.iter_mut().enumerate() {
                    let base = (watch_side * writers_per_side + w as i64) * 1_000_000_000;
                    let rows = conn.seen((*l).max(base - 1), base + 1_000_000_000).await;
                    let now = now_us();
                    let mut h = hist.lock().unwrap();
                    for (id, t) in rows {
                        let _ = h.record(((now - t).max(0)) as u64);
                        *l = id;
                        seen += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let mut visible = 0;
    for o in observers {
        visible += o.await.unwrap();
    }
    token.cancel();
    let _ = run.await;
    let h = hist.lock().unwrap();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let n = committed.load(Ordering::Relaxed);
    println!(
        "pair: {pair}-{pair}  target: {rate} changes/s  rows per transaction: {per_tx}  duration: {seconds}s"
    );
    println!(
        "committed: {n} changes ({:.0}/s), seen on the other side during the run: {visible}",
        n as f64 / elapsed
    );
    println!(
        "commit -> visible latency (ms): p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        ms(0.5),
        ms(0.95),
        ms(0.99),
        h.max() as f64 / 1000.0
    );
    println!(
        "peak RSS of the bench process (engine + writers + observers): {:.0} MB",
        peak_rss_mb()
    );
    println!(
        "sync p95 latency (ms): {:.1} at {:.0} changes/s",
        ms(0.95),
        n as f64 / elapsed
    );
}
