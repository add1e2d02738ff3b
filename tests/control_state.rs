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

/// A TCP proxy to `target` whose link can be cut and restored, for injecting a network
/// partition between the gateway and its control database.
struct CutLink {
    addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl CutLink {
    async fn start(target: std::net::SocketAddr) -> CutLink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue; // link down: drop the connection at once
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        CutLink { addr, up }
    }
    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[tokio::test]
async fn rollback_works_while_the_control_database_is_unreachable_and_is_persisted_after() {
    let Some(url) = postgres_url() else { return };
    let db_url = fresh_postgres_db(&url).await;
    // Route the gateway's control connection through a link we can cut.
    let host_port = db_url
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    let target: std::net::SocketAddr = tokio::net::lookup_host(host_port.as_str())
        .await
        .unwrap()
        .next()
        .unwrap();
    let link = CutLink::start(target).await;
    let proxied = db_url.replace(&host_port, &link.addr.to_string());
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with(
        &config(&proxied, &mono.uri(), &users.uri()),
        dir.path(),
        "g.toml",
    )
    .await;
    let c = client();
    let admin = format!("http://{}", gw.admin_addr);
    assert_eq!(
        send(
            &c,
            "PUT",
            &format!("{admin}/admin/routes/users/split"),
            &[],
            r#"{"monolith": 40, "users": 60}"#
        )
        .await
        .status,
        200
    );

    link.set(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // An ordinary change needs the database and is refused...
    let r = send(
        &c,
        "PUT",
        &format!("{admin}/admin/routes/users/split"),
        &[],
        r#"{"monolith": 30, "users": 70}"#,
    )
    .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // ...but a rollback takes effect at once.
    let r = send(
        &c,
        "POST",
        &format!("{admin}/admin/routes/users/rollback"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["routes"][0]["split"]["monolith"], 100.0);
    for i in 0..50 {
        let t = get(
            &c,
            &format!("http://{}/x", gw.addr),
            &[("cookie", &format!("sid=k{i}"))],
        )
        .await
        .target();
        assert_eq!(t, "monolith");
    }

    link.set(true);
    let (client_db, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = client_db
            .query_one(
                "SELECT reason, spec FROM strangler_route_versions ORDER BY version DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        let reason: String = row.get(0);
        if reason.contains("persisted after a control database outage") {
            let spec: serde_json::Value = serde_json::from_str(&row.get::<_, String>(1)).unwrap();
            let spans = spec["routes"]["users"]["spans"].as_array().unwrap();
            assert!(spans.iter().all(|s| s["upstream"] == "monolith"), "{spec}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollback was not persisted after the outage; newest: {reason}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The gateway kept its rollback rather than adopting the database's older table.
    let routes = get(&c, &format!("{admin}/admin/routes"), &[]).await.json();
    assert_eq!(routes["routes"][0]["split"]["monolith"], 100.0);
    gw.shutdown().await;
}
