//! Broker mode against the real NATS JetStream server: changes travel through a durable
//! stream, several workers share the groups, a killed worker's groups are taken over,
//! re-published and replayed messages are never applied twice, and a stale lease holder is
//! fenced off.

mod sync_support;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use strangler::store::Store;
use strangler::sync::SyncEngine;
use sync_support::*;

/// A broker section with names of its own, so tests do not share streams or leases.
struct Names {
    stream: String,
    subject: String,
    bucket: String,
}

impl Names {
    fn new() -> Names {
        let n = fastrand::u32(..);
        Names {
            stream: format!("T{n}"),
            subject: format!("t{n}"),
            bucket: format!("t{n}_leases"),
        }
    }

    fn section(&self, url: &str, worker: Option<&str>) -> String {
        let worker = worker
            .map(|w| format!("worker = \"{w}\"\n"))
            .unwrap_or_default();
        format!(
            "\n[sync.broker]\nurl = \"{url}\"\nstream = \"{}\"\nsubject = \"{}\"\nbucket = \"{}\"\nlease = \"1s\"\n{worker}",
            self.stream, self.subject, self.bucket
        )
    }

    async fn cleanup(&self, js: &jetstream::Context) {
        let _ = js.delete_stream(&self.stream).await;
        let _ = js.delete_key_value(&self.bucket).await;
    }
}

/// The sides' config in broker mode; orders and items share a group (one transaction).
fn broker_config(s: &Sides, names: &Names, url: &str, worker: Option<&str>) -> String {
    let text = s
        .config("column_conflict = { stock = \"counter\" }")
        .replace("name = \"orders\"", "name = \"orders\"\ngroup = \"orders\"")
        .replace("name = \"items\"", "name = \"items\"\ngroup = \"orders\"");
    format!("{text}{}", names.section(url, worker))
}

async fn js(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.expect("connect to NATS"))
}

