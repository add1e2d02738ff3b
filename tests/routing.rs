//! Routing behaviour through a real gateway and wiremock upstreams.

mod common;

use std::collections::HashMap;

use common::*;

async fn two_upstream_gateway(
    split: &str,
    extra: &str,
) -> (InProcess, wiremock::MockServer, wiremock::MockServer) {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let cfg = format!(
        "{}\n[upstreams.monolith]\nurl = \"{}\"\n\n[upstreams.users]\nurl = \"{}\"\n\n[[routes]]\nname = \"users\"\npath_prefix = \"/api/users\"\nsplit = {split}\nfallback = \"monolith\"\n{extra}\n",
        gateway_section(),
        mono.uri(),
        users.uri()
    );
    (start(&cfg).await, mono, users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_is_accurate_within_one_point_over_100k_requests() {
    let (gw, _m, _u) = two_upstream_gateway("{ monolith = 70, users = 30 }", "").await;
    let results = load(&client(), gw.url("/api/users/1"), 100_000, 64, None).await;
    assert!(
        results.iter().all(|(s, _)| *s == 200),
        "every request succeeds"
    );
    let users = results.iter().filter(|(_, t)| t == "users").count() as f64 / 1000.0;
    assert!(
        (users - 30.0).abs() <= 1.0,
        "users share {users} % is not within 30 ± 1"
    );
}

#[tokio::test]
async fn same_sticky_key_lands_on_same_upstream_1000_times() {
    let (gw, _m, _u) = two_upstream_gateway(
        "{ monolith = 50, users = 50 }",
        "sticky = { header = \"x-user-id\" }",
    )
    .await;
    let c = client();
    for key in ["alice", "bob", "carol"] {
        let first = get(&c, &gw.url("/api/users"), &[("x-user-id", key)])
            .await
            .target();
        for _ in 0..1000 {
            assert_eq!(
                get(&c, &gw.url("/api/users"), &[("x-user-id", key)])
                    .await
                    .target(),
                first,
                "key {key} moved"
            );
        }
    }
}

#[tokio::test]
async fn raising_10_to_20_moves_only_keys_entering_the_range() {
    let (gw, _m, _u) = two_upstream_gateway(
        "{ monolith = 90, users = 10 }",
        "sticky = { header = \"x-user-id\" }",
    )
    .await;
    let c = client();
    let keys: Vec<String> = (0..3000).map(|i| format!("user-{i}")).collect();
    let mut before = HashMap::new();
    for k in &keys {
        before.insert(
            k.clone(),
            get(&c, &gw.url("/api/users"), &[("x-user-id", k)])
                .await
                .target(),
        );
    }
    let r = send(
        &c,
        "PUT",
        &gw.admin("/admin/routes/users/split"),
        &[],
        r#"{"monolith": 80, "users": 20}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let seed = strangler::routing::split::salt_seed("users");
    let mut moved = 0;
    for k in &keys {
        let after = get(&c, &gw.url("/api/users"), &[("x-user-id", k)])
            .await
            .target();
        let bucket = strangler::routing::split::bucket(seed, k.as_bytes());
        let entered = (1000..2000).contains(&bucket);
        if before[k] == "users" {
            assert_eq!(after, "users", "{k} left users when its share grew");
        } else if entered {
            assert_eq!(after, "users", "{k} in bucket {bucket} should have moved");
            moved += 1;
        } else {
            assert_eq!(
                after, "monolith",
                "{k} in bucket {bucket} moved without cause"
            );
        }
    }
    assert!(
        moved > 200,
        "about 10 % of 3000 keys should move, moved {moved}"
    );
    // Lowering back returns exactly the original assignment.
    let r = send(
        &c,
        "PUT",
        &gw.admin("/admin/routes/users/split"),
        &[],
        r#"{"monolith": 90, "users": 10}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    for k in keys.iter().take(500) {
        assert_eq!(
            get(&c, &gw.url("/api/users"), &[("x-user-id", k)])
                .await
                .target(),
            before[k]
        );
    }
}

#[tokio::test]
async fn pinned_header_and_cookie_override_split() {
    let pins = "pins = [ { header = \"x-canary\", value = \"always\", upstream = \"users\" }, { cookie = \"ab\", value = \"b\", upstream = \"users\" } ]";
    let (gw, _m, _u) = two_upstream_gateway("{ monolith = 100, users = 0 }", pins).await;
    let c = client();
    assert_eq!(
        get(&c, &gw.url("/api/users"), &[]).await.target(),
        "monolith"
    );
    assert_eq!(
        get(&c, &gw.url("/api/users"), &[("x-canary", "always")])
            .await
            .target(),
        "users"
    );
    assert_eq!(
        get(&c, &gw.url("/api/users"), &[("x-canary", "nope")])
            .await
            .target(),
        "monolith"
    );
    assert_eq!(
        get(&c, &gw.url("/api/users"), &[("cookie", "x=1; ab=b")])
            .await
            .target(),
        "users"
    );
}

#[tokio::test]
async fn missing_sticky_cookie_is_issued_and_then_sticks() {
    let (gw, _m, _u) = two_upstream_gateway(
        "{ monolith = 50, users = 50 }",
        "sticky = { cookie = \"strangler_sid\" }",
    )
    .await;
    let c = client();
    let first = get(&c, &gw.url("/api/users"), &[]).await;
    let set = first
        .headers
        .get("set-cookie")
        .expect("cookie issued")
        .to_str()
        .unwrap()
        .to_string();
    assert!(set.starts_with("strangler_sid="), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && !set.contains("Secure"),
        "{set}"
    );
    let pair = set.split(';').next().unwrap().to_string();
    for _ in 0..50 {
        let r = get(&c, &gw.url("/api/users"), &[("cookie", &pair)]).await;
        assert_eq!(r.target(), first.target());
        assert!(
            r.headers.get("set-cookie").is_none(),
            "no new cookie once present"
        );
    }
}

#[tokio::test]
async fn longest_prefix_host_and_method_matching() {
    let mono = named_upstream("monolith").await;
    let users = named_upstream("users").await;
    let cfg = format!(
        "{}\n[upstreams.monolith]\nurl = \"{}\"\n[upstreams.users]\nurl = \"{}\"\n
[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nsplit = {{ monolith = 100 }}\n
[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nsplit = {{ monolith = 100 }}\n
[[routes]]\nname = \"users-get\"\npath_prefix = \"/api/users\"\nmethods = [\"GET\"]\nsplit = {{ users = 100 }}\n
[[routes]]\nname = \"api-beta\"\npath_prefix = \"/api\"\nheaders = {{ \"x-beta\" = \"1\" }}\nsplit = {{ users = 100 }}\n
[[routes]]\nname = \"admin-host\"\nhost = \"admin.example\"\npath_prefix = \"/api\"\nheaders = {{ \"x-tenant\" = \"a\" }}\nsplit = {{ users = 100 }}\n",
        gateway_section(),
        mono.uri(),
        users.uri()
    );
    let gw = start(&cfg).await;
    let c = client();
    assert_eq!(
        get(&c, &gw.url("/api/users/7"), &[]).await.target(),
        "users"
    );
    assert_eq!(
        send(&c, "POST", &gw.url("/api/users/7"), &[], "{}")
            .await
            .target(),
        "monolith"
    );
    assert_eq!(
        get(&c, &gw.url("/api/usersx"), &[]).await.target(),
        "monolith"
    );
    assert_eq!(get(&c, &gw.url("/other"), &[]).await.target(), "monolith");
    // Same prefix, listed after the generic route: the header condition still wins.
    assert_eq!(
        get(&c, &gw.url("/api/x"), &[("x-beta", "1")])
            .await
            .target(),
        "users"
    );
    assert_eq!(get(&c, &gw.url("/api/x"), &[]).await.target(), "monolith");
    assert_eq!(
        get(
            &c,
            &gw.url("/api/x"),
            &[("host", "ADMIN.example:8080"), ("x-tenant", "a")]
        )
        .await
        .target(),
        "users"
    );
    assert_eq!(
        get(
            &c,
            &gw.url("/api/x"),
            &[("host", "admin.example"), ("x-tenant", "b")]
        )
        .await
        .target(),
        "monolith"
    );
}

#[tokio::test]
async fn no_route_is_a_problem_json_404() {
    let mono = named_upstream("monolith").await;
    let cfg = format!(
        "{}\n[upstreams.monolith]\nurl = \"{}\"\n[[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nsplit = {{ monolith = 100 }}\n",
        gateway_section(),
        mono.uri()
    );
    let gw = start(&cfg).await;
    let r = get(&client(), &gw.url("/elsewhere"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(r.json()["type"], "urn:strangler:problem:no-route");
}

#[tokio::test]
async fn forwarded_headers_reach_the_upstream_and_hop_by_hop_do_not() {
    use wiremock::matchers::{header, header_exists, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let up = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/base/api/x"))
        .and(header("x-forwarded-for", "127.0.0.1"))
        .and(header("x-forwarded-proto", "http"))
        .and(header("x-forwarded-host", "shop.example"))
        .and(header("via", "1.1 strangler"))
        .and(header("host", "shop.example"))
        .and(header_exists("x-keep"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-from", "up")
                .insert_header("keep-alive", "timeout=5"),
        )
        .mount(&up)
        .await;
    let cfg = format!(
        "{}\n[upstreams.m]\nurl = \"{}/base\"\n[[routes]]\nname = \"api\"\nsplit = {{ m = 100 }}\n",
        gateway_section(),
        up.uri()
    );
    let gw = start(&cfg).await;
    let r = get(
        &client(),
        &gw.url("/api/x"),
        &[
            ("host", "shop.example"),
            ("x-keep", "1"),
            ("connection", "x-drop"),
            ("x-drop", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "upstream saw the expected headers");
    assert_eq!(r.headers["x-from"], "up");
    assert_eq!(r.headers["via"], "1.1 strangler");
    assert!(r.headers.get("keep-alive").is_none());
    let received = up.received_requests().await.unwrap();
    assert!(
        received[0].headers.get("x-drop").is_none(),
        "header named in Connection must not be forwarded"
    );
}

#[tokio::test]
async fn successful_writes_on_entity_routes_reach_the_tap() {
    let (gw, _m, _u) =
        two_upstream_gateway("{ monolith = 100, users = 0 }", "entity = \"users\"").await;
    let c = client();
    assert_eq!(
        send(&c, "POST", &gw.url("/api/users/42"), &[], "{}")
            .await
            .status,
        200
    );
    assert_eq!(
        send(&c, "DELETE", &gw.url("/api/users/43"), &[], "")
            .await
            .status,
        200
    );
    get(&c, &gw.url("/api/users/44"), &[]).await;
    let tap = get(&c, &gw.admin("/admin/tap"), &[]).await.json();
    let events = tap["events"].as_array().unwrap();
    let keys: Vec<&str> = events.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["42", "43"], "only the writes, in order: {tap}");
    assert_eq!(events[0]["entity"], "users");
    assert_eq!(events[0]["side"], "monolith");
    assert_eq!(events[1]["method"], "DELETE");
}
