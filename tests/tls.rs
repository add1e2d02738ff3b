//! HTTPS on the data plane: ALPN picks HTTP/2 or HTTP/1.1, requests reach a cleartext
//! upstream, and the issued sticky cookie is `Secure`.

mod common;

use bytes::Bytes;
use common::tls::*;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::test]
async fn https_serves_http2_and_http1_with_secure_cookies() {
    let mono = monolith().await;
    let (running, cert_der, _dir) =
        tls_gateway("", "sticky = { cookie = \"sid\" }\n", &mono.uri()).await;

    // HTTP/2 over TLS.
    let tls = tls_to(running.addr, &cert_der, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("https://localhost/x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert_eq!(resp.headers()["x-strangler-target"], "monolith");
    assert_eq!(
        &resp.into_body().collect().await.unwrap().to_bytes()[..],
        b"monolith"
    );
    let seen = mono.received_requests().await.unwrap();
    assert_eq!(
        seen[0].headers["x-forwarded-proto"], "https",
        "upstream learns the client used TLS"
    );

    // HTTP/1.1 over TLS.
    let tls = tls_to(running.addr, &cert_der, b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/x")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    running.shutdown().await;
}

#[tokio::test]
async fn missing_certificate_file_is_reported_by_name() {
    let cfg = format!(
        "{}[gateway.tls]\ncert = \"{{dir}}/nope.pem\"\nkey = \"{{dir}}/nope.key\"\n[upstreams.m]\nurl = \"http://127.0.0.1:9\"\n[[routes]]\nname = \"r\"\nsplit = {{ m = 100 }}\n",
        gateway_section()
    );
    let (_dir, path) = config_file(&cfg);
    let err = match strangler::app::start(strangler::config::Config::load(&path).unwrap()).await {
        Ok(_) => panic!("must not start without its certificate"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("nope.pem"), "{err}");
}

/// HTTP/1.1 over TLS parks like plain HTTP/1.1: an idle connection gives up hyper's state
/// and serves its next requests when they come, over the same TLS session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tls_connection_is_parked_and_serves_its_next_requests() {
    let mono = monolith().await;
    let (running, cert_der, _dir) =
        tls_gateway("[gateway.timeouts]\npark = \"50ms\"\n", "", &mono.uri()).await;
    let tls = tls_to(running.addr, &cert_der, b"http/1.1").await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for round in 0..3 {
        let req = http::Request::get(format!("/x{round}"))
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        assert_eq!(
            &resp.into_body().collect().await.unwrap().to_bytes()[..],
            b"monolith"
        );
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert!(
            parked(&running).await >= 1.0,
            "round {round}: the idle TLS connection is parked"
        );
    }
    assert_eq!(mono.received_requests().await.unwrap().len(), 3);
    running.shutdown().await;
}

/// An idle HTTP/2 connection is parked and resumed, again and again, on the same TLS
/// session: requests after each park are answered whole, with request and response bodies
/// larger than both connection windows (so flow control carries over exactly), headers that
/// change from one request to the next, and a drain while parked ends it with GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_parked_and_resumed_where_it_left() {
    use std::time::Duration;
    let big = "b".repeat(300_000);
    let mono = monolith_after(vec![
        wiremock::Mock::given(wiremock::matchers::path("/big"))
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_string(big.clone())),
    ])
    .await;
    let (running, cert_der, _dir) =
        tls_gateway("[gateway.timeouts]\npark = \"50ms\"\n", "", &mono.uri()).await;
    let tls = tls_to(running.addr, &cert_der, b"h2").await;
    // A window of 140,000 bytes: a 300,000-byte response needs the client's updates, and
    // what is left of it after each is still at least the 65,535 a resumed connection
    // starts from.
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_connection_window_size(140_000)
        .initial_stream_window_size(140_000)
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let upload = Bytes::from(vec![b'u'; 400_000]);
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(parked(&running).await >= 1.0, "round {round}: parked");
        let req = http::Request::get("https://localhost/big")
            .header("x-round", format!("round-{round}"))
            .header("cookie", format!("session=abcdefghijklmnop{round}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), big.len(), "round {round}: the whole response");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(parked(&running).await >= 1.0, "round {round}: parked again");
        // 4 uploads of 400,000 bytes pass the 1 MiB the gateway grants per connection.
        let req = http::Request::post(format!("https://localhost/up/{round}"))
            .header("x-round", format!("round-{round}"))
            .body(Full::new(upload.clone()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "round {round}");
        assert_eq!(
            &resp.into_body().collect().await.unwrap().to_bytes()[..],
            b"monolith"
        );
    }
    assert!(!conn.is_finished(), "one connection throughout");
    let seen = mono.received_requests().await.unwrap();
    assert_eq!(seen.len(), 8);
    // 20 exchanges at once on the resumed connection, then it parks again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let many = (0..20).map(|n| h2_get(&mut send, &format!("/many/{n}")));
    for body in futures_util::future::join_all(many).await {
        assert_eq!(&body[..], b"monolith");
    }
    for (i, r) in seen.iter().enumerate() {
        let round = format!("round-{}", i / 2);
        assert_eq!(r.headers.get("x-round").unwrap(), round.as_str());
        if i % 2 == 1 {
            assert_eq!(r.url.path(), format!("/up/{}", i / 2));
            assert_eq!(r.body.len(), upload.len(), "request {i}: the whole upload");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(parked(&running).await >= 1.0);
    running.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the drain closes the parked connection")
        .unwrap()
        .expect("closed with GOAWAY, not an error");
}

/// An HTTP/2 connection with no exchange open for `timeouts.header_read` is closed with
/// GOAWAY; one whose exchange outlasts the limit, or whose requests keep coming, is not; one
/// whose client never answers the GOAWAY is closed after a grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_at_the_keep_alive_limit() {
    use std::time::{Duration, Instant};
    let mono = monolith_after(vec![
        wiremock::Mock::given(wiremock::matchers::path("/slow")).respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_string("slow")
                .set_delay(Duration::from_millis(1500)),
        ),
    ])
    .await;
    let (running, cert_der, _dir) = tls_gateway(
        "[gateway.timeouts]\nheader_read = \"1s\"\n",
        "",
        &mono.uri(),
    )
    .await;
    let h2 = || async {
        let tls = tls_to(running.addr, &cert_der, b"h2").await;
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        (send, tokio::spawn(conn))
    };

    // Requests every 400 ms for 2.4 s keep the connection open past the 1 s limit, and it
    // closes about 1 s after the last one.
    let (mut send, conn) = h2().await;
    let began = Instant::now();
    for _ in 0..6 {
        assert_eq!(&h2_get(&mut send, "/x").await[..], b"monolith");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!conn.is_finished(), "closed while requests keep coming");
    }
    let last = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle connection is closed")
        .unwrap()
        .expect("closed with GOAWAY, not an error");
    let idle = last.elapsed();
    assert!(
        idle >= Duration::from_millis(500) && idle < Duration::from_millis(2500),
        "closed {idle:?} after the last response ({:?} in all)",
        began.elapsed()
    );
    assert!(send.is_closed() || send.ready().await.is_err());

    // An exchange that outlasts the limit is answered whole, and the connection closes a
    // limit after it ends.
    let (mut send, conn) = h2().await;
    let began = Instant::now();
    assert_eq!(&h2_get(&mut send, "/slow").await[..], b"slow");
    let answered = began.elapsed();
    assert!(answered >= Duration::from_millis(1500), "{answered:?}");
    assert!(!conn.is_finished(), "closed at once after a long exchange");
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("closed after the long exchange")
        .unwrap()
        .unwrap();

    // A client that never answers the GOAWAY (nor its ping) has its socket closed anyway,
    // within the limit and the grace it is given to answer.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_to(running.addr, &cert_der, b"h2").await;
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend(payload);
        f
    };
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(4, 0, 0, b""));
    // GET https://localhost/ from HPACK's static table, the authority as a literal.
    hello.extend(frame(1, 0x5, 1, b"\x82\x87\x84\x41\x09localhost"));
    tls.write_all(&hello).await.unwrap();
    let began = Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), tls.read_to_end(&mut got))
        .await
        .expect("the socket is closed without the client's answer")
        .ok();
    let took = began.elapsed();
    let mut kinds = Vec::new();
    let mut rest = &got[..];
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        kinds.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(
        kinds.contains(&0),
        "the response's data came first: {kinds:?}"
    );
    assert!(kinds.contains(&7), "a GOAWAY was sent: {kinds:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(4500),
        "closed {took:?} after the request (limit 1 s, grace 1 s)"
    );

    let metrics = get_metrics(&running).await;
    assert!(
        metrics.contains("strangler_gateway_connections_idle_closed_total{protocol=\"http2\"} 3"),
        "{metrics}"
    );
    running.shutdown().await;
}

/// Sends GET `path` on an HTTP/2 connection; the future asserts a 200 and yields the body.
fn h2_get(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    path: &str,
) -> impl std::future::Future<Output = Bytes> + use<> {
    let req = http::Request::get(format!("https://localhost{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let sent = send.send_request(req);
    async move {
        let resp = sent.await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    }
}