async fn last_seq(js: &jetstream::Context, names: &Names) -> u64 {
    js.get_stream(&names.stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence
}

async fn owner(js: &jetstream::Context, names: &Names, unit: &str) -> Option<String> {
    let kv = js.get_key_value(&names.bucket).await.ok()?;
    kv.get(unit)
        .await
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_insert_is_one_message_and_one_apply_with_no_echo() {
    let Some(url) = service_url("STRANGLER_TEST_NATS_URL") else {
        return;
    };
    let Some(s) = Sides::new(Pair::PgPg).await else {
        return;
    };
    let names = Names::new();
    let text = broker_config(&s, &names, &url, Some("solo"));
    let eng = start(&text).await;
    let js = js(&url).await;
    assert!(
        eventually(10, || async {
            owner(&js, &names, "group.users").await.is_some()
        })
        .await,
        "the worker takes the group's lease: {}",
        eng.status.snapshot()
    );
    let before = last_seq(&js, &names).await;
    s.left
        .exec("INSERT INTO users (id, email, name) VALUES (1, 'a@x.io', 'Ann')")
        .await;
    assert!(converged(&s, 10).await, "{}", eng.status.snapshot());
    // Give an echo every chance to show up.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        last_seq(&js, &names).await - before,
        1,
        "one write, one message: the applied copy was not captured and sent back"
    );
    assert_eq!(
        applied(&eng.status, "users"),
        1,
        "{}",
        eng.status.snapshot()
    );
    let snap = eng.status.snapshot().to_string();
    assert!(snap.contains("solo"), "ownership is reported: {snap}");
    eng.stop().await;
    names.cleanup(&js).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_share_the_groups_and_lose_nothing() {
    let Some(url) = service_url("STRANGLER_TEST_NATS_URL") else {
        return;
    };
    let pair = if std::env::var("PAIR_PG").is_ok() {
        Pair::PgPg
    } else {
        Pair::PgMy
    };
    let Some(s) = Sides::new(pair).await else {
        return;
    };
    let names = Names::new();
    let one = start(&broker_config(&s, &names, &url, Some("one"))).await;
    let two = start(&broker_config(&s, &names, &url, Some("two"))).await;
    let js = js(&url).await;
    Writers::seed(&s).await;
    assert!(converged(&s, 20).await);
    let s = Arc::new(s);
    let writers = Writers::start(&s, 3, Duration::from_millis(2));
    // An order and its items in one transaction, on the PostgreSQL side.
    for o in 0..20 {
        s.left
            .exec(&format!(
                "BEGIN; INSERT INTO orders (id, total) VALUES ({o}, 10); \
                 INSERT INTO items (id, order_id, qty) VALUES ({}, {o}, 1), ({}, {o}, 2); COMMIT;",
                o * 2,
                o * 2 + 1
            ))
            .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (totals, inserted) = writers.stop().await;
    assert!(
        converged(&s, 60).await,
        "{} / {}",
        one.status.snapshot(),
        two.status.snapshot()
    );
    exact(&s, totals, inserted).await;
    assert_eq!(s.right.count("SELECT count(*) FROM items").await, 40);
    assert!(
        last_seq(&js, &names).await > 0,
        "changes went through the stream"
    );
    for unit in [
        "group.users",
        "group.orders",
        "relay.monolith",
        "relay.users",
    ] {
        let o = owner(&js, &names, unit).await;
        assert!(
            o.as_deref() == Some("one") || o.as_deref() == Some("two"),
            "{unit} is owned by one worker: {o:?}"
        );
    }
    one.stop().await;
    two.stop().await;
    names.cleanup(&js).await;
}

fn spawn_worker(config: &std::path::Path) -> KillOnDrop {
    let n = fastrand::u32(..);
    let log = std::fs::File::create(config.with_file_name(format!("worker-{n}.log"))).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["sync", "run", "--config"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("WORKER_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map(KillOnDrop)
        .expect("start strangler sync run")
}

/// The workers' logs, for failure messages.
fn logs(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("worker-") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.push_str(&format!("--- {name}\n{text}\n"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_workers_groups_are_taken_over() {
    let Some(url) = service_url("STRANGLER_TEST_NATS_URL") else {
        return;
    };
    let Some(s) = Sides::new(Pair::PgPg).await else {
        return;
    };
    let names = Names::new();
    // No worker name: each process is named after its host and pid.
    let text = broker_config(&s, &names, &url, None);
    let path = s.dir.path().join("sync.toml");
    std::fs::write(&path, &text).unwrap();
    strangler::sync::SyncEngine::install(&parse(&text).sync)
        .await
        .unwrap();
    let js = js(&url).await;
    // The lease bucket made beforehand with entries that live an hour: the broker never
    // expires a dead holder's lease here, so a take-over has to come from the standby seeing
    // the lease go unrenewed.
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: format!("KV_{}", names.bucket),
        subjects: vec![format!("$KV.{}.>", names.bucket)],
        max_messages_per_subject: 1,
        max_age: Duration::from_secs(3600),
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    Writers::seed(&s).await;
    let s = Arc::new(s);
    let mut workers = vec![spawn_worker(&path), spawn_worker(&path)];
    assert!(converged(&s, 30).await);
    let writers = Writers::start(&s, 2, Duration::from_millis(2));
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let held = owner(&js, &names, "group.users").await.expect("owned");
        let pid: u32 = held.rsplit('-').next().unwrap().parse().unwrap();
        let i = workers
            .iter()
            .position(|c| c.id() == pid)
            .expect("owner is ours");
        // SIGKILL: no release, no last round; the lease has to run out.
        workers[i].kill();
        let survivor = workers[1 - i].id();
        assert!(
            eventually(10, || async {
                owner(&js, &names, "group.users")
                    .await
                    .as_deref()
                    .is_some_and(|o| o.ends_with(&format!("-{survivor}")))
            })
            .await,
            "round {round}: the surviving worker took the group over\n{}",
            logs(s.dir.path())
        );
        workers[i] = spawn_worker(&path);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (totals, inserted) = writers.stop().await;
    assert!(
        converged(&s, 60).await,
        "converged after two take-overs\n{}",
        logs(s.dir.path())
    );
    if std::env::var("SHOW_LOGS").is_ok() {
        eprintln!("{}", logs(s.dir.path()));
    }
    exact(&s, totals, inserted).await;
    drop(workers);
    names.cleanup(&js).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn republished_and_replayed_changes_are_never_applied_twice() {
    let Some(url) = service_url("STRANGLER_TEST_NATS_URL") else {
        return;
    };
    let Some(s) = Sides::new(Pair::PgPg).await else {
        return;
    };
    let names = Names::new();
    let text = broker_config(&s, &names, &url, Some("solo"));
    strangler::sync::SyncEngine::install(&parse(&text).sync)
        .await
        .unwrap();
    // Captured before any engine runs: this is what the relay will publish.
    s.left
        .exec("INSERT INTO users (id, email, name, stock) VALUES (7, 's@x.io', 'Sam', 5)")
        .await;
    let mut store = Store::connect(&s.left_url).await.unwrap();
    let captured = store.read_changes(10, &["users".into()]).await.unwrap();
    assert_eq!(captured.len(), 1);
    let c = &captured[0];
    let payload = serde_json::to_vec(&serde_json::json!({ "changes": captured })).unwrap();
    let id = format!("monolith.{0}-{0}.{1}", c.seq, c.ts_us);
    let subject = format!("{}.users.monolith", names.subject);

    let eng = start(&text).await;
    assert!(converged(&s, 10).await);
    // A later change on the service side wins the row.
    s.right
        .exec("UPDATE accounts SET full_name = 'Samuel', stock = 9 WHERE user_id = 7")
        .await;
    assert!(
        eventually(10, || async {
            s.left.rows("SELECT name FROM users WHERE id = 7").await
                == vec![vec!["Samuel".to_string()]]
        })
        .await
    );
    assert!(converged(&s, 10).await);

    let js = js(&url).await;
    // A relay that crashed after publishing re-publishes under the same id: the stream
    // drops it.
    let ack = js
        .send_publish(
            subject.clone(),
            jetstream::message::PublishMessage::build()
                .payload(payload.clone().into())
                .message_id(id),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(ack.duplicate, "Nats-Msg-Id de-duplication");
    // Past the duplicate window the same change arrives again: its changelog row is gone, so
    // the worker drops it instead of writing the old row back.
    js.send_publish(
        subject,
        jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id("replayed"),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let want = vec![vec!["Samuel".to_string(), "9".to_string()]];
    assert_eq!(
        s.left
            .rows("SELECT name, stock FROM users WHERE id = 7")
            .await,
        want
    );
    assert_eq!(
        s.right
            .rows("SELECT full_name, stock FROM accounts WHERE user_id = 7")
            .await,
        want
    );
    // And the replayed message was acknowledged, not left to be redelivered forever.
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(&names.stream)
        .await
        .unwrap()
        .get_consumer(&format!("{}_users", names.subject))
        .await
        .unwrap();
    let mut consumer = consumer;
    let mut settled = false;
    for _ in 0..100 {
        if consumer.info().await.is_ok_and(|i| i.num_ack_pending == 0) {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "no message left unacknowledged");
    eng.stop().await;
    names.cleanup(&js).await;
}

async fn fence_on(url: &str) {
    let mut store = Store::connect(url).await.unwrap();
    store.install(&[], true).await.unwrap();
    let unit = format!("group.f{}", fastrand::u32(..));
    for (token, want) in [(5, true), (5, true), (3, false), (9, true), (6, false)] {
        store.begin().await.unwrap();
        let got = store.fence(&unit, token).await.unwrap();
        store.finish(got).await.unwrap();
        assert_eq!(got, want, "{url}: token {token}");
    }
}

#[tokio::test]
async fn a_stale_lease_holder_is_fenced_off_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    fence_on(&format!("sqlite://{}", dir.path().join("f.db").display())).await;
    if let Some(pg) = service_url("STRANGLER_TEST_POSTGRES_URL") {
        let (_db, url) = Db::fresh_pg(&pg).await;
        fence_on(&url).await;
    }
    if let Some(my) = service_url("STRANGLER_TEST_MYSQL_URL") {
        let (_db, url) = Db::fresh_my(&my).await;
        fence_on(&url).await;
    }
}

/// `[sync.broker]` added to a config whose capture was installed without it: the engine
/// refuses to start, naming the side and the command that fixes it; installing again does.
#[tokio::test]
async fn broker_mode_over_an_install_without_the_outbox_says_to_install_again() {
    let Some(url) = service_url("STRANGLER_TEST_NATS_URL") else {
        return;
    };
    let Some(s) = Sides::new(Pair::PgMy).await else {
        return;
    };
    let names = Names::new();
    SyncEngine::install(&parse(&s.config("")).sync)
        .await
        .unwrap();
    let text = broker_config(&s, &names, &url, Some("late"));
    let err = SyncEngine::new(parse(&text).sync, None)
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("without the broker outbox") && err.contains("strangler sync install"),
        "{err}"
    );
    SyncEngine::install(&parse(&text).sync).await.unwrap();
    SyncEngine::new(parse(&text).sync, None)
        .check()
        .await
        .unwrap();
}

/// A source transaction larger than a NATS message (1 MB here) is still applied in one
/// target transaction: the other side never shows part of it, even with a round batch far
/// smaller than the transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_larger_than_a_message_arrives_whole() {
    let Some(url) = service_url("STRANGLER_TEST_NATS_URL") else {
        return;
    };
    let Some(s) = Sides::new(Pair::PgMy).await else {
        return;
    };
    let names = Names::new();
    let text = broker_config(&s, &names, &url, Some("big")).replacen(
        "poll = \"20ms\"",
        "poll = \"20ms\"\nbatch = 100",
        1,
    );
    assert!(text.contains("batch = 100"));
    SyncEngine::install(&parse(&text).sync).await.unwrap();
    let eng = start(&text).await;
    let s = Arc::new(s);
    const ROWS: i64 = 4000;
    let watcher = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..600 {
                let n = s.right.count("SELECT count(*) FROM accounts").await;
                seen.insert(n);
                if n == ROWS {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            seen
        })
    };
    let pad = "p".repeat(190);
    let values: Vec<String> = (1..=ROWS)
        .map(|i| format!("({i}, '{pad}@x.io', '{pad}')"))
        .collect();
    s.left
        .exec(&format!(
            "INSERT INTO users (id, email, name) VALUES {}",
            values.join(",")
        ))
        .await;
    let seen = watcher.await.unwrap();
    assert!(
        seen.iter().all(|n| *n == 0 || *n == ROWS),
        "partial transaction visible: counts seen {seen:?}"
    );
    assert!(seen.contains(&ROWS), "{seen:?}");
    assert!(converged(&s, 20).await);
    eng.stop().await;
    names.cleanup(&js(&url).await).await;
}
