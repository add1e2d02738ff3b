//! Route match + target pick on a 50-route table: the per-request routing work.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};

fn fifty_routes() -> String {
    let mut cfg = String::from(
        "[gateway]\ncontrol = \"sqlite://:memory:\"\n[upstreams.monolith]\nurl = \"http://127.0.0.1:3000\"\n[upstreams.svc]\nurl = \"http://127.0.0.1:3001\"\n",
    );
    for i in 0..50 {
        cfg.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\npath_prefix = \"/api/v1/resource{i}\"\nsplit = {{ monolith = 90, svc = 10 }}\nfallback = \"monolith\"\nsticky = {{ header = \"x-user-id\" }}\n"
        ));
    }
    cfg
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cfg =
        strangler::config::Config::parse(Path::new("bench.toml"), &fifty_routes()).expect("config");
    let router = rt.block_on(async {
        let control = std::sync::Arc::new(
            strangler::control::ControlStore::open("sqlite://:memory:")
                .await
                .expect("control"),
        );
        strangler::routing::Router::start(cfg, control)
            .await
            .expect("router")
    });
    let mut headers = HeaderMap::new();
    headers.insert("x-user-id", HeaderValue::from_static("customer-123456"));
    headers.insert("host", HeaderValue::from_static("shop.example"));
    let ip: IpAddr = "10.1.2.3".parse().expect("ip");
    let path = "/api/v1/resource37/items/991";

    c.bench_function("route match + sticky pick (50 routes)", |b| {
        b.iter(|| {
            let table = router.current();
            let route = table
                .find(
                    &Method::GET,
                    Some("shop.example"),
                    black_box(path),
                    &headers,
                )
                .expect("route");
            black_box(route.pick(&headers, ip).expect("pick").target)
        })
    });
    c.bench_function("route match only (50 routes)", |b| {
        let table = router.current();
        b.iter(|| {
            black_box(
                table
                    .find(
                        &Method::GET,
                        Some("shop.example"),
                        black_box(path),
                        &headers,
                    )
                    .is_some(),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
