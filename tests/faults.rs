//! Failure handling under load: dead upstreams, health probes, rollback with traffic.

mod common;

use std::time::Duration;

use common::*;
use wiremock::matchers::{any, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_dying_under_load_is_ejected_and_no_idempotent_request_fails() {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let cfg = format!(
        "{}\n[upstreams.monolith]\nurl = \"{}\"\n[upstreams.users]\nurl = \"{}\"\npassive = {{ consecutive_failures = 3, base_ejection = \"30s\" }}\n[[routes]]\nname = \"r\"\nsplit = {{ monolith = 50, users = 50 }}\nfallback = \"monolith\"\n",
        gateway_section(),
        mono.uri(),
        users.uri()
    );
    let gw = start(&cfg).await;
    let c = client();
    let url = gw.url("/x");
    let load_task = tokio::spawn({
        let c = c.clone();
        let url = url.clone();
        async move { load(&c, url, 20_000, 32, None).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(users); // the upstream dies while requests are flowing
    let results = load_task.await.unwrap();
    let failed: Vec<_> = results.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        results.len(),
        failed.first()
    );
    let health = get(&c, &gw.admin("/admin/health"), &[]).await.json();
    let users = health["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "users")
        .unwrap()
        .clone();
    assert_eq!(users["ejected"], true, "{health}");
    // After ejection everything goes to the fallback.
    let after = load(&c, url, 200, 8, None).await;
    assert!(after.iter().all(|(s, t)| *s == 200 && t == "monolith"));
    let metrics = get(&c, &gw.admin("/metrics"), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("strangler_router_ejections_total{target=\"users\"}"),
        "ejection counted"
    );
    assert!(
        text.contains("strangler_gateway_retries_total{route=\"r\"}"),
        "retries counted"
    );
}

#[tokio::test]
async fn active_probe_failure_sends_the_share_to_the_fallback_and_recovery_restores_it() {
    let mono = named_upstream("monolith").await;
    let users = MockServer::start().await;
    Mock::given(path("/health"))
        .respond_with(ResponseTemplate::new(503))
        .with_priority(1)
        .mount(&users)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("users"))
        .mount(&users)
        .await;
    let cfg = format!(
        "{}\n[upstreams.monolith]\nurl = \"{}\"\n[upstreams.users]\nurl = \"{}\"\nhealth = {{ path = \"/health\", interval = \"50ms\", unhealthy_threshold = 2, healthy_threshold = 2 }}\n[[routes]]\nname = \"r\"\nsplit = {{ monolith = 0, users = 100 }}\nfallback = \"monolith\"\n",
        gateway_section(),
        mono.uri(),
        users.uri()
    );
    let gw = start(&cfg).await;
    let c = client();
    let mut down = false;
    for _ in 0..100 {
        if get(&c, &gw.url("/x"), &[]).await.target() == "monolith" {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(down, "failing probes must move traffic to the fallback");
    users.reset().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("users"))
        .mount(&users)
        .await;
    let mut up = false;
    for _ in 0..100 {
        if get(&c, &gw.url("/x"), &[]).await.target() == "users" {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "recovered probes must re-admit the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_while_clients_run_loses_zero_requests() {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let cfg = format!(
        "{}\n[upstreams.monolith]\nurl = \"{}\"\n[upstreams.users]\nurl = \"{}\"\n[[routes]]\nname = \"users\"\nsplit = {{ monolith = 50, users = 50 }}\nfallback = \"monolith\"\nsticky = {{ header = \"x-user-id\" }}\n",
        gateway_section(),
        mono.uri(),
        users.uri()
    );
    let gw = start(&cfg).await;
    let c = client();
    let url = gw.url("/api");
    let load_task = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move {
            load(
                &c,
                url,
                30_000,
                32,
                Some(("x-user-id", |i| format!("u{}", i % 997))),
            )
            .await
        }
    });
    for body in [
        r#"{"monolith": 20, "users": 80}"#,
        r#"{"monolith": 10, "users": 90}"#,
    ] {
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            send(&c, "PUT", &gw.admin("/admin/routes/users/split"), &[], body)
                .await
                .status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    let r = send(&c, "POST", &gw.admin("/admin/rollback"), &[], "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["routes"][0]["split"]["users"],
        80.0,
        "whole-table rollback restores the previous version"
    );
    tokio::time::sleep(Duration::from_millis(40)).await;
    let r = send(
        &c,
        "POST",
        &gw.admin("/admin/routes/users/rollback"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.json()["routes"][0]["split"]["monolith"], 100.0);
    let results = load_task.await.unwrap();
    assert_eq!(results.len(), 30_000);
    let failed = results.iter().filter(|(s, _)| *s != 200).count();
    assert_eq!(failed, 0, "requests lost during rollback");
    let after = load(&c, url, 300, 8, Some(("x-user-id", |i| format!("u{i}")))).await;
    assert!(
        after.iter().all(|(_, t)| t == "monolith"),
        "after route rollback all traffic is on the fallback"
    );
}

#[tokio::test]
async fn unreachable_upstream_gives_502_problem_and_slow_one_504() {
    let slow = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&slow)
        .await;
    let dead = "127.0.0.1:9"; // discard port: nothing listens
    let cfg = format!(
        "{}[gateway.timeouts]\nupstream_response = \"300ms\"\nconnect = \"300ms\"\n\n[upstreams.dead]\nurl = \"http://{dead}\"\n[upstreams.slow]\nurl = \"{}\"\n[[routes]]\nname = \"d\"\npath_prefix = \"/dead\"\nsplit = {{ dead = 100 }}\n[[routes]]\nname = \"s\"\npath_prefix = \"/slow\"\nsplit = {{ slow = 100 }}\n",
        gateway_section(),
        slow.uri()
    );
    let gw = start(&cfg).await;
    let c = client();
    let r = get(&c, &gw.url("/dead"), &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["type"], "urn:strangler:problem:upstream-connect");
    let r = get(&c, &gw.url("/slow"), &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["type"], "urn:strangler:problem:upstream-timeout");
}

#[tokio::test]
async fn oversized_request_head_is_refused_and_the_gateway_keeps_serving() {
    let mono = named_upstream("monolith").await;
    let cfg = format!(
        "{}[gateway.limits]\nmax_header_bytes = 16384\n[upstreams.monolith]\nurl = \"{}\"\n[[routes]]\nname = \"r\"\nsplit = {{ monolith = 100 }}\n",
        gateway_section(),
        mono.uri()
    );
    let gw = start(&cfg).await;
    let big = "x".repeat(40 * 1024);
    let refused = match client()
        .request(
            http::Request::get(gw.url("/x"))
                .header("x-big", big.as_str())
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
    {
        Ok(resp) => resp.status() == 431,
        Err(_) => true, // the connection was closed without a response
    };
    assert!(refused, "a 40 KiB header must not pass a 16 KiB limit");
    assert_eq!(
        get(&client(), &gw.url("/x"), &[("x-small", "1")])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn target_header_can_be_turned_off() {
    let mono = named_upstream("monolith").await;
    let cfg = format!(
        "{}target_header = false\n[upstreams.monolith]\nurl = \"{}\"\n[[routes]]\nname = \"r\"\nsplit = {{ monolith = 100 }}\n",
        gateway_section(),
        mono.uri()
    );
    let gw = start(&cfg).await;
    let r = get(&client(), &gw.url("/x"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("x-strangler-target").is_none());
}

/// An upstream that answers one request per connection, then closes it without saying so
/// (as servers with a short keep-alive timeout do).
async fn closing_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn pooled_connections_closed_by_the_upstream_are_not_reused() {
    let up = closing_upstream().await;
    let cfg = format!(
        "{}[upstreams.m]\nurl = \"http://{up}\"\n[[routes]]\nname = \"r\"\nsplit = {{ m = 100 }}\n",
        gateway_section()
    );
    let gw = start(&cfg).await;
    let c = client();
    for i in 0..20 {
        let r = send(
            &c,
            if i % 2 == 0 { "GET" } else { "POST" },
            &gw.url("/x"),
            &[],
            "body",
        )
        .await;
        assert_eq!(r.status, 200, "request {i} hit a stale pooled connection");
        assert_eq!(&r.body[..], b"ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
