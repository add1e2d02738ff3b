"""The sync engine, black-box: writes go through the gateway to both sides (the monolith and
the service each write their own SQLite database), and the two databases converge."""

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest
import requests

from conftest import base_config, binary, sync_admin_address


def make_dbs(tmp):
    mono, svc = tmp / "monolith.db", tmp / "service.db"
    with sqlite3.connect(mono) as c:
        c.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, name TEXT)")
    with sqlite3.connect(svc) as c:
        c.execute("CREATE TABLE accounts (user_id INTEGER PRIMARY KEY, email TEXT, full_name TEXT)")
    return mono, svc


def sync_sections(mono, svc):
    return f"""
[sync]
poll = "1s"

[sides.monolith]
database = "sqlite://{mono}"

[sides.users]
database = "sqlite://{svc}"

[[entities]]
name = "users"
monolith = {{ table = "users", key = ["id"] }}
users = {{ table = "accounts", key = ["user_id"] }}
columns = {{ id = "user_id", email = "email", name = "full_name" }}
authority = "monolith"
conflict = "last_write_wins"
lag_tolerance = "2s"
"""


def rows(db, sql):
    with sqlite3.connect(db, timeout=30) as c:
        return c.execute(sql).fetchall()


def both(mono, svc):
    return (rows(mono, "SELECT id, email, name FROM users ORDER BY id"),
            rows(svc, "SELECT user_id, email, full_name FROM accounts ORDER BY user_id"))


def cli(*args):
    return subprocess.run([binary(), *args], capture_output=True, text=True, timeout=60)


def start(tmp_path, upstreams, gateway, split="{ monolith = 50, users = 50 }"):
    mono, svc = make_dbs(tmp_path)
    m, s = upstreams("monolith", "users", dbs={
        "monolith": (str(mono), "users", "id", "name"),
        "users": (str(svc), "accounts", "user_id", "full_name"),
    })
    text = base_config(m, s, split=split) + sync_sections(mono, svc)
    path = tmp_path / "sync.toml"
    path.write_text(text.replace("{dir}", str(tmp_path)))
    r = cli("sync", "install", "--config", str(path))
    assert r.returncode == 0, r.stderr
    return mono, svc, gateway(text), path


def test_writes_through_the_gateway_reach_both_databases(tmp_path, upstreams, gateway):
    mono, svc, gw, _ = start(tmp_path, upstreams, gateway)
    sides = set()
    for i in range(1, 201):
        r = requests.put(gw.url(f"/api/users/{i}"), json={"email": f"u{i}@x.io", "name": f"User {i}"},
                         headers={"x-user-id": f"user-{i}"}, timeout=10)
        assert r.status_code == 200
        sides.add(r.headers["x-strangler-target"])
    assert sides == {"monolith", "users"}, "the split sent writes to both sides"
    for i in range(1, 201, 7):
        requests.put(gw.url(f"/api/users/{i}"), json={"email": f"new{i}@x.io", "name": f"Renamed {i}"},
                     headers={"x-user-id": f"user-{i}"}, timeout=10)
    # Poll is 1 s, but every write the gateway forwards wakes the engine at once.
    deadline = time.time() + 10
    while time.time() < deadline:
        left, right = both(mono, svc)
        if left == right and len(left) == 200:
            break
        time.sleep(0.05)
    left, right = both(mono, svc)
    assert left == right and len(left) == 200
    assert left[7] == (8, "new8@x.io", "Renamed 8")
    status = requests.get(gw.admin("/admin/sync"), timeout=5).json()
    applied = {(d["from"], d["to"]): d["applied"] for d in status["directions"] if d["entity"] == "users"}
    assert applied[("monolith", "users")] > 0 and applied[("users", "monolith")] > 0, status
    assert all(d["state"] == "running" for d in status["directions"]), status
    metrics = requests.get(gw.admin("/metrics"), timeout=5).text
    assert 'strangler_sync_changes_applied_total{entity="users",direction="monolith_to_users"}' in metrics
    assert 'strangler_sync_lag_seconds{entity="users"' in metrics


