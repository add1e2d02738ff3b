//! A link that cannot apply: its lag keeps growing whether it retries or is paused.

mod sync_support;

use std::time::Duration;

use sync_support::*;

/// The users entity's lag from the monolith to the service, from `GET /admin/sync`'s document.
fn users_lag(eng: &Running) -> f64 {
    eng.status.snapshot()["directions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["entity"] == "users" && d["from"] == "monolith")
        .and_then(|d| d["lag_seconds"].as_f64())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_grows_while_a_link_retries_a_change_it_cannot_apply() {
    let s = Sides::new(Pair::SqliteSqlite).await.unwrap();
    s.right
        .exec("CREATE TRIGGER refuse BEFORE INSERT ON accounts BEGIN SELECT RAISE(ABORT, 'refused by the service'); END;")
        .await;
    let eng = start(&s.config("")).await;
    s.left
        .exec("INSERT INTO users (id, email, name, stock) VALUES (1, 'a@x.io', 'Ann', 5)")
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let lag = users_lag(&eng);
    assert!(lag >= 2.0, "lag {lag} while the change waits 2.5 s");
    let doc = eng.status.snapshot();
    assert!(doc["links"].to_string().contains("retrying"), "{doc}");
    s.right.exec("DROP TRIGGER refuse").await;
    assert!(converged(&s, 20).await);
    assert!(eventually(5, || async { users_lag(&eng) < 1.0 }).await);
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_grows_while_an_entity_is_paused() {
    // PostgreSQL: SQLite cannot drop a column its capture triggers name.
    let Some(s) = Sides::new(Pair::PgPg).await else {
        return;
    };
    let eng = start(&s.config("")).await;
    s.right.exec("ALTER TABLE accounts DROP COLUMN nick").await;
    assert!(
        eventually(10, || async {
            eng.status.snapshot()["paused"]
                .as_object()
                .is_some_and(|p| p.contains_key("users"))
        })
        .await,
        "the dropped mapped column pauses the entity"
    );
    s.left
        .exec("INSERT INTO users (id, email, name, stock) VALUES (1, 'a@x.io', 'Ann', 5)")
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let lag = users_lag(&eng);
    assert!(lag >= 2.0, "lag {lag} while the entity is paused 2.5 s");
    eng.stop().await;
}
