//! The client side of the wire, over raw TCP: how the gateway reads requests (its lean path,
//! and hyper for what that path leaves) and frames its responses.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Answers with the request's method, path and body.
struct Echo;

impl Respond for Echo {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let t = ResponseTemplate::new(200).set_body_string(format!(
            "{} {} {}",
            r.method,
            r.url.path(),
            String::from_utf8_lossy(&r.body)
        ));
        if r.url.path() == "/slow" {
            return t.set_delay(Duration::from_millis(600));
        }
        t
    }
}

async fn gateway(extra: &str) -> (MockServer, InProcess) {
    let up = MockServer::start().await;
    Mock::given(any()).respond_with(Echo).mount(&up).await;
    let gw = start(&format!(
        "{}{extra}[upstreams.up]\nurl = \"{}\"\n[[routes]]\nname = \"all\"\nsplit = {{ up = 100 }}\n",
        gateway_section(),
        up.uri()
    ))
    .await;
    (up, gw)
}

/// One response: its head (lower case) and body.
struct Answer {
    head: String,
    body: String,
}

impl Answer {
    fn status(&self) -> u16 {
        self.head.split(' ').nth(1).unwrap().parse().unwrap()
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == name).then(|| v.trim())
        })
    }
}

/// Reads one response from `s`; `pending` keeps bytes read past it. A HEAD response has no
/// body whatever its length says.
async fn read_answer(
    s: &mut TcpStream,
    pending: &mut Vec<u8>,
    head_request: bool,
) -> Option<Answer> {
    let fill = async |s: &mut TcpStream, pending: &mut Vec<u8>| -> Option<()> {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("bytes within 5 s")
            .ok()?;
        (n > 0).then(|| pending.extend_from_slice(&buf[..n]))
    };
    let end = loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        fill(s, pending).await?;
    };
    let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
    pending.drain(..end + 4);
    let mut answer = Answer {
        head,
        body: String::new(),
    };
    if head_request || matches!(answer.status(), 100 | 204 | 304) {
        return Some(answer);
    }
    if answer.field("transfer-encoding") == Some("chunked") {
        let mut body = Vec::new();
        loop {
            let line = loop {
                if let Some(at) = pending.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                fill(s, pending).await?;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&pending[..line]).unwrap(), 16)
                .expect("a chunk size");
            while pending.len() < line + 2 + size + 2 {
                fill(s, pending).await?;
            }
            body.extend_from_slice(&pending[line + 2..line + 2 + size]);
            assert_eq!(&pending[line + 2 + size..line + 4 + size], b"\r\n");
            pending.drain(..line + 4 + size);
            if size == 0 {
                break;
            }
        }
        answer.body = String::from_utf8(body).unwrap();
        return Some(answer);
    }
    let len: usize = answer
        .field("content-length")
        .expect("a length")
        .parse()
        .unwrap();
    while pending.len() < len {
        fill(s, pending).await?;
    }
    answer.body = String::from_utf8(pending.drain(..len).collect()).unwrap();
    Some(answer)
}

