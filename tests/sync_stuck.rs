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
    // Refused every time, the change was quarantined; it still counts in the lag.
    s.right.exec("DROP TRIGGER refuse").await;
    for q in quarantine(&eng) {
        assert!(eng.status.request_retry(q["id"].as_u64().unwrap()));
    }
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

/// The quarantine list of the engine's `GET /admin/sync` document.
fn quarantine(eng: &Running) -> Vec<serde_json::Value> {
    eng.status.snapshot()["quarantine"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn right_user(s: &Sides, id: i64) -> Vec<Vec<String>> {
    s.right
        .rows(&format!(
            "SELECT user_id, email, full_name FROM accounts WHERE user_id = {id}"
        ))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_change_is_quarantined_and_the_stream_goes_on() {
    let s = Sides::new(Pair::SqliteSqlite).await.unwrap();
    let eng = start(&s.config("")).await;
    // A changelog row no decoder can read, then ordinary writes to other keys.
    s.left
        .exec("INSERT INTO _strangler_changes (tbl, op, old, new, tx, ts, pk) VALUES ('users', 'I', NULL, '{\"id\": 1, \"email\": ', NULL, 1, '1')")
        .await;
    s.left
        .exec("INSERT INTO users (id, email, name, stock) VALUES (2, 'b@x.io', 'Bob', 1); INSERT INTO orders (id, total) VALUES (1, 10);")
        .await;
    assert!(
        eventually(10, || async {
            right_user(&s, 2).await.len() == 1
                && s.right.count("SELECT count(*) FROM orders").await == 1
        })
        .await,
        "the rest of the stream goes on"
    );
    let q = quarantine(&eng);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["entity"], "users");
    assert_eq!(q[0]["key"], "1");
    assert!(
        q[0]["reason"].as_str().unwrap().contains("cannot decode"),
        "{q:?}"
    );
    // A later change to the quarantined key waits with it.
    s.left
        .exec("INSERT INTO users (id, email, name, stock) VALUES (1, 'a@x.io', 'Ann', 1)")
        .await;
    assert!(
        eventually(5, || async {
            quarantine(&eng)[0]["held"]
                .as_array()
                .is_some_and(|h| h.len() == 1)
        })
        .await
    );
    assert!(
        right_user(&s, 1).await.is_empty(),
        "held behind the quarantined change"
    );
    // The operator mends the row and retries: both go through, in order.
    s.left
        .exec("UPDATE _strangler_changes SET new = '{\"id\": 1, \"email\": \"first@x.io\", \"name\": \"First\", \"stock\": 0, \"nick\": null, \"score\": null}' WHERE ts = 1")
        .await;
    let id = q[0]["id"].as_u64().unwrap();
    assert!(eng.status.request_retry(id));
    assert!(!eng.status.request_retry(9999));
    assert!(
        eventually(10, || async {
            right_user(&s, 1).await == vec![vec!["1".to_string(), "a@x.io".into(), "Ann".into()]]
        })
        .await,
        "the mended change and the one held behind it arrive in order"
    );
    assert!(quarantine(&eng).is_empty());
    assert!(converged(&s, 10).await);
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_other_side_refuses_is_found_and_quarantined() {
    let s = Sides::new(Pair::SqliteSqlite).await.unwrap();
    s.right
        .exec("CREATE TRIGGER refuse BEFORE INSERT ON accounts WHEN NEW.email = 'bad@x.io' BEGIN SELECT RAISE(ABORT, 'refused by the service'); END;")
        .await;
    let eng = start(&s.config("")).await;
    s.left
        .exec("INSERT INTO users (id, email, name, stock) VALUES (1, 'a@x.io', 'Ann', 1); INSERT INTO users (id, email, name, stock) VALUES (2, 'bad@x.io', 'Bad', 1); INSERT INTO users (id, email, name, stock) VALUES (3, 'c@x.io', 'Cy', 1);")
        .await;
    assert!(
        eventually(20, || async {
            right_user(&s, 1).await.len() == 1 && right_user(&s, 3).await.len() == 1
        })
        .await,
        "the changes around the refused one arrive: {}",
        eng.status.snapshot()
    );
    let q = quarantine(&eng);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0]["key"], "2");
    assert!(
        q[0]["reason"]
            .as_str()
            .unwrap()
            .contains("refused by the service"),
        "{q:?}"
    );
    assert!(right_user(&s, 2).await.is_empty());
    // The service is fixed; the retry brings the row over.
    s.right.exec("DROP TRIGGER refuse").await;
    s.left
        .exec("UPDATE users SET name = 'Good' WHERE id = 2")
        .await;
    assert!(eng.status.request_retry(q[0]["id"].as_u64().unwrap()));
    assert!(converged(&s, 20).await);
    assert_eq!(right_user(&s, 2).await[0][2], "Good");
    assert!(quarantine(&eng).is_empty());
    eng.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_set_to_pause_on_error_stops_instead() {
    let s = Sides::new(Pair::SqliteSqlite).await.unwrap();
    let eng = start(&s.config("on_error = \"pause\"")).await;
    s.left
        .exec("INSERT INTO _strangler_changes (tbl, op, old, new, tx, ts, pk) VALUES ('users', 'I', NULL, 'not json', NULL, 1, '1')")
        .await;
    assert!(
        eventually(10, || async {
            eng.status.snapshot()["paused"]["users"]
                .as_str()
                .is_some_and(|r| r.contains("cannot decode"))
        })
        .await,
        "{}",
        eng.status.snapshot()
    );
    assert!(quarantine(&eng).is_empty());
    eng.stop().await;
}
