//! The gateway against hostile or sloppy clients, over raw TCP: broken bodies never count
//! against an upstream, request targets are canonical before routing, heads are bounded.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::matchers::{any, header, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Sends raw bytes, then reads until the peer closes or `wait` passes; returns the text.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a head promising a body, part of it, then closes.
async fn abort_body(addr: std::net::SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'x'; 1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(s);
}

/// One route named `name` to one upstream named after the route (metrics are process-wide,
/// so each test uses its own names).
fn route_to(name: &str, upstream: &str, extra: &str) -> String {
    format!(
        "{}{extra}[upstreams.{name}]\nurl = \"{upstream}\"\npassive = {{ consecutive_failures = 3, base_ejection = \"60s\" }}\n[[routes]]\nname = \"{name}\"\nsplit = {{ {name} = 100 }}\n",
        gateway_section()
    )
}

async fn ejected(gw: &InProcess) -> bool {
    let health = get(&client(), &gw.admin("/admin/health"), &[]).await.json();
    health["upstreams"][0]["ejected"] == true
}

async fn metrics_text(gw: &InProcess) -> String {
    let m = get(&client(), &gw.admin("/metrics"), &[]).await;
    String::from_utf8_lossy(&m.body).into_owned()
}

#[tokio::test]
async fn aborted_and_malformed_bodies_never_eject_the_upstream() {
    let mono = named_upstream("monolith").await;
    let gw = start(&route_to("aborted", &mono.uri(), "")).await;
    for _ in 0..6 {
        abort_body(gw.running.addr).await;
    }
    for _ in 0..6 {
        let reply = raw(
            gw.running.addr,
            b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
        assert!(
            reply.contains("urn:strangler:problem:body-error"),
            "{reply}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !ejected(&gw).await,
        "a client's broken body ejected the upstream"
    );
    assert_eq!(get(&client(), &gw.url("/x"), &[]).await.status, 200);
    let text = metrics_text(&gw).await;
    assert!(
        text.contains(
            "strangler_gateway_client_errors_total{route=\"aborted\",reason=\"body-error\"} 12"
        ),
        "{text}"
    );
    assert!(
        !text.contains("strangler_router_ejections_total{target=\"aborted\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn a_body_the_client_never_finishes_gets_408_and_no_ejection() {
    let mono = named_upstream("monolith").await;
    let cfg = route_to(
        "stalled",
        &mono.uri(),
        "[gateway.timeouts]\nupstream_response = \"300ms\"\n",
    );
    let gw = start(&cfg).await;
    for _ in 0..4 {
        let reply = raw(
            gw.running.addr,
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten.",
            Duration::from_secs(3),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    }
    assert!(!ejected(&gw).await);
    assert!(metrics_text(&gw).await.contains(
        "strangler_gateway_client_errors_total{route=\"stalled\",reason=\"body-timeout\"} 4"
    ));
}

#[tokio::test]
async fn a_failing_upstream_is_still_ejected() {
    let bad = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .mount(&bad)
        .await;
    let gw = start(&route_to("failing", &bad.uri(), "")).await;
    for _ in 0..3 {
        send(&client(), "POST", &gw.url("/x"), &[], "a body").await;
    }
    assert!(ejected(&gw).await);
}

#[tokio::test]
async fn absolute_form_authority_replaces_host_for_routing_and_upstream() {
    let a = named_upstream("a").await;
    let b = MockServer::start().await;
    Mock::given(header("host", "b.example"))
        .respond_with(ResponseTemplate::new(200).set_body_string("b"))
        .mount(&b)
        .await;
    let cfg = format!(
        "{}[upstreams.a]\nurl = \"{}\"\n[upstreams.b]\nurl = \"{}\"\n[[routes]]\nname = \"b\"\nhost = \"b.example\"\nsplit = {{ b = 100 }}\n[[routes]]\nname = \"a\"\nhost = \"a.example\"\nsplit = {{ a = 100 }}\n",
        gateway_section(),
        a.uri(),
        b.uri()
    );
    let gw = start(&cfg).await;
    let reply = raw(
        gw.running.addr,
        b"GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("x-strangler-target: b"), "{reply}");
    assert!(
        reply.ends_with("\r\n\r\nb"),
        "upstream b saw Host b.example: {reply}"
    );
}

#[tokio::test]
async fn missing_or_repeated_host_is_refused_with_400() {
    let mono = named_upstream("monolith").await;
    let gw = start(&route_to("nohost", &mono.uri(), "")).await;
    for head in [
        "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    ] {
        let reply = raw(gw.running.addr, head.as_bytes(), Duration::from_secs(5)).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{head:?}: {reply}");
        assert!(reply.contains("urn:strangler:problem:bad-host"), "{reply}");
    }
    // HTTP/1.0 needs no Host.
    let reply = raw(
        gw.running.addr,
        b"GET /x HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
}

#[tokio::test]
async fn dot_segments_cannot_bypass_a_route() {
    let mono = named_upstream("monolith").await;
    let users = MockServer::start().await;
    Mock::given(path("/api/users/7"))
        .respond_with(ResponseTemplate::new(200).set_body_string("users saw /api/users/7"))
        .mount(&users)
        .await;
    let cfg = format!(
        "{}[upstreams.monolith]\nurl = \"{}\"\n[upstreams.users]\nurl = \"{}\"\n[[routes]]\nname = \"users\"\npath_prefix = \"/api/users\"\nsplit = {{ users = 100 }}\n[[routes]]\nname = \"rest\"\npath_prefix = \"/\"\nsplit = {{ monolith = 100 }}\n",
        gateway_section(),
        mono.uri(),
        users.uri()
    );
    let gw = start(&cfg).await;
    for p in [
        "/public/../api/users/7",
        "/public/%2e%2e/api/users/7",
        "//api//users/7",
        "/api/./users/7",
        "/%61pi/users/7",
    ] {
        let head = format!("GET {p} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let reply = raw(gw.running.addr, head.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            reply.contains("x-strangler-target: users")
                && reply.ends_with("users saw /api/users/7"),
            "{p}: {reply}"
        );
    }
    for p in ["/public/..%2Fapi/users/7", "/x/%zz"] {
        let head = format!("GET {p} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let reply = raw(gw.running.addr, head.as_bytes(), Duration::from_secs(5)).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{p}: {reply}");
        assert!(reply.contains("urn:strangler:problem:bad-path"), "{reply}");
    }
}

#[tokio::test]
async fn header_limit_is_enforced_exactly() {
    let mono = named_upstream("monolith").await;
    let gw = start(&route_to(
        "limit",
        &mono.uri(),
        "[gateway.limits]\nmax_header_bytes = 32768\n",
    ))
    .await;
    let c = client();
    // Just under the limit passes; just over is refused with a problem body.
    let fits = "x".repeat(32_000);
    assert_eq!(
        get(&c, &gw.url("/x"), &[("x-big", &fits)]).await.status,
        200
    );
    for size in [33_000usize, 48 * 1024] {
        let big = "x".repeat(size);
        let head =
            format!("GET /x HTTP/1.1\r\nHost: a\r\nx-big: {big}\r\nConnection: close\r\n\r\n");
        let reply = raw(gw.running.addr, head.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            reply.starts_with("HTTP/1.1 431"),
            "{size}: {}",
            &reply[..reply.len().min(200)]
        );
        assert!(
            reply.contains("application/problem+json"),
            "{size}: {reply}"
        );
    }
    // hyper's own refusals carry a problem body too: too many fields, an unparseable head.
    let many: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    let head = format!("GET /x HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let reply = raw(gw.running.addr, head.as_bytes(), Duration::from_secs(5)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert!(reply.contains("more than 100 header fields"), "{reply}");
    let reply = raw(
        gw.running.addr,
        b"BLAH\x01 / HTTP/1.1\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains("urn:strangler:problem:bad-request"),
        "{reply}"
    );
    assert_eq!(get(&c, &gw.url("/x"), &[]).await.status, 200);
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused() {
    let mono = named_upstream("monolith").await;
    let gw = start(&route_to("coded", &mono.uri(), "")).await;
    let reply = raw(
        gw.running.addr,
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 501"), "{reply}");
    assert!(
        reply.contains("urn:strangler:problem:transfer-coding"),
        "{reply}"
    );
}

#[tokio::test]
async fn a_port_another_gateway_serves_is_refused() {
    let mono = named_upstream("monolith").await;
    let first = start(&route_to("port", &mono.uri(), "")).await;
    let cfg = route_to("port", &mono.uri(), "").replace(
        "listen = \"127.0.0.1:0\"\nadmin",
        &format!("listen = \"{}\"\nadmin", first.running.addr),
    );
    let (_dir, path) = config_file(&cfg);
    let cfg = strangler::config::Config::load(&path).expect("valid config");
    let err = match strangler::app::start(cfg).await {
        Ok(_) => panic!("a second gateway started on {}", first.running.addr),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&first.running.addr.to_string()) && err.contains("in use"),
        "{err}"
    );
    // The first one still serves, with its several listeners.
    assert_eq!(get(&client(), &first.url("/x"), &[]).await.status, 200);
}

#[tokio::test]
async fn aborted_bodies_never_roll_back_a_rollout() {
    let mono = named_upstream("monolith").await;
    let canary = named_upstream("canary").await;
    let cfg = format!(
        "{}[upstreams.monolith]\nurl = \"{}\"\n[upstreams.canary]\nurl = \"{}\"\npassive = {{ consecutive_failures = 3, base_ejection = \"60s\" }}\n[[routes]]\nname = \"ro\"\nsplit = {{ monolith = 100 }}\nfallback = \"monolith\"\npins = [{{ header = \"x-canary\", value = \"1\", upstream = \"canary\" }}]\nrollout = {{ target = \"canary\", steps = [50, 100], hold = \"1h\", window = \"1m\", min_requests = 1 }}\n",
        gateway_section(),
        mono.uri(),
        canary.uri()
    );
    let gw = start(&cfg).await;
    let c = client();
    let st = send(
        &c,
        "POST",
        &gw.admin("/admin/routes/ro/rollout/start"),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(st["status"], "running", "{st}");
    for _ in 0..6 {
        let mut s = TcpStream::connect(gw.running.addr).await.unwrap();
        s.write_all(
            b"POST /x HTTP/1.1\r\nHost: a\r\nx-canary: 1\r\nContent-Length: 100000\r\n\r\npartial",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let st = get(&c, &gw.admin("/admin/routes/ro/rollout"), &[])
        .await
        .json();
    assert_eq!(
        st["status"], "running",
        "a client's aborted bodies rolled the rollout back: {st}"
    );
    let r = get(&c, &gw.url("/x"), &[("x-canary", "1")]).await;
    assert_eq!((r.status.as_u16(), r.target()), (200, "canary".to_string()));
}
