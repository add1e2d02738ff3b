"""Black-box acceptance tests of the gateway: the built binary, real upstream processes,
real HTTP."""

import collections
import json
import os
import shutil
import subprocess
import threading
import time

import pytest
import requests

from conftest import base_config, binary


def targets(gw, n, key=lambda i: f"user-{i}", path="/api/users/1"):
    out = []
    for i in range(n):
        r = gw.get(path, {"x-user-id": key(i)})
        assert r.status_code == 200
        assert r.json()["served_by"] == r.headers["x-strangler-target"], "header names the real upstream"
        out.append(r.headers["x-strangler-target"])
    return out


def test_routing_accuracy(upstreams, gateway):
    mono, svc = upstreams("monolith", "users")
    gw = gateway(base_config(mono, svc))
    got = collections.Counter(targets(gw, 4000))
    share = got["users"] * 100 / 4000
    assert abs(share - 20) <= 2.5, f"users share {share} % for a 20 % split"


def test_stickiness(upstreams, gateway):
    mono, svc = upstreams("monolith", "users")
    gw = gateway(base_config(mono, svc, split="{ monolith = 50, users = 50 }"))
    for user in range(50):
        seen = set(targets(gw, 20, key=lambda _i: f"sticky-{user}"))
        assert len(seen) == 1, f"user sticky-{user} saw {seen}"


def test_raising_the_split_moves_only_new_users(upstreams, gateway):
    mono, svc = upstreams("monolith", "users")
    gw = gateway(base_config(mono, svc, split="{ monolith = 90, users = 10 }"))
    before = targets(gw, 1000)
    r = requests.put(gw.admin("/admin/routes/users/split"), json={"monolith": 70, "users": 30}, timeout=10)
    assert r.status_code == 200 and r.json()["routes"][0]["split"]["users"] == 30
    after = targets(gw, 1000)
    assert all(a == "users" for b, a in zip(before, after) if b == "users"), "nobody leaves the service"
    assert sum(1 for b, a in zip(before, after) if b != a) > 100


def test_rollback_under_load_drops_nothing(upstreams, gateway):
    mono, svc = upstreams("monolith", "users")
    gw = gateway(base_config(mono, svc, split="{ monolith = 50, users = 50 }"))
    stop = threading.Event()
    results = collections.Counter()
    lock = threading.Lock()

    def client(worker):
        s = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            try:
                code = s.get(gw.url("/api/users/1"), headers={"x-user-id": f"w{worker}-{i % 50}"}, timeout=10).status_code
            except requests.RequestException as e:
                code = type(e).__name__
            with lock:
                results[code] += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert requests.put(gw.admin("/admin/routes/users/split"), json={"monolith": 10, "users": 90}, timeout=10).status_code == 200
    time.sleep(0.5)
    r = requests.post(gw.admin("/admin/rollback"), timeout=10)
    assert r.status_code == 200 and r.json()["routes"][0]["split"]["users"] == 50
    time.sleep(0.5)
    r = requests.post(gw.admin("/admin/routes/users/rollback"), timeout=10)
    assert r.status_code == 200 and r.json()["routes"][0]["split"]["monolith"] == 100
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert set(results) == {200}, f"non-200 outcomes during rollback: {dict(results)}"
    assert results[200] > 100
    assert set(targets(gw, 100)) == {"monolith"}


def test_failover_when_the_service_process_dies(upstreams, gateway):
    mono, svc = upstreams("monolith", "users")
    gw = gateway(base_config(mono, svc, split="{ monolith = 50, users = 50 }"))
    assert "users" in set(targets(gw, 200))
    svc.kill()
    after = targets(gw, 300)  # every request must still succeed
    assert after[-100:] == ["monolith"] * 100
    health = requests.get(gw.admin("/admin/health"), timeout=10).json()
    users = next(u for u in health["upstreams"] if u["name"] == "users")
    assert users["available"] is False


def test_failing_health_probe_moves_traffic_and_recovery_brings_it_back(upstreams, gateway):
    mono, svc = upstreams("monolith", "users")
    gw = gateway(base_config(mono, svc, split="{ monolith = 0, users = 100 }"))
    assert set(targets(gw, 20)) == {"users"}
    svc.sick(True)
    deadline = time.time() + 5
    while targets(gw, 1)[0] != "monolith":
        assert time.time() < deadline, "probe failure did not move traffic"
        time.sleep(0.05)
    svc.sick(False)
    deadline = time.time() + 5
    while targets(gw, 1)[0] != "users":
        assert time.time() < deadline, "probe recovery did not bring traffic back"
        time.sleep(0.05)


def test_pinned_canary_header(upstreams, gateway):
    mono, svc = upstreams("monolith", "users")
    extra = 'pins = [{ header = "x-canary", value = "yes", upstream = "users" }]'
    gw = gateway(base_config(mono, svc, route_extra=extra, split="{ monolith = 100, users = 0 }"))
    assert gw.get("/api/users/1", {"x-canary": "yes"}).headers["x-strangler-target"] == "users"
    assert gw.get("/api/users/1").headers["x-strangler-target"] == "monolith"


