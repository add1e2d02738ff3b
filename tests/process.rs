//! The real `strangler` binary as a process: signals, stickiness across processes, and
//! streaming large bodies with bounded memory.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn process_config(mono: &str, users: &str, extra: &str) -> String {
    format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ncontrol = \"sqlite://{{dir}}/control.db\"\ndrain_grace = \"10s\"\n[upstreams.monolith]\nurl = \"{mono}\"\n[upstreams.users]\nurl = \"{users}\"\n[[routes]]\nname = \"users\"\nsplit = {{ monolith = 50, users = 50 }}\nfallback = \"monolith\"\nsticky = {{ header = \"x-user-id\" }}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_completes_in_flight_requests_then_exits_zero() {
    let slow = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("done")
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&slow)
        .await;
    let (_dir, cfg) = config_file(&process_config(&slow.uri(), &slow.uri(), ""));
    let mut gw = spawn_binary(&cfg);
    let c = client();
    let url = gw.url("/x");
    let inflight: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn({
                let (c, url) = (c.clone(), url.clone());
                async move { get(&c, &url, &[]).await }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused while the old ones drain.
    let refused = tokio::net::TcpStream::connect(gw.addr).await.is_err();
    for h in inflight {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], b"done");
    }
    let status = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit code after drain"
    );
    assert!(refused, "listener must close on SIGTERM");
}

#[tokio::test]
async fn two_gateway_processes_put_each_key_on_the_same_upstream() {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let (_d1, c1) = config_file(&process_config(&mono.uri(), &users.uri(), ""));
    let (_d2, c2) = config_file(&process_config(&mono.uri(), &users.uri(), ""));
    let (a, b) = (spawn_binary(&c1), spawn_binary(&c2));
    let c = client();
    let mut on_users = 0;
    for i in 0..500 {
        let key = format!("customer-{i}");
        let ta = get(&c, &a.url("/x"), &[("x-user-id", &key)]).await.target();
        let tb = get(&c, &b.url("/x"), &[("x-user-id", &key)]).await.target();
        assert_eq!(ta, tb, "{key} split differently by two processes");
        on_users += usize::from(ta == "users");
    }
    assert!(
        (200..300).contains(&on_users),
        "about half on users: {on_users}"
    );
}

#[tokio::test]
async fn sighup_reloads_a_good_file_and_rejects_a_bad_one() {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let (dir, path) = config_file(&process_config(&mono.uri(), &users.uri(), ""));
    let gw = spawn_binary(&path);
    let c = client();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("monolith = 50, users = 50", "monolith = 50, users = 60"),
    )
    .unwrap();
    gw.signal("HUP");
    let mut rejected = String::new();
    for _ in 0..100 {
        match gw.stderr.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains("reload rejected") => {
                rejected = line;
                break;
            }
            _ => {}
        }
    }
    assert!(
        rejected.contains(&format!(
            "{}: route \\\"users\\\": split sums to 110, must be 100",
            path.display()
        )),
        "{rejected}"
    );
    assert_eq!(
        get(&c, &gw.url("/x"), &[]).await.status,
        200,
        "still serving the old table"
    );
    std::fs::write(
        &path,
        text.replace("monolith = 50, users = 50", "monolith = 0, users = 100"),
    )
    .unwrap();
    gw.signal("HUP");
    let mut moved = false;
    for _ in 0..100 {
        if get(&c, &gw.url("/x"), &[("x-user-id", "anyone")])
            .await
            .target()
            == "users"
        {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(moved, "SIGHUP with a valid file must publish its split");
    drop(dir);
}

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// A request body of `left` bytes produced on the fly.
struct Generated {
    left: usize,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(CHUNK.len());
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabyte_bodies_stream_through_with_bounded_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    let up = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/big"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'y'; SIZE]))
        .mount(&up)
        .await;
    Mock::given(method("POST"))
        .and(path("/upload"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&up)
        .await;
    let (_dir, cfg) = config_file(&process_config(&up.uri(), &up.uri(), ""));
    let gw = spawn_binary(&cfg);
    let idle_kib = gw.peak_rss_kib();

    let streaming =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build::<_, Generated>(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::post(gw.url("/upload"))
        .body(Generated { left: SIZE })
        .unwrap();
    let resp = streaming.request(req).await.unwrap();
    assert_eq!(resp.status(), 201);
    let received = up.received_requests().await.unwrap();
    assert_eq!(
        received
            .iter()
            .find(|r| r.url.path() == "/upload")
            .unwrap()
            .body
            .len(),
        SIZE,
        "whole upload arrived"
    );

    let resp = client()
        .request(
            http::Request::get(gw.url("/big"))
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(data.iter().all(|b| *b == b'y'));
            total += data.len();
        }
    }
    assert_eq!(total, SIZE, "whole download arrived");
    let peak_kib = gw.peak_rss_kib();
    eprintln!("gateway RSS: idle {idle_kib} KiB, peak after 2 x 100 MB {peak_kib} KiB");
    assert!(peak_kib > 0, "could not read /proc");
    assert!(
        peak_kib < 64 * 1024,
        "gateway peak RSS {peak_kib} KiB: bodies were buffered, not streamed"
    );
}
