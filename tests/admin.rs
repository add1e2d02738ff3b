//! The admin API: authentication, versions, reload.

mod common;

use common::*;

fn two_upstreams(mono: &str, users: &str) -> String {
    format!(
        "[upstreams.monolith]\nurl = \"{mono}\"\n[upstreams.users]\nurl = \"{users}\"\n[[routes]]\nname = \"users\"\npath_prefix = \"/api/users\"\nsplit = {{ monolith = 90, users = 10 }}\nfallback = \"monolith\"\n"
    )
}

/// A gateway with the two-upstream route, and its upstreams (kept alive by the caller).
async fn two_upstream_gateway() -> (InProcess, wiremock::MockServer, wiremock::MockServer) {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let gw = start(&format!(
        "{}{}",
        gateway_section(),
        two_upstreams(&mono.uri(), &users.uri())
    ))
    .await;
    (gw, mono, users)
}

#[tokio::test]
async fn admin_off_loopback_needs_the_bearer_token() {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let cfg = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"0.0.0.0:0\"\nadmin_token = \"s3cret\"\ncontrol = \"sqlite://{{dir}}/c.db\"\n{}",
        two_upstreams(&mono.uri(), &users.uri())
    );
    let gw = start(&cfg).await;
    let c = client();
    let admin = format!("http://127.0.0.1:{}", gw.running.admin_addr.port());
    assert_eq!(
        get(&c, &format!("{admin}/admin/routes"), &[]).await.status,
        401
    );
    assert_eq!(get(&c, &format!("{admin}/metrics"), &[]).await.status, 401);
    assert_eq!(
        get(
            &c,
            &format!("{admin}/admin/routes"),
            &[("authorization", "Bearer wrong")]
        )
        .await
        .status,
        401
    );
    assert_eq!(
        send(&c, "POST", &format!("{admin}/admin/rollback"), &[], "")
            .await
            .status,
        401
    );
    assert_eq!(
        get(
            &c,
            &format!("{admin}/admin/routes"),
            &[("authorization", "Bearer s3cret")]
        )
        .await
        .status,
        200
    );
    for wrong in ["Bearer s3cre", "Bearer s3cret2", "Bearer S3CRET", "Bearer "] {
        let r = get(
            &c,
            &format!("{admin}/admin/routes"),
            &[("authorization", wrong)],
        )
        .await;
        assert_eq!(r.status, 401, "{wrong}");
    }
    assert_eq!(
        get(&c, &format!("{admin}/healthz"), &[]).await.status,
        200,
        "liveness stays open"
    );
}

#[tokio::test]
async fn a_known_path_with_a_wrong_method_is_405_with_allow() {
    let (gw, _mono, _users) = two_upstream_gateway().await;
    let c = client();
    for (method, path, allow) in [
        ("POST", "/admin/routes", "GET"),
        ("DELETE", "/metrics", "GET"),
        ("GET", "/admin/rollback", "POST"),
        ("GET", "/admin/routes/users/split", "PUT"),
        ("PUT", "/admin/routes/users/rollout/start", "POST"),
        ("POST", "/admin/sync", "GET"),
        ("GET", "/admin/sync/quarantine/1/retry", "POST"),
    ] {
        let r = send(&c, method, &gw.admin(path), &[], "").await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.headers["allow"], allow, "{method} {path}");
        assert_eq!(r.json()["status"], 405);
    }
    let r = get(&c, &gw.admin("/admin/nothing"), &[]).await;
    assert_eq!(r.status, 404);
    let r = send(
        &c,
        "POST",
        &gw.admin("/admin/sync/quarantine/7/retry"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status, 404, "no such quarantined change");
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("GET /admin/sync")
    );
}

