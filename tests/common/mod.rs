//! Shared test harness: in-process gateways, the real binary as a child process, a client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

pub mod tls;

/// Makes the header value of request `i`.
pub type KeyFn = fn(usize) -> String;

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(c)
}

/// A wiremock upstream answering every request with its own name, without keeping a log of
/// requests (the split tests send 100,000).
pub async fn named_upstream(name: &str) -> MockServer {
    let server = MockServer::builder()
        .disable_request_recording()
        .start()
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string(name))
        .mount(&server)
        .await;
    server
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn target(&self) -> String {
        self.headers
            .get("x-strangler-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub async fn send(
    client: &TestClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = client.request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(client: &TestClient, url: &str, headers: &[(&str, &str)]) -> Reply {
    send(client, "GET", url, headers, "").await
}

/// Writes a config file into a fresh temp dir; `{dir}` in the text becomes that dir.
pub fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("strangler.toml");
    std::fs::write(
        &path,
        text.replace("{dir}", &dir.path().display().to_string()),
    )
    .expect("write config");
    (dir, path)
}

/// The gateway section used by most tests: ephemeral ports, a control file in the temp dir.
pub fn gateway_section() -> String {
    "[gateway]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ncontrol = \"sqlite://{dir}/control.db\"\ncontrol_poll = \"100ms\"\n".to_string()
}

pub struct InProcess {
    pub running: strangler::app::Running,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl InProcess {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.addr, path)
    }
    pub fn admin(&self, path: &str) -> String {
        format!("http://{}{}", self.running.admin_addr, path)
    }
}

/// Starts a gateway inside the test process.
pub async fn start(text: &str) -> InProcess {
    let (dir, path) = config_file(text);
    let cfg = strangler::config::Config::load(&path).expect("valid config");
    let running = strangler::app::start(cfg).await.expect("gateway starts");
    InProcess { running, dir, path }
}

/// The real binary running as a child process.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stderr: std::sync::mpsc::Receiver<String>,
}

impl Process {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }
    /// Peak resident memory of the process in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `strangler serve --config PATH` and waits for its "listening" log line.
pub fn spawn_binary(path: &std::path::Path) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["serve", "--config"])
        .arg(path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strangler");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let line =
            match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("gateway did not report listening");
                }
            };
        if line.contains("strangler gateway listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let addr = v["fields"]["addr"].as_str().and_then(|a| a.parse().ok());
            let admin = v["fields"]["admin_addr"]
                .as_str()
                .and_then(|a| a.parse().ok());
            if let (Some(addr), Some(admin)) = (addr, admin) {
                return Process {
                    child,
                    addr,
                    admin,
                    stderr: rx,
                };
            }
        }
    }
}

/// Runs `n` GET requests with `concurrency` workers; returns statuses and targets.
pub async fn load(
    client: &TestClient,
    url: String,
    n: usize,
    concurrency: usize,
    header: Option<(&'static str, KeyFn)>,
) -> Vec<(u16, String)> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                let mut b = Request::get(&url);
                if let Some((name, f)) = header {
                    b = b.header(name, f(i));
                }
                let req = b.body(Full::new(Bytes::new())).expect("request");
                match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let target = resp
                            .headers()
                            .get("x-strangler-target")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let _ = resp.into_body().collect().await;
                        out.push((status, target));
                    }
                    Err(e) => out.push((0, format!("client error: {e}"))),
                }
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for h in handles {
        all.extend(h.await.expect("worker"));
    }
    all
}
