//! The initial copy on real databases: 100,000 existing rows copied while four writers insert
//! and update on both sides and the sync engine runs, then the validator finds both sides
//! equal; a copy killed with `kill -9` halfway resumes after its last committed chunk and
//! captures no row twice.

mod sync_support;

use std::sync::Arc;
use std::time::Duration;

use strangler::validate::backfill::backfill;
use strangler::validate::command::{Options, run};
use sync_support::*;

const ROWS: i64 = 100_000;

/// Existing rows on the monolith only, written before capture was installed.
async fn existing(s: &Sides) {
    for start in (0..ROWS).step_by(2_000) {
        let values: Vec<String> = (start..start + 2_000)
            .map(|i| {
                let id = 100 + i;
                format!(
                    "({id}, 'u{id}@x.io', 'User {id}', {}, NULL, {})",
                    i % 7,
                    i % 100
                )
            })
            .collect();
        s.left
            .exec(&format!(
                "INSERT INTO users (id, email, name, stock, nick, score) VALUES {}",
                values.join(", ")
            ))
            .await;
    }
}

async fn copy_while_writers_run(pair: Pair) {
    let Some(s) = Sides::new(pair).await else {
        return;
    };
    existing(&s).await;
    let text = s.config(r#"column_conflict = { stock = "counter" }"#);
    let cfg = parse(&text);
    let entity = cfg.sync.entities[0].clone();
    let engine = start(&text).await;
    // The counters are written once capture runs, so they exist on both sides before anyone
    // increments them.
    Writers::seed(&s).await;
    assert!(
        eventually(30, || async {
            s.right
                .count("SELECT count(*) FROM accounts WHERE user_id < 10")
                .await
                == 10
        })
        .await
    );
    let s = Arc::new(s);
    let writers = Writers::start(&s, 2, Duration::from_millis(2));
    let report = backfill(&cfg.sync, &entity, 1_000, |_| {}).await.unwrap();
    assert!(report.progress.done);
    assert!(report.progress.read >= ROWS as u64 + 10);
    assert!(report.progress.copied >= ROWS as u64, "{report:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (totals, inserted) = writers.stop().await;
    if !converged(&s, 120).await {
        let check = run(&cfg.sync, None, &Options::default()).await.unwrap();
        let backlog = (
            s.left
                .count("SELECT count(*) FROM _strangler_changes")
                .await,
            s.right
                .count("SELECT count(*) FROM _strangler_changes")
                .await,
        );
        panic!(
            "{pair:?}: sides did not converge; backlog {backlog:?}\n{}",
            check.text()
        );
    }
    engine.stop().await;
    exact(&s, totals, inserted + ROWS).await;
    let check = run(&cfg.sync, None, &Options::default()).await.unwrap();
    assert!(check.consistent, "{}", check.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_while_writing_postgres_to_mariadb() {
    copy_while_writers_run(Pair::PgMy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backfill_resumes_and_captures_nothing_twice() {
    let s = Sides::new(Pair::SqliteSqlite).await.unwrap();
    existing(&s).await;
    // A tenth of the rows already made it across: those are not copied.
    let text = s.config("");
    let cfg = parse(&text);
    strangler::sync::SyncEngine::install(&cfg.sync)
        .await
        .unwrap();
    let rows: Vec<String> = (0..ROWS)
        .step_by(10)
        .map(|i| {
            let id = 100 + i;
            format!(
                "({id}, 'u{id}@x.io', 'User {id}', {}, NULL, {})",
                i % 7,
                i % 100
            )
        })
        .collect();
    for chunk in rows.chunks(2_000) {
        // Written as the engine would (uncaptured), so only the copy fills the changelog.
        s.right
            .exec(&format!(
                "UPDATE _strangler_guard SET applying = 1; INSERT INTO accounts (user_id, email, full_name, stock, nick, score) VALUES {}; UPDATE _strangler_guard SET applying = 0;",
                chunk.join(", ")
            ))
            .await;
    }
    let path = s.dir.path().join("sync.toml");
    std::fs::write(&path, &text).unwrap();
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
            .args([
                "sync",
                "backfill",
                "--no-wait",
                "--chunk",
                "500",
                "--config",
            ])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let progress = || async {
        let rows = s
            .left
            .rows("SELECT progress FROM _strangler_backfill")
            .await;
        rows.first()
            .map(|r| serde_json::from_str::<serde_json::Value>(&r[0]).unwrap())
    };
    assert!(
        eventually(60, || async {
            progress()
                .await
                .is_some_and(|p| p["read"].as_u64().unwrap() >= 30_000)
        })
        .await
    );
    child.kill();
    let halfway = progress().await.unwrap();
    assert_eq!(halfway["done"], false, "{halfway}");
    let captured = s
        .left
        .count("SELECT count(*) FROM _strangler_changes")
        .await;
    assert_eq!(captured as u64, halfway["copied"].as_u64().unwrap());

    let entity = cfg.sync.entities[0].clone();
    let report = backfill(&cfg.sync, &entity, 700, |_| {}).await.unwrap();
    assert!(report.resumed && report.progress.done, "{report:?}");
    assert_eq!(report.progress.read, ROWS as u64);
    // Every lacking row captured once: the killed run's chunks were not read again.
    assert_eq!(report.progress.copied, (ROWS - ROWS / 10) as u64);
    assert_eq!(
        s.left
            .count("SELECT count(DISTINCT pk) FROM _strangler_changes")
            .await,
        ROWS - ROWS / 10
    );
    assert_eq!(
        s.left
            .count("SELECT count(*) FROM _strangler_changes")
            .await,
        ROWS - ROWS / 10
    );
    let engine = start(&text).await;
    assert!(converged(&s, 120).await);
    engine.stop().await;
    let check = run(&cfg.sync, None, &Options::default()).await.unwrap();
    assert!(check.consistent, "{}", check.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_while_writing_sqlite_to_sqlite() {
    copy_while_writers_run(Pair::SqliteSqlite).await;
}