/// Whether the gateway closed `s` within `wait`, sending nothing more.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut rest = Vec::new();
    matches!(
        tokio::time::timeout(wait, s.read_to_end(&mut rest)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_each_with_a_date_and_a_length() {
    let (_up, gw) = gateway("").await;
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    s.write_all(
        b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nPOST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyzHEAD /c HTTP/1.1\r\nHost: t\r\n\r\nGET /d?q=1 HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    for (head_request, body) in [
        (false, "GET /a "),
        (false, "POST /b xyz"),
        (true, ""),
        (false, "GET /d "),
    ] {
        let a = read_answer(&mut s, &mut pending, head_request)
            .await
            .expect("answered");
        assert_eq!((a.status(), a.body.as_str()), (200, body), "{}", a.head);
        assert!(
            a.field("date").is_some_and(|d| d.ends_with(" gmt")),
            "{}",
            a.head
        );
        assert_eq!(a.field("via"), Some("1.1 strangler"));
        if head_request {
            assert_eq!(
                a.field("content-length"),
                Some("8"),
                "HEAD keeps GET's length"
            );
        }
    }
    assert!(pending.is_empty(), "no stray bytes after a HEAD response");
    // Connection: close is honoured and said.
    s.write_all(b"GET /e HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut s, &mut pending, false).await.unwrap();
    assert_eq!(a.field("connection"), Some("close"));
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn requests_the_lean_path_leaves_to_hyper_are_served_on_the_same_connection() {
    let (_up, gw) = gateway("").await;
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut s, &mut pending, false).await.unwrap().body,
        "POST /chunked abc"
    );
    s.write_all(
        b"POST /expect HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    )
    .await
    .unwrap();
    let a = read_answer(&mut s, &mut pending, false).await.unwrap();
    assert_eq!(a.status(), 100, "{}", a.head);
    s.write_all(b"ok").await.unwrap();
    assert_eq!(
        read_answer(&mut s, &mut pending, false).await.unwrap().body,
        "POST /expect ok"
    );
    s.write_all(
        b"GET http://t/absolute HTTP/1.1\r\nHost: t\r\n\r\nGET /plain HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(
        read_answer(&mut s, &mut pending, false).await.unwrap().body,
        "GET /absolute "
    );
    assert_eq!(
        read_answer(&mut s, &mut pending, false).await.unwrap().body,
        "GET /plain "
    );
    s.write_all(b"GET /old HTTP/1.0\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let a = read_answer(&mut s, &mut pending, false).await.unwrap();
    assert_eq!((a.status(), a.body.as_str()), (200, "GET /old "));
    assert!(
        closed_within(&mut s, Duration::from_secs(2)).await,
        "HTTP/1.0 without keep-alive closes"
    );
}

#[tokio::test]
async fn a_head_trickled_past_the_head_deadline_is_cut_off_across_parks() {
    let (_up, gw) = gateway("[gateway.timeouts]\nheader_read = \"1s\"\npark = \"50ms\"\n").await;
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    let mut pending = Vec::new();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    read_answer(&mut s, &mut pending, false).await.unwrap();
    // One field every 150 ms: each pause is longer than the park delay, and the head never ends.
    let began = Instant::now();
    s.write_all(b"GET /slow-loris HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let mut cut = false;
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if s.write_all(format!("x-{i}: v\r\n").as_bytes())
            .await
            .is_err()
        {
            cut = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            assert!(matches!(r, Ok(0) | Err(_)), "nothing is answered");
            cut = true;
            break;
        }
    }
    assert!(cut, "the connection was cut");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "cut at the deadline, not later: {:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn a_target_http_cannot_take_is_refused_with_a_problem() {
    let (_up, gw) = gateway("").await;
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    s.write_all(b"GET /a<b HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut pending = Vec::new();
    let a = read_answer(&mut s, &mut pending, false).await.unwrap();
    assert_eq!(a.status(), 400);
    assert!(
        a.body.contains("urn:strangler:problem:bad-request"),
        "{}",
        a.body
    );
    assert_eq!(a.field("connection"), Some("close"));
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn a_drain_finishes_the_request_in_flight_and_says_close() {
    let (_up, gw) = gateway("").await;
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut pending = Vec::new();
    let (drained, a) = tokio::join!(
        gw.running.shutdown(),
        read_answer(&mut s, &mut pending, false)
    );
    assert!(drained);
    let a = a.expect("answered");
    assert_eq!((a.status(), a.body.as_str()), (200, "GET /slow "));
    assert_eq!(a.field("connection"), Some("close"));
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn a_client_that_goes_away_has_its_request_dropped_at_once() {
    // An upstream that reads a request, never answers, and reports when the gateway hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hung_up, mut on_hang_up) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let hung_up = hung_up.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = hung_up.send(Instant::now());
            });
        }
    });
    let gw = start(&format!(
        "{}[upstreams.up]\nurl = \"http://{addr}\"\n[[routes]]\nname = \"all\"\nsplit = {{ up = 100 }}\n",
        gateway_section()
    ))
    .await;
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    s.write_all(b"GET /hang HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = Instant::now();
    drop(s);
    let at = tokio::time::timeout(Duration::from_secs(5), on_hang_up.recv())
        .await
        .expect("the upstream exchange ends with the client, not at the response timeout")
        .unwrap();
    assert!(at.duration_since(left) < Duration::from_secs(2));
}
