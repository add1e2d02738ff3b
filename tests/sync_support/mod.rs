//! Shared by the sync tests: fresh databases of each kind, a portable schema, SQL helpers
//! that read every value as text, and an engine started on a config.
#![allow(dead_code)]

pub mod proxy;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use strangler::config::Config;
use strangler::sync::SyncEngine;
use strangler::sync::status::SyncStatus;
use tokio_util::sync::CancellationToken;

/// A service URL from the environment; `None` skips (a failure when CI requires services).
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("STRANGLER_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{var} is required when STRANGLER_REQUIRE_SERVICES=1"
            );
            eprintln!("skipped: set {var} to run this test");
            None
        }
    }
}

/// Runs a Python `script` (the system's Python and its `sqlite3` module) on the SQLite file
/// at `path`, with `data` as JSON on its standard input; panics when it fails.
pub fn run_python(script: &str, path: &std::path::Path, data: &impl serde::Serialize) {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(data).unwrap().as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "python's insert failed");
}

/// Kinds of side pairs under test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pair {
    /// Two SQLite files.
    SqliteSqlite,
    /// Two PostgreSQL databases.
    PgPg,
    /// PostgreSQL and MariaDB.
    PgMy,
}

/// A database the test writes to and reads from directly.
pub enum Db {
    /// SQLite file.
    Sqlite(PathBuf),
    /// PostgreSQL.
    Pg(tokio_postgres::Client),
    /// MariaDB.
    My(mysql_async::Pool),
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), fastrand::u64(..))
}

/// Whether a test database named `st_PID_N` belongs to a test process that has ended.
fn orphaned(name: &str) -> bool {
    let pid = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok());
    pid.is_some_and(|p| {
        p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
    })
}

/// Drops, once per test process, the databases that ended test processes left behind
/// (every test makes fresh ones; on a long-lived machine they pile up in the hundreds).
async fn drop_orphans_pg(client: &tokio_postgres::Client) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let Ok(rows) = client
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'st\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for r in rows {
        let name: String = r.get(0);
        if orphaned(&name) {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

async fn drop_orphans_my(c: &mut mysql_async::Conn) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let Ok(names) = c
        .query::<String, _>(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'st\\_%'",
        )
        .await
    else {
        return;
    };
    for name in names {
        if orphaned(&name) {
            let _ = c
                .query_drop(format!("DROP DATABASE IF EXISTS {name}"))
                .await;
        }
    }
}

impl Db {
    /// A fresh PostgreSQL database; returns it and its URL.
    pub async fn fresh_pg(base: &str) -> (Db, String) {
        let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
            .await
            .expect("connect postgres");
        tokio::spawn(conn);
        drop_orphans_pg(&client).await;
        let name = unique("st");
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
        (Db::pg(&url).await, url)
    }

    /// Connects to PostgreSQL at `url`.
    pub async fn pg(url: &str) -> Db {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect postgres");
        tokio::spawn(conn);
        Db::Pg(client)
    }

    /// A fresh MariaDB database; returns it and its URL.
    pub async fn fresh_my(base: &str) -> (Db, String) {
        let pool = mysql_async::Pool::new(base);
        let name = unique("st");
        let mut c = pool.get_conn().await.expect("connect mariadb");
        drop_orphans_my(&mut c).await;
        c.query_drop(format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        drop(c);
        let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
        (Db::My(mysql_async::Pool::new(url.as_str())), url)
    }

    /// A fresh SQLite file in `dir`; returns it and its URL.
    pub fn fresh_sqlite(dir: &std::path::Path, name: &str) -> (Db, String) {
        let path = dir.join(format!("{name}.db"));
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        (
            Db::Sqlite(path.clone()),
            format!("sqlite://{}", path.display()),
        )
    }

    fn sqlite(path: &PathBuf) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(path).unwrap();
        c.busy_timeout(Duration::from_secs(30)).unwrap();
        c
    }

