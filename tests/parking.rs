//! Parked keep-alive connections: an idle client connection drops its HTTP state and picks
//! up again, over raw TCP so that each test controls exactly which bytes go out when.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Long enough for a connection to be parked with `park = "50ms"`.
const QUIET: Duration = Duration::from_millis(400);

/// Answers with the request's method, path and body, so a test sees what arrived.
struct Echo;

impl Respond for Echo {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_string(format!(
            "{} {} {}",
            r.method,
            r.url.path(),
            String::from_utf8_lossy(&r.body)
        ))
    }
}

async fn echo_upstream() -> MockServer {
    let up = MockServer::start().await;
    Mock::given(any()).respond_with(Echo).mount(&up).await;
    up
}

fn config(upstream: &str) -> String {
    format!(
        "{}[gateway.timeouts]\npark = \"50ms\"\n[upstreams.up]\nurl = \"{upstream}\"\n[[routes]]\nname = \"all\"\nsplit = {{ up = 100 }}\n",
        gateway_section()
    )
}

/// Reads one response: its status and body (the gateway always sends a length here).
async fn response(s: &mut TcpStream, pending: &mut Vec<u8>) -> Option<(u16, String)> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_string();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a content-length");
            while pending.len() < end + 4 + len {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                pending.extend_from_slice(&buf[..n]);
            }
            let body = String::from_utf8_lossy(&pending[end + 4..end + 4 + len]).to_string();
            pending.drain(..end + 4 + len);
            return Some((status, body));
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// A client connection that has made one request and read its answer.
async fn after_one_request(gw: &InProcess) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(get("/first").as_bytes()).await.unwrap();
    assert_eq!(response(&mut s, &mut pending).await.unwrap().0, 200);
    (s, pending)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

async fn parked_gauge(gw: &InProcess) -> f64 {
    let text = String::from_utf8(get_metrics(gw).await).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("strangler_gateway_connections_parked "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

async fn get_metrics(gw: &InProcess) -> Vec<u8> {
    common::get(&client(), &gw.admin("/metrics"), &[])
        .await
        .body
        .to_vec()
}

#[tokio::test]
async fn an_idle_connection_is_parked_and_serves_its_next_requests() {
    let up = echo_upstream().await;
    let gw = start(&config(&up.uri())).await;
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    let mut pending = Vec::new();
    for i in 0..3 {
        s.write_all(get(&format!("/r{i}")).as_bytes())
            .await
            .unwrap();
        let (status, body) = response(&mut s, &mut pending).await.expect("answered");
        assert_eq!(
            (status, body.as_str()),
            (200, format!("GET /r{i} ").as_str())
        );
        tokio::time::sleep(QUIET).await;
        assert!(
            parked_gauge(&gw).await >= 1.0,
            "the quiet connection is parked"
        );
    }
    // Two requests in one write after a park: both answered, in order.
    s.write_all(format!("{}{}", get("/a"), get("/b")).as_bytes())
        .await
        .unwrap();
    assert_eq!(response(&mut s, &mut pending).await.unwrap().1, "GET /a ");
    assert_eq!(response(&mut s, &mut pending).await.unwrap().1, "GET /b ");
}

#[tokio::test]
async fn a_head_split_across_a_park_is_read_whole() {
    let up = echo_upstream().await;
    let gw = start(&config(&up.uri())).await;
    let (mut s, mut pending) = after_one_request(&gw).await;
    // Half a head, a quiet spell long enough to park, then the rest.
    s.write_all(b"GET /sec").await.unwrap();
    tokio::time::sleep(QUIET).await;
    s.write_all(b"ond HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        response(&mut s, &mut pending).await.expect("answered"),
        (200, "GET /second ".to_string())
    );
}

#[tokio::test]
async fn an_upload_in_progress_is_never_parked() {
    let up = echo_upstream().await;
    let gw = start(&config(&up.uri())).await;
    let (mut s, mut pending) = after_one_request(&gw).await;
    // A body that arrives in two parts with a quiet spell between them.
    s.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        .await
        .unwrap();
    tokio::time::sleep(QUIET).await;
    s.write_all(b"world").await.unwrap();
    assert_eq!(
        response(&mut s, &mut pending).await.expect("answered"),
        (200, "POST /up helloworld".to_string())
    );
    s.write_all(get("/after").as_bytes()).await.unwrap();
    assert_eq!(
        response(&mut s, &mut pending).await.unwrap().1,
        "GET /after "
    );
}

#[tokio::test]
async fn an_unread_request_body_closes_the_connection_instead_of_being_parsed() {
    // The upstream is gone: the 502 goes out before the client's body was read.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = start(&config(&format!("http://{dead}"))).await;
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nstart")
        .await
        .unwrap();
    assert_eq!(
        response(&mut s, &mut pending).await.expect("answered").0,
        502
    );
    tokio::time::sleep(QUIET).await;
    // The rest of the body looks like a request; it must never be answered as one.
    let _ = s.write_all(get("/smuggled").as_bytes()).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the connection is closed, nothing more is sent: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test]
async fn a_drain_closes_parked_connections_at_once() {
    let up = echo_upstream().await;
    let cfg = config(&up.uri()).replace("control_poll", "drain_grace = \"20s\"\ncontrol_poll");
    let gw = start(&cfg).await;
    let mut socks = Vec::new();
    for _ in 0..3 {
        socks.push(after_one_request(&gw).await.0);
    }
    tokio::time::sleep(QUIET).await;
    let t = std::time::Instant::now();
    assert!(gw.running.shutdown().await, "drained in time");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "parked connections do not hold up a drain ({:?})",
        t.elapsed()
    );
    for mut s in socks {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("closed");
        assert!(matches!(n, Ok(0) | Err(_)), "closed by the drain");
    }
}

/// A parked connection is closed once idle for `timeouts.header_read` in all (the park delay
/// counts towards it), and the close is counted.
#[tokio::test]
async fn a_parked_connection_is_closed_at_the_keep_alive_limit() {
    let up = echo_upstream().await;
    let cfg = config(&up.uri()).replace("park = ", "header_read = \"600ms\"\npark = ");
    let gw = start(&cfg).await;
    let (mut s, _) = after_one_request(&gw).await;
    let idle = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed at the keep-alive limit");
    assert!(matches!(n, Ok(0) | Err(_)), "closed, nothing sent");
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(2000),
        "closed {took:?} after the response"
    );
    let text = String::from_utf8(get_metrics(&gw).await).unwrap();
    assert!(
        text.contains("strangler_gateway_connections_idle_closed_total{protocol=\"http1\"} 1"),
        "{text}"
    );
}