def test_a_conflict_is_settled_and_listed(tmp_path, upstreams, gateway):
    mono, svc, gw, path = start(tmp_path, upstreams, gateway)
    requests.put(gw.url("/api/users/1"), json={"email": "a@x.io", "name": "Ann"},
                 headers={"x-user-id": "user-1"}, timeout=10)
    # The write went to one side: wait until the engine has copied it to the other.
    deadline = time.time() + 10
    while time.time() < deadline:
        left, right = both(mono, svc)
        if left and left == right:
            break
        time.sleep(0.05)
    assert both(mono, svc)[0] == both(mono, svc)[1] == [(1, "a@x.io", "Ann")]
    assert gw.stop() == 0
    # Both sides change the same user while no engine runs: a conflict.
    with sqlite3.connect(mono) as c:
        c.execute("UPDATE users SET name = 'Ann (monolith)' WHERE id = 1")
    time.sleep(0.01)
    with sqlite3.connect(svc) as c:
        c.execute("UPDATE accounts SET full_name = 'Ann (service)' WHERE user_id = 1")
    gw2 = gateway(path.read_text(), name="gw2")
    deadline = time.time() + 10
    while time.time() < deadline:
        left, right = both(mono, svc)
        if left == right:
            break
        time.sleep(0.05)
    assert both(mono, svc)[0] == both(mono, svc)[1]
    assert both(mono, svc)[0] == [(1, "a@x.io", "Ann (service)")], "the later write wins"
    # The record is stored right after both sides commit: allow it a moment.
    deadline = time.time() + 5
    conflicts = []
    while not conflicts and time.time() < deadline:
        conflicts = requests.get(gw2.admin("/admin/conflicts"), timeout=5).json()["conflicts"]
        time.sleep(0.05)
    log = []
    while not gw2.lines.empty():
        log.append(gw2.lines.get())
    assert len(conflicts) == 1, "".join(log)[-4000:]
    c = conflicts[0]
    assert c["entity"] == "users" and c["policy"] == "last_write_wins" and c["outcome"] == "right"
    assert c["left"]["row"]["name"] == "Ann (monolith)" and c["right"]["row"]["name"] == "Ann (service)"


def test_sync_cli_refuses_a_bad_mapping_and_uninstall_leaves_nothing(tmp_path):
    mono, svc = make_dbs(tmp_path)
    good = f"""
[gateway]
control = "sqlite://{tmp_path}/c.db"
""" + sync_sections(mono, svc)
    bad = tmp_path / "bad.toml"
    bad.write_text(good.replace('name = "full_name"', 'name = "fullname"'))
    r = cli("sync", "install", "--config", str(bad))
    assert r.returncode != 0
    assert 'entity "users": side "users": table "accounts": column "fullname" does not exist' in r.stderr
    ok = tmp_path / "ok.toml"
    ok.write_text(good)
    assert cli("sync", "install", "--config", str(ok)).returncode == 0
    assert cli("sync", "uninstall", "--config", str(ok)).returncode == 0
    for db in (mono, svc):
        assert rows(db, "SELECT name FROM sqlite_master WHERE name LIKE '%strangler%'") == []


def nats_url():
    url = os.environ.get("STRANGLER_TEST_NATS_URL")
    if not url:
        assert os.environ.get("STRANGLER_REQUIRE_SERVICES") != "1", "STRANGLER_TEST_NATS_URL is required"
        pytest.skip("set STRANGLER_TEST_NATS_URL to run broker-mode tests")
    return url


