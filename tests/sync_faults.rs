//! Faults between the sync engine and its databases: latency, dropped connections, a 30 s
//! partition (through a fault-injecting proxy), and `kill -9` of an engine process. Each
//! ends with both sides identical, every counter increment counted once, nothing lost.

mod sync_support;

use std::sync::Arc;
use std::time::Duration;

use sync_support::proxy::FaultProxy;
use sync_support::*;

async fn partition(pair: Pair) {
    let Some(s) = Sides::new(pair).await else {
        return;
    };
    // The engine reaches the service's database only through the proxy.
    let proxy = FaultProxy::start(&FaultProxy::target_of(&s.right_url)).await;
    // mysql_async would otherwise switch to the Unix socket and bypass the proxy.
    let routed = match pair {
        Pair::PgMy => format!("{}?prefer_socket=false", proxy.route(&s.right_url)),
        _ => proxy.route(&s.right_url),
    };
    let text = config_for(
        &s.left_url,
        &routed,
        "column_conflict = { stock = \"counter\" }",
        &s.dir.path().join("control.db"),
    );
    let eng = start(&text).await;
    Writers::seed(&s).await;
    assert!(converged(&s, 10).await);
    let s = Arc::new(s);
    let writers = Writers::start(&s, 2, Duration::from_millis(3));
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.latency(Duration::from_millis(40));
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.latency(Duration::ZERO);
    for _ in 0..3 {
        proxy.drop_connections();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    proxy.cut(true);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = eng.status.snapshot();
    proxy.cut(false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (totals, inserted) = writers.stop().await;
    assert!(
        converged(&s, 60).await,
        "{pair:?}: converged after the partition: {} / {}",
        eng.status.snapshot(),
        s.left
            .count("SELECT count(*) FROM _strangler_changes")
            .await
            + s.right
                .count("SELECT count(*) FROM _strangler_changes")
                .await
    );
    exact(&s, totals, inserted).await;
    let link = during["links"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .to_string();
    assert!(
        link.contains("retrying"),
        "{pair:?}: the cut was seen and retried: {during}"
    );
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_latency_dropped_connections_and_a_30s_partition_lose_nothing() {
    partition(Pair::PgPg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_latency_dropped_connections_and_a_30s_partition_lose_nothing() {
    partition(Pair::PgMy).await;
}

fn spawn_engine(config: &std::path::Path) -> KillOnDrop {
    std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["sync", "run", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .expect("start strangler sync run")
}

async fn kill_nine(pair: Pair) {
    let Some(s) = Sides::new(pair).await else {
        return;
    };
    let text = s.config("column_conflict = { stock = \"counter\" }");
    let path = s.dir.path().join("sync.toml");
    std::fs::write(&path, &text).unwrap();
    strangler::sync::SyncEngine::install(&parse(&text).sync)
        .await
        .unwrap();
    Writers::seed(&s).await;
    let s = Arc::new(s);
    let mut child = spawn_engine(&path);
    // Counters must exist on both sides before anyone increments them.
    assert!(converged(&s, 20).await);
    let writers = Writers::start(&s, 2, Duration::from_millis(1));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700 + fastrand::u64(..600))).await;
        // SIGKILL: no chance to finish a round or close a transaction.
        child.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        child = spawn_engine(&path);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (totals, inserted) = writers.stop().await;
    assert!(
        converged(&s, 60).await,
        "{pair:?}: converged after kill -9 and restart"
    );
    exact(&s, totals, inserted).await;
    child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_engine_killed_with_sigkill_resumes_from_its_checkpoint() {
    kill_nine(Pair::SqliteSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_engine_killed_with_sigkill_resumes_from_its_checkpoint() {
    kill_nine(Pair::PgPg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_engine_killed_with_sigkill_resumes_from_its_checkpoint() {
    kill_nine(Pair::PgMy).await;
}