    /// Runs statements (one transaction when several are given).
    pub async fn exec(&self, sql: &str) {
        self.try_exec(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs statements, returning the error text.
    pub async fn try_exec(&self, sql: &str) -> Result<(), String> {
        match self {
            Db::Sqlite(p) => {
                let (p, sql) = (p.clone(), sql.to_string());
                tokio::task::spawn_blocking(move || {
                    Db::sqlite(&p)
                        .execute_batch(&sql)
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap()
            }
            Db::Pg(c) => c.batch_execute(sql).await.map_err(|e| e.to_string()),
            Db::My(p) => {
                let mut c = p.get_conn().await.map_err(|e| e.to_string())?;
                c.query_drop(sql).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Every row of a query, each value as text (`NULL` for null).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        match self {
            Db::Sqlite(p) => {
                let (p, sql) = (p.clone(), sql.to_string());
                tokio::task::spawn_blocking(move || {
                    let c = Db::sqlite(&p);
                    let mut st = c.prepare(&sql).unwrap();
                    let n = st.column_count();
                    st.query_map([], |r| {
                        Ok((0..n)
                            .map(|i| match r.get_ref(i).unwrap() {
                                rusqlite::types::ValueRef::Null => "NULL".to_string(),
                                rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                                rusqlite::types::ValueRef::Real(f) => f.to_string(),
                                rusqlite::types::ValueRef::Text(t) => {
                                    String::from_utf8_lossy(t).to_string()
                                }
                                rusqlite::types::ValueRef::Blob(b) => format!("{b:?}"),
                            })
                            .collect())
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
                })
                .await
                .unwrap()
            }
            Db::Pg(c) => c
                .simple_query(sql)
                .await
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                        (0..r.len())
                            .map(|i| r.get(i).unwrap_or("NULL").to_string())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect(),
            Db::My(p) => {
                let mut c = p.get_conn().await.unwrap();
                let rows: Vec<mysql_async::Row> = c.query(sql).await.unwrap();
                rows.into_iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| match r.as_ref(i).unwrap() {
                                mysql_async::Value::NULL => "NULL".to_string(),
                                mysql_async::Value::Bytes(b) => {
                                    String::from_utf8_lossy(b).to_string()
                                }
                                other => other.as_sql(true),
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// One number from a query.
    pub async fn count(&self, sql: &str) -> i64 {
        self.rows(sql).await[0][0].parse().unwrap()
    }
}

/// Left side tables (the monolith).
pub const LEFT_SCHEMA: &str = "
CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR(200), name VARCHAR(200),
    stock INTEGER NOT NULL DEFAULT 0, nick VARCHAR(100), score INTEGER);
CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, qty INTEGER NOT NULL,
    FOREIGN KEY (order_id) REFERENCES orders (id));";

/// Right side tables (the service).
pub const RIGHT_SCHEMA: &str = "
CREATE TABLE accounts (user_id INTEGER PRIMARY KEY, email VARCHAR(200), full_name VARCHAR(200),
    stock INTEGER NOT NULL DEFAULT 0, nick VARCHAR(100), score INTEGER);
CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, qty INTEGER NOT NULL,
    FOREIGN KEY (order_id) REFERENCES orders (id));";

/// Two fresh databases with the schema, and their URLs.
pub struct Sides {
    /// The monolith.
    pub left: Db,
    /// The service.
    pub right: Db,
    /// The monolith's URL.
    pub left_url: String,
    /// The service's URL.
    pub right_url: String,
    /// Holds SQLite files.
    pub dir: tempfile::TempDir,
}

impl Sides {
    /// Fresh sides of `pair`; `None` when its services are not available.
    pub async fn new(pair: Pair) -> Option<Sides> {
        let dir = tempfile::tempdir().unwrap();
        let ((left, left_url), (right, right_url)) = match pair {
            Pair::SqliteSqlite => (
                Db::fresh_sqlite(dir.path(), "monolith"),
                Db::fresh_sqlite(dir.path(), "service"),
            ),
            Pair::PgPg => {
                let base = service_url("STRANGLER_TEST_POSTGRES_URL")?;
                (Db::fresh_pg(&base).await, Db::fresh_pg(&base).await)
            }
            Pair::PgMy => {
                let pg = service_url("STRANGLER_TEST_POSTGRES_URL")?;
                let my = service_url("STRANGLER_TEST_MYSQL_URL")?;
                (Db::fresh_pg(&pg).await, Db::fresh_my(&my).await)
            }
        };
        left.exec(LEFT_SCHEMA).await;
        right.exec(RIGHT_SCHEMA).await;
        Some(Sides {
            left,
            right,
            left_url,
            right_url,
            dir,
        })
    }

    /// A config over these sides; `users_extra` is added to the users entity.
    pub fn config(&self, users_extra: &str) -> String {
        config_for(
            &self.left_url,
            &self.right_url,
            users_extra,
            &self.dir.path().join("control.db"),
        )
    }
}

/// The test config text for two side URLs.
pub fn config_for(left: &str, right: &str, users_extra: &str, control: &std::path::Path) -> String {
    format!(
        r#"
[gateway]
control = "sqlite://{control}"

[sync]
poll = "20ms"

[sides.monolith]
database = "{left}"

[sides.users]
database = "{right}"

[[entities]]
name = "users"
monolith = {{ table = "users", key = ["id"] }}
users = {{ table = "accounts", key = ["user_id"] }}
columns = {{ id = "user_id", email = "email", name = "full_name", stock = "stock", nick = "nick", score = "score" }}
authority = "monolith"
lag_tolerance = "2s"
{users_extra}

[[entities]]
name = "orders"
monolith = {{ table = "orders", key = ["id"] }}
users = {{ table = "orders", key = ["id"] }}
columns = {{ id = "id", total = "total" }}

[[entities]]
name = "items"
monolith = {{ table = "items", key = ["id"] }}
users = {{ table = "items", key = ["id"] }}
columns = {{ id = "id", order_id = "order_id", qty = "qty" }}
"#,
        control = control.display()
    )
}

/// Parses config text as if it came from `sync.toml`.
pub fn parse(text: &str) -> Config {
    Config::parse(std::path::Path::new("sync.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

/// A running engine.
pub struct Running {
    /// Its status.
    pub status: Arc<SyncStatus>,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the engine and waits for it.
    pub async fn stop(self) {
        self.token.cancel();
        let _ = self.task.await;
    }
}

/// Installs capture and starts an engine on `text`.
pub async fn start(text: &str) -> Running {
    start_with(text, |e| e).await
}

/// Like [`start`], letting the caller adjust the engine (custom rules).
pub async fn start_with(text: &str, adjust: impl FnOnce(SyncEngine) -> SyncEngine) -> Running {
    let cfg = parse(text);
    SyncEngine::install(&cfg.sync).await.expect("install");
    let engine = adjust(SyncEngine::new(cfg.sync.clone(), None));
    engine.check().await.expect("check");
    let status = engine.status();
    let token = CancellationToken::new();
    let task = tokio::spawn(engine.run(token.clone()));
    Running {
        status,
        token,
        task,
    }
}

/// Waits up to `secs` seconds for `f` to hold, polling every 20 ms.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Users rows on both sides in one shape: id, email, name, stock, nick, score.
pub async fn users(s: &Sides) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    (
        s.left
            .rows("SELECT id, email, name, stock, nick, score FROM users ORDER BY id")
            .await,
        s.right
            .rows("SELECT user_id, email, full_name, stock, nick, score FROM accounts ORDER BY user_id")
            .await,
    )
}

/// Waits until both sides' users, orders and items are identical and both changelogs are empty.
pub async fn converged(s: &Sides, secs: u64) -> bool {
    eventually(secs, || async {
        let (l, r) = users(s).await;
        if l != r {
            return false;
        }
        for t in [
            "SELECT id, total FROM orders ORDER BY id",
            "SELECT id, order_id, qty FROM items ORDER BY id",
        ] {
            if s.left.rows(t).await != s.right.rows(t).await {
                return false;
            }
        }
        s.left
            .count("SELECT count(*) FROM _strangler_changes")
            .await
            == 0
            && s.right
                .count("SELECT count(*) FROM _strangler_changes")
                .await
                == 0
    })
    .await
}

/// Sum of changes applied in both directions for an entity, from the engine's status.
pub fn applied(status: &SyncStatus, entity: &str) -> u64 {
    status.snapshot()["directions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["entity"] == entity)
        .map(|d| d["applied"].as_u64().unwrap())
        .sum()
}

/// Background writers on both sides: inserts of their own keys and increments of 10 shared
/// counters (ids 0..10, seeded by [`Writers::seed`]), until stopped.
pub struct Writers {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<(Vec<i64>, i64)>>,
}

impl Writers {
    /// Seeds the shared counter rows on the left side.
    pub async fn seed(s: &Sides) {
        let mut seed = String::new();
        for k in 0..10 {
            seed.push_str(&format!(
                "INSERT INTO users (id, email, name, stock) VALUES ({k}, 'c{k}@x.io', 'counter', 0);"
            ));
        }
        s.left.exec(&seed).await;
    }

    /// Starts `per_side` writers on each side, pausing `gap` between writes.
    pub fn start(s: &Arc<Sides>, per_side: i64, gap: Duration) -> Writers {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut handles = Vec::new();
        for side in 0..2i64 {
            for w in 0..per_side {
                let (s, stop) = (s.clone(), stop.clone());
                handles.push(tokio::spawn(async move {
                    let (db, table, key, name) = if side == 0 {
                        (&s.left, "users", "id", "name")
                    } else {
                        (&s.right, "accounts", "user_id", "full_name")
                    };
                    let mut inc = vec![0i64; 10];
                    let mut inserted = 0;
                    let mut op: i64 = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let id = 1_000_000 * (1 + side * per_side + w) + op;
                        let (sql, counter) = if op % 2 == 0 {
                            (format!("INSERT INTO {table} ({key}, email, {name}) VALUES ({id}, 'w@x.io', 'w')"), None)
                        } else {
                            let k = (op / 2 + w) % 10;
                            (format!("UPDATE {table} SET stock = stock + 1 WHERE {key} = {k}"), Some(k))
                        };
                        if db.try_exec(&sql).await.is_ok() {
                            match counter {
                                Some(k) => inc[k as usize] += 1,
                                None => inserted += 1,
                            }
                            op += 1;
                        }
                        tokio::time::sleep(gap).await;
                    }
                    (inc, inserted)
                }));
            }
        }
        Writers { stop, handles }
    }

    /// Stops the writers; returns the increments per counter and the rows inserted.
    pub async fn stop(self) -> ([i64; 10], i64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = [0i64; 10];
        let mut rows = 0;
        for h in self.handles {
            let (inc, n) = h.await.unwrap();
            for (t, i) in total.iter_mut().zip(inc) {
                *t += i;
            }
            rows += n;
        }
        (total, rows)
    }
}

/// Checks both sides hold every counter increment exactly once and every inserted row once.
pub async fn exact(s: &Sides, totals: [i64; 10], inserted: i64) {
    let (left, right) = users(s).await;
    assert_eq!(left, right, "both sides identical row by row");
    for (k, t) in totals.iter().enumerate() {
        assert_eq!(
            left[k][3],
            t.to_string(),
            "counter {k}: each increment exactly once"
        );
    }
    assert_eq!(left.len() as i64, 10 + inserted, "every inserted row, once");
}

/// A child process killed when dropped, so a failing test leaves no engine running.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}
