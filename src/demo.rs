//! `strangler demo`: a self-contained run on the embedded SQLite default. It starts two
//! small upstreams (a "monolith" and a "users" service), puts the gateway in front of them,
//! and walks through a migration step by step over real HTTP, printing what it sees.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A demo failure.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Local I/O failed.
    #[error("demo: {0}")]
    Io(#[from] std::io::Error),
    /// The gateway did not start.
    #[error("demo: {0}")]
    App(#[from] crate::app::AppError),
    /// An HTTP exchange failed.
    #[error("demo: request failed: {0}")]
    Http(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Something behaved differently from what the demo shows.
    #[error("demo: unexpected result: {0}")]
    Unexpected(String),
}

/// Where an upstream keeps its users: SQLite file, table, key column, name column.
type Store = (std::path::PathBuf, &'static str, &'static str, &'static str);

/// A PUT/POST /api/users/ID writes `{"name": ...}` into the upstream's own database.
fn save(store: &Store, path: &str, body: &[u8]) -> Result<(), String> {
    let (file, table, key, name_col) = store;
    let Some(id) = path
        .strip_prefix("/api/users/")
        .and_then(|i| i.parse::<i64>().ok())
    else {
        return Ok(());
    };
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let name = v["name"].as_str().unwrap_or("").to_string();
    let c = rusqlite::Connection::open(file).map_err(|e| e.to_string())?;
    c.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    c.execute(
        &format!(
            "INSERT INTO {table} ({key}, name_text) VALUES (?1, ?2) ON CONFLICT ({key}) DO UPDATE SET name_text = excluded.name_text"
        )
        .replace("name_text", name_col),
        rusqlite::params![id, name],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

async fn upstream(name: &'static str, store: Store) -> Result<SocketAddr, DemoError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let store = std::sync::Arc::new(store);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        let write =
                            req.method() == http::Method::PUT || req.method() == http::Method::POST;
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let mut status = http::StatusCode::OK;
                        if write {
                            let r = tokio::task::spawn_blocking(move || save(&store, &path, &body))
                                .await;
                            if !matches!(r, Ok(Ok(()))) {
                                status = http::StatusCode::INTERNAL_SERVER_ERROR;
                            }
                        }
                        let body = format!("{{\"served_by\":\"{name}\"}}");
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = status;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

type DemoClient = Client<HttpConnector, Full<Bytes>>;

async fn call(
    c: &DemoClient,
    method: &str,
    url: &str,
    header: Option<(&str, &str)>,
    body: &str,
) -> Result<(u16, String, String), DemoError> {
    let mut b = Request::builder().method(method).uri(url);
    if let Some((k, v)) = header {
        b = b.header(k, v);
    }
    let req = b
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| DemoError::Http(e.into()))?;
    let resp = c
        .request(req)
        .await
        .map_err(|e| DemoError::Http(e.into()))?;
    let status = resp.status().as_u16();
    let target = resp
        .headers()
        .get("x-strangler-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| DemoError::Http(e.into()))?
        .to_bytes();
    Ok((status, target, String::from_utf8_lossy(&body).into_owned()))
}

async fn tally(
    c: &DemoClient,
    url: &str,
    users: usize,
) -> Result<HashMap<String, String>, DemoError> {
    let mut out = HashMap::new();
    for i in 0..users {
        let key = format!("user-{i}");
        let (_, target, _) = call(c, "GET", url, Some(("x-user-id", &key)), "").await?;
        out.insert(key, target);
    }
    Ok(out)
}

fn share(t: &HashMap<String, String>, name: &str) -> f64 {
    t.values().filter(|v| *v == name).count() as f64 * 100.0 / t.len() as f64
}

/// Runs the demonstration and prints what happens.
pub async fn run() -> Result<(), DemoError> {
    let dir = std::env::temp_dir().join(format!("strangler-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (mono_db, svc_db) = (dir.join("monolith.db"), dir.join("users.db"));
    for (file, ddl) in [
        (
            &mono_db,
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
        ),
        (
            &svc_db,
            "CREATE TABLE accounts (user_id INTEGER PRIMARY KEY, full_name TEXT)",
        ),
    ] {
        rusqlite::Connection::open(file)
            .and_then(|c| c.execute_batch(ddl))
            .map_err(|e| DemoError::Unexpected(e.to_string()))?;
    }
    let mono = upstream("monolith", (mono_db.clone(), "users", "id", "name")).await?;
    let users = upstream(
        "users",
        (svc_db.clone(), "accounts", "user_id", "full_name"),
    )
    .await?;
    let path = dir.join("demo.toml");
    std::fs::write(
        &path,
        format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ncontrol = \"sqlite://{}/control.db\"\n\n[upstreams.monolith]\nurl = \"http://{mono}\"\n\n[upstreams.users]\nurl = \"http://{users}\"\n\n[[routes]]\nname = \"users\"\npath_prefix = \"/api/users\"\nsplit = {{ monolith = 90, users = 10 }}\nsticky = {{ header = \"x-user-id\" }}\nfallback = \"monolith\"\nentity = \"users\"\npins = [{{ header = \"x-canary\", value = \"always\", upstream = \"users\" }}]\n\n[sides.monolith]\ndatabase = \"sqlite://{}\"\n\n[sides.users]\ndatabase = \"sqlite://{}\"\n\n[[entities]]\nname = \"users\"\nmonolith = {{ table = \"users\", key = [\"id\"] }}\nusers = {{ table = \"accounts\", key = [\"user_id\"] }}\ncolumns = {{ id = \"user_id\", name = \"full_name\" }}\n",
            dir.display(),
            mono_db.display(),
            svc_db.display()
        ),
    )?;
    let cfg =
        crate::config::Config::load(&path).map_err(|e| DemoError::Unexpected(e.to_string()))?;
    crate::sync::SyncEngine::install(&cfg.sync)
        .await
        .map_err(|e| DemoError::Unexpected(e.to_string()))?;
    let gw = crate::app::start(cfg).await?;
    let c: DemoClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let url = format!("http://{}/api/users/1", gw.addr);
    let admin = format!("http://{}", gw.admin_addr);
    println!(
        "strangler demo: gateway on {}, admin on {}, monolith on {mono}, users service on {users}",
        gw.addr, gw.admin_addr
    );
    println!("control state: {}/control.db (SQLite)\n", dir.display());

    let before = tally(&c, &url, 2000).await?;
    println!(
        "1. split 90/10, sticky on x-user-id: 2000 users -> users service {:.1} %, monolith {:.1} %",
        share(&before, "users"),
        share(&before, "monolith")
    );

    let first = before.get("user-42").cloned().unwrap_or_default();
    for _ in 0..200 {
        if call(&c, "GET", &url, Some(("x-user-id", "user-42")), "")
            .await?
            .1
            != first
        {
            return Err(DemoError::Unexpected("user-42 changed upstream".into()));
        }
    }
    println!("2. user-42 sent 200 requests: every one went to {first}");

    let (_, pinned, _) = call(&c, "GET", &url, Some(("x-canary", "always")), "").await?;
    println!("3. a request with x-canary: always is pinned to {pinned}");

    let (status, _, _) = call(
        &c,
        "PUT",
        &format!("{admin}/admin/routes/users/split"),
        None,
        r#"{"monolith": 75, "users": 25}"#,
    )
    .await?;
    let after = tally(&c, &url, 2000).await?;
    let to_users = before
        .iter()
        .filter(|(k, v)| *v == "monolith" && after[*k] == "users")
        .count();
    let back = before
        .iter()
        .filter(|(k, v)| *v == "users" && after[*k] == "monolith")
        .count();
    println!(
        "4. PUT split 75/25 (HTTP {status}): users service now {:.1} %; {to_users} users moved monolith -> users, {back} moved back (must be 0)",
        share(&after, "users")
    );
    if back != 0 {
        return Err(DemoError::Unexpected(
            "raising the share moved users back".into(),
        ));
    }

    let (status, _, body) = call(&c, "POST", &format!("{admin}/admin/rollback"), None, "").await?;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    println!(
        "5. POST /admin/rollback (HTTP {status}): version {} \"{}\", users share {} %",
        v["version"],
        v["reason"].as_str().unwrap_or(""),
        v["routes"][0]["split"]["users"]
    );

    let (status, side, _) = call(
        &c,
        "POST",
        &format!("http://{}/api/users/7", gw.addr),
        Some(("x-user-id", "user-7")),
        "{}",
    )
    .await?;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (_, _, tap) = call(&c, "GET", &format!("{admin}/admin/tap"), None, "").await?;
    println!("6. POST /api/users/7 went to {side} (HTTP {status}); write tap saw: {tap}");

    // 7. Writes through the gateway land in both databases; the sync engine converges them.
    let started = std::time::Instant::now();
    let mut sides: HashMap<String, usize> = HashMap::new();
    for i in 1..=200 {
        let (_, side, _) = call(
            &c,
            "PUT",
            &format!("http://{}/api/users/{i}", gw.addr),
            Some(("x-user-id", &format!("user-{i}"))),
            &format!("{{\"name\": \"User {i}\"}}"),
        )
        .await?;
        *sides.entry(side).or_default() += 1;
    }
    let count = |file: &std::path::Path, sql: &str| -> Result<Vec<(i64, String)>, DemoError> {
        let c =
            rusqlite::Connection::open(file).map_err(|e| DemoError::Unexpected(e.to_string()))?;
        let mut st = c
            .prepare(sql)
            .map_err(|e| DemoError::Unexpected(e.to_string()))?;
        let out = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .map_err(|e| DemoError::Unexpected(e.to_string()))?;
        Ok(out)
    };
    let (l_sql, r_sql) = (
        "SELECT id, name FROM users ORDER BY id",
        "SELECT user_id, full_name FROM accounts ORDER BY user_id",
    );
    let mut converged = false;
    for _ in 0..500 {
        let (l, r) = (count(&mono_db, l_sql)?, count(&svc_db, r_sql)?);
        if l.len() == 200 && l == r {
            converged = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if !converged {
        return Err(DemoError::Unexpected(
            "the databases did not converge in 5 s".into(),
        ));
    }
    println!(
        "7. 200 users written through the gateway ({} to the monolith, {} to the users service); both databases hold all 200 identical rows after {} ms",
        sides.get("monolith").copied().unwrap_or(0),
        sides.get("users").copied().unwrap_or(0),
        started.elapsed().as_millis()
    );
    // 8. A write that bypasses the gateway is captured in the database and synced too.
    rusqlite::Connection::open(&svc_db)
        .and_then(|c| {
            c.execute(
                "UPDATE accounts SET full_name = 'Renamed in the service' WHERE user_id = 3",
                [],
            )
        })
        .map_err(|e| DemoError::Unexpected(e.to_string()))?;
    let mut seen = false;
    for _ in 0..500 {
        if count(&mono_db, "SELECT id, name FROM users WHERE id = 3")?
            .first()
            .is_some_and(|(_, n)| n == "Renamed in the service")
        {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    if !seen {
        return Err(DemoError::Unexpected(
            "a direct service write did not reach the monolith".into(),
        ));
    }
    let (_, _, sync) = call(&c, "GET", &format!("{admin}/admin/sync"), None, "").await?;
    let v: serde_json::Value = serde_json::from_str(&sync).unwrap_or_default();
    println!(
        "8. a direct UPDATE in the users service database reached the monolith database; /admin/sync:"
    );
    for d in v["directions"].as_array().into_iter().flatten() {
        println!(
            "     {} -> {}: {} changes applied, lag {} s, {}",
            d["from"].as_str().unwrap_or(""),
            d["to"].as_str().unwrap_or(""),
            d["applied"],
            d["lag_seconds"],
            d["state"].as_str().unwrap_or("")
        );
    }

    let (_, _, versions) = call(&c, "GET", &format!("{admin}/admin/versions"), None, "").await?;
    let v: serde_json::Value = serde_json::from_str(&versions).unwrap_or_default();
    println!("\nroute table versions (newest first):");
    for ver in v["versions"].as_array().into_iter().flatten() {
        println!(
            "  v{:<3} {:<40} users share {} %",
            ver["version"],
            ver["reason"].as_str().unwrap_or(""),
            ver["splits"]["users"]["users"]
        );
    }
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("\ndemo finished: every step behaved as a migration needs.");
    Ok(())
}