def test_broker_mode_two_workers_one_killed(tmp_path, upstreams, gateway):
    """The gateway's engine and a separate `sync run` worker share the work through NATS
    JetStream; the separate worker is killed with SIGKILL mid-stream and nothing is lost."""
    url = nats_url()
    tag = f"a{os.getpid()}x{int(time.time() * 1000) % 10**8}"
    broker = f"""
[sync.broker]
url = "{url}"
stream = "T{tag}"
subject = "{tag}"
bucket = "{tag}_leases"
lease = "1s"
"""
    mono, svc = make_dbs(tmp_path)
    m, s = upstreams("monolith", "users", dbs={
        "monolith": (str(mono), "users", "id", "name"),
        "users": (str(svc), "accounts", "user_id", "full_name"),
    })
    text = base_config(m, s, split="{ monolith = 50, users = 50 }") + sync_sections(mono, svc) + broker
    path = tmp_path / "sync.toml"
    path.write_text(text.replace("{dir}", str(tmp_path)))
    r = cli("sync", "install", "--config", str(path))
    assert r.returncode == 0, r.stderr
    r = cli("check", "--config", str(path))
    assert r.returncode == 0 and f"broker {url}" in r.stdout, r.stdout + r.stderr
    worker = subprocess.Popen([binary(), "sync", "run", "--config", str(path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        gw = gateway(text)
        for i in range(1, 301):
            if i == 150:
                worker.send_signal(signal.SIGKILL)
                worker.wait()
            r = requests.put(gw.url(f"/api/users/{i}"), json={"email": f"u{i}@x.io", "name": f"User {i}"},
                             headers={"x-user-id": f"user-{i}"}, timeout=10)
            assert r.status_code == 200
        deadline = time.time() + 20
        while time.time() < deadline:
            left, right = both(mono, svc)
            if left == right and len(left) == 300:
                break
            time.sleep(0.1)
        left, right = both(mono, svc)
        assert left == right and len(left) == 300
        status = requests.get(gw.admin("/admin/sync"), timeout=5).json()
        owners = status["links"]
        for unit in ("group.users", "relay.monolith", "relay.users"):
            assert "this worker" in owners[unit], owners
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def sync_only_config(tmp_path, gateway_extra=""):
    mono, svc = make_dbs(tmp_path)
    text = f"""
[gateway]
control = "sqlite://{tmp_path}/control.db"
{gateway_extra}
""" + sync_sections(mono, svc)
    path = tmp_path / "sync.toml"
    path.write_text(text)
    r = cli("sync", "install", "--config", str(path))
    assert r.returncode == 0, r.stderr
    return mono, svc, path


def test_sync_run_serves_health_metrics_and_status(tmp_path):
    mono, svc, path = sync_only_config(tmp_path)
    worker = subprocess.Popen([binary(), "sync", "run", "--config", str(path), "--admin-listen", "127.0.0.1:0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        admin = sync_admin_address(worker)
        with sqlite3.connect(mono) as c:
            c.execute("INSERT INTO users (id, email, name) VALUES (1, 'a@x.io', 'Ann')")
        deadline = time.time() + 10
        while time.time() < deadline and rows(svc, "SELECT count(*) FROM accounts") != [(1,)]:
            time.sleep(0.05)
        assert rows(svc, "SELECT user_id, email, full_name FROM accounts") == [(1, "a@x.io", "Ann")]
        assert requests.get(admin + "/healthz", timeout=5).json() == {"status": "ok"}
        status = requests.get(admin + "/admin/sync", timeout=5).json()
        applied = [(d["entity"], d["from"], d["to"]) for d in status["directions"] if d["applied"] == 1]
        assert applied == [("users", "monolith", "users")], status
        metrics = requests.get(admin + "/metrics", timeout=5).text
        assert 'strangler_sync_changes_applied_total{entity="users",direction="monolith_to_users"} 1' in metrics
        assert requests.get(admin + "/admin/conflicts", timeout=5).json() == {"conflicts": []}
        # A changelog row no decoder can read is quarantined, listed and counted; the stream
        # goes on around it.
        with sqlite3.connect(mono) as c:
            c.execute("INSERT INTO _strangler_changes (tbl, op, old, new, tx, ts, pk) "
                      "VALUES ('users', 'I', NULL, '{broken', NULL, 1, '9')")
            c.execute("INSERT INTO users (id, email, name) VALUES (2, 'b@x.io', 'Bob')")
        deadline = time.time() + 10
        while time.time() < deadline and rows(svc, "SELECT count(*) FROM accounts") != [(2,)]:
            time.sleep(0.05)
        assert rows(svc, "SELECT count(*) FROM accounts") == [(2,)]
        quarantine = requests.get(admin + "/admin/sync", timeout=5).json()["quarantine"]
        assert len(quarantine) == 1 and quarantine[0]["key"] == "9", quarantine
        assert "cannot decode" in quarantine[0]["reason"], quarantine
        metrics = requests.get(admin + "/metrics", timeout=5).text
        assert 'strangler_sync_quarantined{entity="users"} 1' in metrics
        r = requests.post(admin + "/admin/sync/quarantine/999/retry", timeout=5)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        r = requests.post(admin + f"/admin/sync/quarantine/{quarantine[0]['id']}/retry", timeout=5)
        assert r.status_code == 202, r.text
        # The gateway's calls are not a worker's: a clear 404, not a route table.
        r = requests.get(admin + "/admin/routes", timeout=5)
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert "/admin/sync" in r.json()["detail"]
    finally:
        worker.terminate()
        assert worker.wait(timeout=10) == 0


def test_sync_run_refuses_a_public_admin_listener_without_token(tmp_path):
    _, _, path = sync_only_config(tmp_path)
    r = subprocess.run([binary(), "sync", "run", "--config", str(path), "--admin-listen", "0.0.0.0:0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "admin_token" in r.stderr and "0.0.0.0:0" in r.stderr and "sync.toml" in r.stderr, r.stderr
