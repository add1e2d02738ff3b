//! The initial copy on real databases: 100,000 existing rows copied while four writers insert
//! and update on both sides and the sync engine runs, then the validator finds both sides
//! equal; a copy killed with `kill -9` halfway resumes after its last committed chunk and
//! copies no row twice.

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
async fn a_killed_backfill_resumes_and_copies_nothing_twice() {
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
        // Written as the engine would (uncaptured): the service's changelog stays empty.
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
    // The progress is stored on the target, in the transaction that writes its rows.
    let progress = || async {
        let rows = s
            .right
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
    let accounts = || s.right.count("SELECT count(*) FROM accounts");
    assert_eq!(
        accounts().await as u64,
        ROWS as u64 / 10 + halfway["copied"].as_u64().unwrap(),
        "{halfway}"
    );

    let entity = cfg.sync.entities[0].clone();
    let report = backfill(&cfg.sync, &entity, 700, |_| {}).await.unwrap();
    assert!(report.resumed && report.progress.done, "{report:?}");
    assert_eq!(report.progress.read, ROWS as u64);
    // Every lacking row copied once: the killed run's chunks were not read again.
    assert_eq!(report.progress.copied, (ROWS - ROWS / 10) as u64);
    assert_eq!(accounts().await, ROWS);
    // Nothing was captured: the copy is not echoed back, and the monolith's log is empty.
    for side in [&s.left, &s.right] {
        assert_eq!(
            side.count("SELECT count(*) FROM _strangler_changes").await,
            0
        );
    }
    let check = run(&cfg.sync, None, &Options::default()).await.unwrap();
    assert!(check.consistent, "{}", check.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_while_writing_sqlite_to_sqlite() {
    copy_while_writers_run(Pair::SqliteSqlite).await;
}

/// Rows the copy reads are updated and deleted on the authority while it runs and the sync
/// engine applies those changes: each ends as the authority has it. Without the target's
/// gate, a delete the engine applied between the copy's read and its write would be undone
/// by the copy.
async fn churn_during_the_copy(pair: Pair) {
    let Some(s) = Sides::new(pair).await else {
        return;
    };
    existing(&s).await;
    let text = s.config("");
    let cfg = parse(&text);
    let entity = cfg.sync.entities[0].clone();
    let engine = start(&text).await;
    let s = Arc::new(s);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut op, mut deleted) = (0i64, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Spread over the whole key range: ahead of the copy, inside it and behind it.
                let id = 100 + (op * 7_919) % ROWS;
                let sql = if op % 2 == 0 {
                    format!("DELETE FROM users WHERE id = {id}")
                } else {
                    format!("UPDATE users SET name = 'changed {op}' WHERE id = {id}")
                };
                if s.left.try_exec(&sql).await.is_ok() {
                    deleted += i64::from(op % 2 == 0);
                    op += 1;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (op, deleted)
        })
    };
    let report = backfill(&cfg.sync, &entity, 300, |_| {}).await.unwrap();
    assert!(report.progress.done, "{report:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ops, _) = churn.await.unwrap();
    assert!(
        ops >= 20,
        "{pair:?}: only {ops} changes ran beside the copy"
    );
    assert!(converged(&s, 120).await, "{pair:?}: sides did not converge");
    engine.stop().await;
    assert_eq!(
        s.left.count("SELECT count(*) FROM users").await,
        s.right.count("SELECT count(*) FROM accounts").await
    );
    let check = run(&cfg.sync, None, &Options::default()).await.unwrap();
    assert!(check.consistent, "{pair:?}: {}", check.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_changed_during_the_copy_end_as_the_authority_has_them_postgres_to_mariadb() {
    churn_during_the_copy(Pair::PgMy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_changed_during_the_copy_end_as_the_authority_has_them_sqlite() {
    churn_during_the_copy(Pair::SqliteSqlite).await;
}

/// Rows the target refuses (a CHECK constraint the monolith does not have) are left out and
/// named, with the target's words; every other row is copied, and the validator then finds
/// exactly the refused rows missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_target_refuses_are_left_out_and_named() {
    let Some(s) = Sides::new(Pair::PgMy).await else {
        return;
    };
    existing(&s).await;
    // score = i % 100, stock = i % 7: one row in 700 breaks the rule.
    s.right
        .exec("ALTER TABLE accounts ADD CONSTRAINT no_13_3 CHECK (score <> 13 OR stock <> 3)")
        .await;
    let bad = (0..ROWS).filter(|i| i % 100 == 13 && i % 7 == 3).count() as u64;
    let text = s.config("");
    let cfg = parse(&text);
    strangler::sync::SyncEngine::install(&cfg.sync)
        .await
        .unwrap();
    let entity = cfg.sync.entities[0].clone();
    let report = backfill(&cfg.sync, &entity, 2_000, |_| {}).await.unwrap();
    assert!(report.progress.done, "{report:?}");
    assert_eq!(report.progress.read, ROWS as u64);
    assert_eq!(report.progress.refused, bad, "{report:?}");
    assert_eq!(report.progress.copied, ROWS as u64 - bad);
    assert_eq!(report.refusals.len(), 20, "the first 20 are listed");
    let first = &report.refusals[0];
    assert_eq!(first.key["id"], 313, "{first:?}");
    assert!(first.reason.contains("no_13_3"), "{first:?}");
    assert_eq!(
        s.right.count("SELECT count(*) FROM accounts").await as u64,
        ROWS as u64 - bad
    );
    let check = run(&cfg.sync, None, &Options::default()).await.unwrap();
    let json = serde_json::to_value(&check).unwrap();
    assert_eq!(json["entities"][0]["only_in"]["monolith"], bad, "{json}");
    assert_eq!(json["entities"][0]["changed"], 0, "{json}");
}
