//! Control state survives restarts and is shared by gateways on the same control database.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The PostgreSQL URL for tests, or `None` (with the reason printed) when not configured.
/// With `STRANGLER_REQUIRE_SERVICES=1` (set by CI) a missing URL fails instead.
fn postgres_url() -> Option<String> {
    match std::env::var("STRANGLER_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("STRANGLER_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "STRANGLER_TEST_POSTGRES_URL is required when STRANGLER_REQUIRE_SERVICES=1"
            );
            eprintln!("skipped: set STRANGLER_TEST_POSTGRES_URL to run against PostgreSQL");
            None
        }
    }
}

/// A fresh database on the server of `url`, so concurrent tests never share tables.
async fn fresh_postgres_db(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    let name = format!("strangler_ctl_{:016x}", fastrand::u64(..));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/{name}")
}

fn config(control: &str, mono: &str, users: &str) -> String {
    format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ncontrol = \"{control}\"\ncontrol_poll = \"100ms\"\n[upstreams.monolith]\nurl = \"{mono}\"\n[upstreams.users]\nurl = \"{users}\"\n[[routes]]\nname = \"users\"\nsplit = {{ monolith = 90, users = 10 }}\nfallback = \"monolith\"\nsticky = {{ cookie = \"sid\" }}\nrollout = {{ target = \"users\", steps = [25, 100], hold = \"1h\" }}\n"
    )
}

async fn start_with(cfg: &str, dir: &std::path::Path, name: &str) -> strangler::app::Running {
    let path = dir.join(name);
    std::fs::write(&path, cfg).unwrap();
    strangler::app::start(strangler::config::Config::load(&path).unwrap())
        .await
        .expect("gateway starts")
}

#[tokio::test]
async fn restarted_gateway_resumes_its_table_and_rollout() {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &format!("sqlite://{}/control.db", dir.path().display()),
        &mono.uri(),
        &users.uri(),
    );
    let c = client();
    let gw = start_with(&cfg, dir.path(), "a.toml").await;
    let admin = format!("http://{}", gw.admin_addr);
    let r = send(
        &c,
        "POST",
        &format!("{admin}/admin/routes/users/rollout/start"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.json()["status"], "running");
    let before = get(&c, &format!("{admin}/admin/routes"), &[]).await.json();
    assert_eq!(before["routes"][0]["split"]["users"], 25.0);
    assert!(gw.shutdown().await);

    let gw = start_with(&cfg, dir.path(), "a.toml").await;
    let admin = format!("http://{}", gw.admin_addr);
    let after = get(&c, &format!("{admin}/admin/routes"), &[]).await.json();
    assert_eq!(
        after["version"], before["version"],
        "same version, not a new one"
    );
    assert_eq!(after["routes"][0]["split"]["users"], 25.0);
    assert_eq!(
        get(&c, &format!("{admin}/admin/routes/users/rollout"), &[])
            .await
            .json()["status"],
        "running"
    );
    let versions = get(&c, &format!("{admin}/admin/versions"), &[])
        .await
        .json();
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        2,
        "history reloaded from the database"
    );
    // Rollback works straight after a restart.
    let r = send(&c, "POST", &format!("{admin}/admin/rollback"), &[], "").await;
    assert_eq!(r.json()["routes"][0]["split"]["users"], 10.0);
    gw.shutdown().await;
}

async fn second_gateway_follows_within_one_second(control: String) {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&control, &mono.uri(), &users.uri());
    let a = start_with(&cfg, dir.path(), "a.toml").await;
    let b = start_with(&cfg, dir.path(), "b.toml").await;
    let c = client();
    for (changer, watcher, pct) in [(&a, &b, 35), (&b, &a, 55)] {
        let body = format!("{{\"monolith\": {}, \"users\": {pct}}}", 100 - pct);
        let r = send(
            &c,
            "PUT",
            &format!("http://{}/admin/routes/users/split", changer.admin_addr),
            &[],
            &body,
        )
        .await;
        assert_eq!(r.status, 200);
        let version = r.json()["version"].clone();
        let changed = Instant::now();
        loop {
            let seen = get(
                &c,
                &format!("http://{}/admin/routes", watcher.admin_addr),
                &[],
            )
            .await
            .json();
            if seen["version"] == version {
                assert_eq!(seen["routes"][0]["split"]["users"], f64::from(pct));
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(1),
                "watcher still on {} after 1 s",
                seen["version"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Both gateways put the same user on the same upstream.
    for i in 0..100 {
        let key = format!("k{i}");
        let ta = get(
            &c,
            &format!("http://{}/x", a.addr),
            &[("cookie", &format!("sid={key}"))],
        )
        .await
        .target();
        let tb = get(
            &c,
            &format!("http://{}/x", b.addr),
            &[("cookie", &format!("sid={key}"))],
        )
        .await
        .target();
        assert_eq!(ta, tb);
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn second_gateway_on_the_same_sqlite_file_follows_within_one_second() {
    let dir = tempfile::tempdir().unwrap();
    second_gateway_follows_within_one_second(format!(
        "sqlite://{}/shared.db",
        dir.path().display()
    ))
    .await;
}

#[tokio::test]
async fn second_gateway_on_the_same_postgres_follows_within_one_second() {
    let Some(url) = postgres_url() else { return };
    second_gateway_follows_within_one_second(fresh_postgres_db(&url).await).await;
}

#[tokio::test]
async fn unreachable_control_database_refuses_to_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        "postgres://nobody@127.0.0.1:1/none",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, cfg).unwrap();
    let err = match strangler::app::start(strangler::config::Config::load(&path).unwrap()).await {
        Ok(_) => panic!("must not start without its control database"),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("control database (postgres):"), "{err}");
}