def test_bad_config_is_refused_with_file_route_and_field(tmp_path, upstreams):
    mono, svc = upstreams("monolith", "users")
    path = tmp_path / "bad.toml"
    path.write_text(base_config(mono, svc, split="{ monolith = 100, users = 10 }").replace("{dir}", str(tmp_path)))
    for cmd in (["check", "--config", str(path)], ["serve", "--config", str(path)]):
        out = subprocess.run([binary(), *cmd], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0
        assert f'{path}: route "users": split sums to 110, must be 100' in out.stderr


def test_admin_needs_token_off_loopback(upstreams, gateway, tmp_path):
    mono, svc = upstreams("monolith", "users")
    path = tmp_path / "open.toml"
    text = base_config(mono, svc).replace('admin_listen = "127.0.0.1:0"', 'admin_listen = "0.0.0.0:0"')
    path.write_text(text.replace("{dir}", str(tmp_path)))
    out = subprocess.run([binary(), "serve", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "admin_token must be set" in out.stderr
    gw = gateway(text.replace('control_poll = "100ms"', 'control_poll = "100ms"\nadmin_token = "t0ken"'))
    port = gw.admin_addr.rsplit(":", 1)[1]
    url = f"http://127.0.0.1:{port}/admin/routes"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"authorization": "Bearer t0ken"}, timeout=10).status_code == 200


def test_metrics_exposition_is_valid(upstreams, gateway):
    mono, svc = upstreams("monolith", "users")
    gw = gateway(base_config(mono, svc))
    targets(gw, 50)
    text = requests.get(gw.admin("/metrics"), timeout=10).text
    for name in ["strangler_gateway_requests_total", "strangler_gateway_upstream_latency_seconds_bucket",
                 "strangler_gateway_added_latency_seconds_bucket", "strangler_router_table_version",
                 "strangler_router_upstream_healthy", "strangler_router_route_share_percent"]:
        assert name in text, f"{name} missing"
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("STRANGLER_REQUIRE_SERVICES") == "1":
            pytest.fail("promtool is required in CI (Debian package prometheus)")
        pytest.skip("promtool not installed")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_sigterm_drains_and_exits_zero(upstreams, gateway):
    mono, svc = upstreams("monolith", "users")
    gw = gateway(base_config(mono, svc))
    targets(gw, 10)
    assert gw.stop() == 0


def test_restart_resumes_the_same_table(upstreams, gateway):
    mono, svc = upstreams("monolith", "users")
    text = base_config(mono, svc)
    gw = gateway(text, name="first")
    r = requests.put(gw.admin("/admin/routes/users/split"), json={"monolith": 65, "users": 35}, timeout=10)
    version = r.json()["version"]
    assert gw.stop() == 0
    gw2 = gateway(text, name="first")
    routes = requests.get(gw2.admin("/admin/routes"), timeout=10).json()
    assert routes["version"] == version
    assert routes["routes"][0]["split"]["users"] == 35


def parked_connections(gw):
    text = requests.get(gw.admin("/metrics"), timeout=10).text
    for line in text.splitlines():
        if line.startswith("strangler_gateway_connections_parked "):
            return float(line.split()[1])
    return 0.0


def test_idle_keep_alive_connections_are_parked_and_keep_working(upstreams, gateway):
    import http.client

    mono, svc = upstreams("monolith", "users")
    gw = gateway(base_config(mono, svc, gateway_extra='[gateway.timeouts]\npark = "100ms"'))
    host, port = gw.addr.rsplit(":", 1)
    conns = []
    for i in range(200):
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.request("GET", "/api/users/1", headers={"x-user-id": f"p-{i}"})
        r = c.getresponse()
        assert r.status == 200 and r.read()
        conns.append((c, c.sock))
    deadline = time.time() + 10
    while parked_connections(gw) < 200 and time.time() < deadline:
        time.sleep(0.1)
    assert parked_connections(gw) == 200, "every quiet connection is parked"
    for i, (c, sock) in enumerate(conns):
        c.request("GET", "/api/users/1", headers={"x-user-id": f"p-{i}"})
        r = c.getresponse()
        assert r.status == 200 and r.read()
        assert c.sock is sock, "the same TCP connection served the request after its park"
    for c, _ in conns:
        c.close()


def test_idle_http2_connections_are_parked_and_resumed_by_another_client(upstreams, gateway, tmp_path):
    """curl (nghttp2) over one TLS connection, 0.6 s between requests: the connection is
    parked between them and resumed for each, uploads included."""
    mono, svc = upstreams("monolith", "users")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    extra = f'[gateway.timeouts]\npark = "100ms"\n[gateway.tls]\ncert = "{cert}"\nkey = "{key}"'
    gw = gateway(base_config(mono, svc, split="{ monolith = 100 }", gateway_extra=extra))
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"u" * 300_000)
    url = f"https://{gw.addr}/api/users/7"
    curl = subprocess.Popen(
        ["curl", "-sk", "--http2", "--rate", "100/m", "-H", "x-user-id: p-7",
         "--data-binary", f"@{upload}", "-w", "\\n%{http_version} %{num_connects} %{http_code}\\n"]
        + [url] * 5,
        stdout=subprocess.PIPE, text=True)
    seen_parked = 0.0
    while curl.poll() is None:
        seen_parked = max(seen_parked, parked_connections(gw))
        time.sleep(0.05)
    lines = curl.stdout.read().splitlines()
    assert curl.returncode == 0
    bodies = [json.loads(b) for b in lines[0::2]]
    outcomes = [tuple(o.split()) for o in lines[1::2]]
    assert outcomes == [("2", "1", "200")] + [("2", "0", "200")] * 4, \
        "five uploads over HTTP/2 on one connection"
    assert [b["received"] for b in bodies] == [300_000] * 5, "every upload arrived whole"
    assert seen_parked == 1.0, "the connection was parked between requests"
