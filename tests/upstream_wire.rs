//! The gateway's HTTP/1.1 client against upstreams that frame their responses every way
//! RFC 9112 allows (and some ways it does not): each response reaches the client whole or
//! not at all, and a connection is used again only when its framing says it may be.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw upstream: for each request it writes what `answer` gives for the request's path,
/// and closes the connection when the answer says so. It records every request as received
/// and counts connections.
struct Raw {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

type Answer = fn(&str) -> (Vec<u8>, bool);

/// Reads one request (head and body) from `s`, with `pending` holding bytes read earlier.
async fn read_request(s: &mut TcpStream, pending: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end + 4]).to_string();
            let lower = head.to_ascii_lowercase();
            let path = head.split(' ').nth(1).unwrap_or("/").to_string();
            let body_end = if let Some(cl) = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
            {
                end + 4 + cl.trim().parse::<usize>().unwrap()
            } else if lower.contains("transfer-encoding: chunked") {
                match pending[end + 4..]
                    .windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                {
                    Some(at) => end + 4 + at + 5,
                    None => usize::MAX,
                }
            } else {
                end + 4
            };
            if pending.len() >= body_end {
                let request: Vec<u8> = pending.drain(..body_end).collect();
                return Some((path, request));
            }
        }
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

async fn raw_upstream(answer: Answer) -> Raw {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (a, r) = (accepted.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                while let Some((path, request)) = read_request(&mut s, &mut pending).await {
                    r.lock().unwrap().push(request);
                    let (bytes, close) = answer(&path);
                    if s.write_all(&bytes).await.is_err() {
                        return;
                    }
                    if close {
                        let _ = s.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    Raw {
        addr,
        accepted,
        requests,
    }
}

async fn gateway_to(up: &Raw) -> InProcess {
    start(&format!(
        "{}[upstreams.m]\nurl = \"http://{}\"\n[[routes]]\nname = \"r\"\nsplit = {{ m = 100 }}\n",
        gateway_section(),
        up.addr
    ))
    .await
}

fn answer(path: &str) -> (Vec<u8>, bool) {
    let r: &[u8] = match path {
        "/chunked" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n"
        }
        "/both" => {
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        }
        "/bad-length" => b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabc",
        "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "/extra" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE",
        "/no-content" => b"HTTP/1.1 204 No Content\r\n\r\n",
        "/head" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
        "/named" => {
            b"HTTP/1.1 200 OK\r\nConnection: x-private, keep-alive\r\nX-Private: secret\r\nX-Public: p\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"
        }
        "/truncated" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
        "/garbage" => b"HTTP/1.1 2x0 Nope\r\n\r\n",
        "/switch" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 backend\r\n\r\nok",
    };
    if path == "/vanish" {
        return (Vec::new(), true);
    }
    let close = matches!(path, "/until-close" | "/truncated");
    if path == "/until-close" {
        return (
            b"HTTP/1.1 200 OK\r\n\r\nall of this until the end".to_vec(),
            true,
        );
    }
    (r.to_vec(), close)
}

#[tokio::test]
async fn every_framing_reaches_the_client_whole() {
    let up = raw_upstream(answer).await;
    let gw = gateway_to(&up).await;
    let c = client();
    let r = get(&c, &gw.url("/chunked"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"hello, world");
    assert_eq!(r.headers["x-kind"], "chunked");
    assert!(r.headers.get("x-trailer").is_none());
    // Chunked with trailers leaves the connection reusable: the same one serves the next.
    let r = get(&c, &gw.url("/plain"), &[]).await;
    assert_eq!(&r.body[..], b"ok");
    assert_eq!(r.headers["via"], "1.1 backend, 1.1 strangler");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);

    let r = get(&c, &gw.url("/until-close"), &[]).await;
    assert_eq!(&r.body[..], b"all of this until the end");
    let r = get(&c, &gw.url("/continue"), &[]).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        2,
        "a close-delimited body ends its connection"
    );

    let r = send(&c, "HEAD", &gw.url("/head"), &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = get(&c, &gw.url("/no-content"), &[]).await;
    assert_eq!(r.status, 204);
    let r = get(&c, &gw.url("/plain"), &[]).await;
    assert_eq!(&r.body[..], b"ok");
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        2,
        "HEAD and 204 keep the connection"
    );
}

#[tokio::test]
async fn hop_by_hop_fields_of_a_response_and_those_it_names_are_dropped() {
    let up = raw_upstream(answer).await;
    let gw = gateway_to(&up).await;
    let r = get(&client(), &gw.url("/named"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("x-private").is_none());
    assert!(r.headers.get("keep-alive").is_none());
    assert_eq!(r.headers["x-public"], "p");
    assert_eq!(r.headers["via"], "1.1 strangler");
}

#[tokio::test]
async fn doubtful_framing_is_never_reused_and_bad_framing_is_a_502() {
    let up = raw_upstream(answer).await;
    let gw = gateway_to(&up).await;
    let c = client();
    // Transfer-Encoding wins over Content-Length, and such a connection is not trusted again.
    let r = get(&c, &gw.url("/both"), &[]).await;
    assert_eq!(&r.body[..], b"ok");
    let r = get(&c, &gw.url("/plain"), &[]).await;
    assert_eq!(&r.body[..], b"ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    // Bytes after a response nobody asked for: the body is served, the connection dropped.
    let r = get(&c, &gw.url("/extra"), &[]).await;
    assert_eq!(&r.body[..], b"ok");
    let r = get(&c, &gw.url("/plain"), &[]).await;
    assert_eq!(&r.body[..], b"ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
    for (path, detail) in [
        ("/bad-length", "Content-Length"),
        ("/garbage", "malformed response head"),
        ("/switch", "switched protocols"),
    ] {
        let r = get(&c, &gw.url(path), &[]).await;
        assert_eq!(r.status, 502, "{path}");
        let body = r.json();
        assert_eq!(
            body["type"], "urn:strangler:problem:upstream-error",
            "{path}"
        );
        assert!(
            body["detail"].as_str().unwrap_or("").contains(detail),
            "{path}: {body}"
        );
    }
    // The gateway keeps serving.
    let r = get(&c, &gw.url("/plain"), &[]).await;
    assert_eq!(&r.body[..], b"ok");
}

#[tokio::test]
async fn a_body_cut_short_by_the_upstream_never_looks_complete() {
    let up = raw_upstream(answer).await;
    let gw = gateway_to(&up).await;
    // A raw client sees exactly what the gateway sends: never a shorter body passed off as
    // whole.
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    s.write_all(b"GET /truncated HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    // Either nothing at all (hyper had not flushed the head when the body failed) or the
    // head and the part that came: the connection is then closed short of the length.
    if !text.is_empty() {
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        assert!(
            text.to_ascii_lowercase().contains("content-length: 100"),
            "{text:?}"
        );
        assert!(text.ends_with("only this"), "{text:?}");
    }
    let r = get(&client(), &gw.url("/plain"), &[]).await;
    assert_eq!(&r.body[..], b"ok");
}

#[tokio::test]
async fn request_bodies_go_out_framed_as_they_came() {
    let up = raw_upstream(answer).await;
    let gw = gateway_to(&up).await;
    let r = send(&client(), "POST", &gw.url("/plain"), &[], "sized body").await;
    assert_eq!(r.status, 200);
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    s.write_all(
        b"POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert!(got[..n].starts_with(b"HTTP/1.1 200"));
    let seen = up.requests.lock().unwrap().clone();
    let sized = String::from_utf8_lossy(&seen[0]).to_ascii_lowercase();
    assert!(sized.contains("content-length: 10\r\n"), "{sized}");
    assert!(sized.ends_with("\r\n\r\nsized body"), "{sized}");
    let chunked = String::from_utf8_lossy(&seen[1]).to_ascii_lowercase();
    assert!(
        chunked.contains("transfer-encoding: chunked\r\n"),
        "{chunked}"
    );
    assert!(!chunked.contains("content-length"), "{chunked}");
    assert!(
        chunked.ends_with("\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"),
        "{chunked}"
    );
    assert!(
        chunked.contains("x-forwarded-for: 127.0.0.1\r\n"),
        "{chunked}"
    );
    assert!(chunked.contains("host: x\r\n"), "{chunked}");
}

#[tokio::test]
async fn a_reused_connection_closed_without_an_answer_is_retried_only_when_safe() {
    let up = raw_upstream(answer).await;
    let gw = gateway_to(&up).await;
    let c = client();
    assert_eq!(&get(&c, &gw.url("/plain"), &[]).await.body[..], b"ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    // A bodiless GET on the reused connection: the upstream reads it and closes without a
    // word; it goes out once more on a fresh connection (which does the same: 502).
    let r = get(&c, &gw.url("/vanish"), &[]).await;
    assert_eq!(r.status, 502);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap_or("")
            .contains("without a response"),
        "{:?}",
        r.json()
    );
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        2,
        "retried once on a new connection"
    );
    assert_eq!(&get(&c, &gw.url("/plain"), &[]).await.body[..], b"ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
    // A POST with a body is never sent twice.
    let r = send(&c, "POST", &gw.url("/vanish"), &[], "once").await;
    assert_eq!(r.status, 502);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3, "not retried");
    let posts = up
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with(b"POST /vanish"))
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn a_body_of_unknown_length_goes_to_the_client_chunked() {
    let up = raw_upstream(answer).await;
    let gw = gateway_to(&up).await;
    let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
    s.write_all(b"GET /until-close HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answered and closed")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{head}"
    );
    assert!(!head.contains("content-length"), "{head}");
    // However the upstream's bytes arrived, the chunks carry them whole and end with 0.
    let mut rest = body;
    let mut got = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        got.push_str(&after[..size]);
        rest = &after[size + 2..];
        if size == 0 {
            break;
        }
    }
    assert_eq!(got, "all of this until the end");
    assert_eq!(rest, "");
}