#[tokio::test]
async fn versions_are_listed_newest_first_with_reasons() {
    let (gw, _mono, _users) = two_upstream_gateway().await;
    let c = client();
    for pct in [20, 30, 40] {
        let body = format!("{{\"monolith\": {}, \"users\": {pct}}}", 100 - pct);
        assert_eq!(
            send(
                &c,
                "PUT",
                &gw.admin("/admin/routes/users/split"),
                &[],
                &body
            )
            .await
            .status,
            200
        );
    }
    let v = get(&c, &gw.admin("/admin/versions"), &[]).await.json();
    let list = v["versions"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(v["current"], list[0]["version"]);
    assert_eq!(list[0]["splits"]["users"]["users"], 40.0);
    assert_eq!(list[3]["reason"], "config loaded");
    assert_eq!(list[0]["reason"], "admin: split of route users");
    // Bad requests are refused with problem+json and change nothing.
    for (body, status) in [
        ("{\"monolith\": 50}", 422),
        ("not json", 400),
        ("{\"monolith\": 50, \"ghost\": 50}", 422),
    ] {
        let r = send(&c, "PUT", &gw.admin("/admin/routes/users/split"), &[], body).await;
        assert_eq!(r.status, status, "{body}");
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
    assert_eq!(
        send(
            &c,
            "PUT",
            &gw.admin("/admin/routes/nope/split"),
            &[],
            "{\"monolith\": 100}"
        )
        .await
        .status,
        404
    );
    assert_eq!(
        get(&c, &gw.admin("/admin/versions"), &[]).await.json()["current"],
        v["current"]
    );
}

#[tokio::test]
async fn reload_rejects_a_bad_file_with_a_precise_error_and_keeps_serving() {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let good = format!(
        "{}{}",
        gateway_section(),
        two_upstreams(&mono.uri(), &users.uri())
    );
    let gw = start(&good).await;
    let c = client();
    let version = get(&c, &gw.admin("/admin/routes"), &[]).await.json()["version"].clone();
    std::fs::write(
        &gw.path,
        good.replace("{dir}", &gw.dir.path().display().to_string())
            .replace("users = 10", "users = 20"),
    )
    .unwrap();
    let r = send(&c, "POST", &gw.admin("/admin/reload"), &[], "").await;
    assert_eq!(r.status, 422);
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert_eq!(
        detail,
        format!(
            "{}: route \"users\": split sums to 110, must be 100",
            gw.path.display()
        )
    );
    assert_eq!(
        get(&c, &gw.admin("/admin/routes"), &[]).await.json()["version"],
        version,
        "table unchanged"
    );
    assert_eq!(
        get(&c, &gw.url("/api/users"), &[]).await.status,
        200,
        "still serving"
    );
    let fixed = good
        .replace("{dir}", &gw.dir.path().display().to_string())
        .replace("monolith = 90, users = 10", "monolith = 0, users = 100");
    std::fs::write(&gw.path, fixed).unwrap();
    let r = send(&c, "POST", &gw.admin("/admin/reload"), &[], "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let routes = get(&c, &gw.admin("/admin/routes"), &[]).await.json();
    assert_eq!(routes["routes"][0]["split"]["users"], 100.0);
    assert!(
        routes["reason"]
            .as_str()
            .unwrap()
            .starts_with("config reload")
    );
    assert_eq!(get(&c, &gw.url("/api/users"), &[]).await.target(), "users");
}

#[tokio::test]
async fn reload_keeps_operator_splits_when_the_file_split_is_unchanged() {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let good = format!(
        "{}{}",
        gateway_section(),
        two_upstreams(&mono.uri(), &users.uri())
    );
    let gw = start(&good).await;
    let c = client();
    send(
        &c,
        "PUT",
        &gw.admin("/admin/routes/users/split"),
        &[],
        "{\"monolith\": 60, \"users\": 40}",
    )
    .await;
    // An unrelated edit: a new timeout.
    let edited = good
        .replace("{dir}", &gw.dir.path().display().to_string())
        .replace("control_poll", "drain_grace = \"5s\"\ncontrol_poll");
    std::fs::write(&gw.path, edited).unwrap();
    assert_eq!(
        send(&c, "POST", &gw.admin("/admin/reload"), &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        get(&c, &gw.admin("/admin/routes"), &[]).await.json()["routes"][0]["split"]["users"],
        40.0
    );
}

#[tokio::test]
async fn rollout_steps_hold_and_roll_back_on_a_breach() {
    use std::time::Duration;
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let mono = named_upstream("monolith").await;
    let users = MockServer::builder()
        .disable_request_recording()
        .start()
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string("users"))
        .mount(&users)
        .await;
    let cfg = format!(
        "{}{}rollout = {{ target = \"users\", steps = [10, 50, 100], hold = \"200ms\", window = \"2s\", min_requests = 20, max_p99_ratio = 1000.0 }}\n",
        gateway_section(),
        two_upstreams(&mono.uri(), &users.uri())
    );
    let gw = start(&cfg).await;
    let c = client();
    let act = |action: &str| {
        let (c, url) = (
            c.clone(),
            gw.admin(&format!("/admin/routes/users/rollout/{action}")),
        );
        async move { send(&c, "POST", &url, &[], "").await }
    };
    // A quiet route: the rollout starts but holds without traffic, never aborting.
    let st = send(
        &c,
        "POST",
        &gw.admin("/admin/routes/users/rollout/start"),
        &[],
        "",
    )
    .await
    .json();
    assert_eq!(st["status"], "running");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let st = get(&c, &gw.admin("/admin/routes/users/rollout"), &[])
        .await
        .json();
    assert_eq!(st["status"], "running");
    assert_eq!(st["step"], 0);
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("too little traffic"),
        "{st}"
    );
    // Healthy traffic: it advances. (The latency gate is set wide: two different local servers
    // on a busy CI machine differ in p99 by chance; the breach below is by error rate.)
    let mut st = serde_json::Value::Null;
    for _ in 0..40 {
        load(&c, gw.url("/api/users"), 200, 8, None).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        st = get(&c, &gw.admin("/admin/routes/users/rollout"), &[])
            .await
            .json();
        if st["step"].as_u64().unwrap() >= 1 {
            break;
        }
    }
    assert!(
        st["step"].as_u64().unwrap() >= 1,
        "healthy gates must advance the rollout: {st}"
    );
    // Now the target starts failing: the gate breaches and the route goes back to its fallback.
    users.reset().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .mount(&users)
        .await;
    let mut status = String::new();
    for _ in 0..40 {
        load(&c, gw.url("/api/users"), 200, 8, None).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = get(&c, &gw.admin("/admin/routes/users/rollout"), &[])
            .await
            .json()["status"]
            .as_str()
            .unwrap()
            .to_string();
        if status == "rolled_back" {
            break;
        }
    }
    assert_eq!(status, "rolled_back");
    let routes = get(&c, &gw.admin("/admin/routes"), &[]).await.json();
    assert_eq!(routes["routes"][0]["split"]["monolith"], 100.0);
    let metrics =
        String::from_utf8_lossy(&get(&c, &gw.admin("/metrics"), &[]).await.body).to_string();
    assert!(
        metrics.contains("strangler_router_rollout_rollbacks_total{route=\"users\"} 1"),
        "breach counted"
    );
    // Operator actions.
    assert_eq!(act("pause").await.status, 422);
    assert_eq!(act("start").await.json()["status"], "running");
    assert_eq!(act("pause").await.json()["status"], "paused");
    assert_eq!(act("resume").await.json()["status"], "running");
    assert_eq!(act("promote").await.json()["status"], "completed");
    assert_eq!(
        get(&c, &gw.admin("/admin/routes"), &[]).await.json()["routes"][0]["split"]["users"],
        100.0
    );
    assert_eq!(act("abort").await.json()["status"], "aborted");
    assert_eq!(
        get(&c, &gw.admin("/admin/routes"), &[]).await.json()["routes"][0]["split"]["monolith"],
        100.0
    );
    assert_eq!(act("explode").await.status, 404);
}
