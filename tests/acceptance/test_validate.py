"""The consistency validator, the initial copy and the audit log, driven through the CLI:
exit codes 0 (consistent), 1 (discrepancies) and 2 (error), the JSON report's fixed shape,
repair then a clean re-validation, a backfill, and the audit chain after tampering."""

import json
import sqlite3
import subprocess

from conftest import binary, sync_admin_address


def cli(*args):
    return subprocess.run([binary(), *args], capture_output=True, text=True, timeout=120)


def setup(tmp_path, rows=2000):
    mono, svc = tmp_path / "mono.db", tmp_path / "svc.db"
    a, b = sqlite3.connect(mono), sqlite3.connect(svc)
    a.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, name TEXT, score REAL)")
    b.execute("CREATE TABLE accounts (user_id INTEGER PRIMARY KEY, mail TEXT, first TEXT, last TEXT, score REAL)")
    for i in range(1, rows + 1):
        a.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (i, f"User{i}@X.io", f"Ada L{i}", i / 4))
        b.execute("INSERT INTO accounts VALUES (?, ?, ?, ?, ?)", (i, f"user{i}@x.io", "Ada", f"L{i}", i / 4))
    a.commit()
    b.commit()
    config = tmp_path / "v.toml"
    config.write_text(f"""
[gateway]
control = "sqlite://{tmp_path}/control.db"
[sides.monolith]
database = "sqlite://{mono}"
[sides.users]
database = "sqlite://{svc}"
[[entities]]
name = "users"
monolith = {{ table = "users", key = ["id"] }}
users = {{ table = "accounts", key = ["user_id"] }}
columns = {{ id = "user_id", email = "mail", score = "score" }}
transforms = [
  {{ split = "name", into = ["first", "last"], separator = " " }},
  {{ column = "email", op = "lower" }},
]
authority = "monolith"
""")
    return config, a, b


def test_consistent_then_discrepancies_then_repair(tmp_path):
    config, _, b = setup(tmp_path)
    r = cli("validate", "--config", str(config), "--format", "json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["consistent"] is True
    e = report["entities"][0]
    assert e["rows"] == {"monolith": 2000, "users": 2000}
    assert e["only_in"] == {"monolith": 0, "users": 0} and e["changed"] == 0

    b.execute("DELETE FROM accounts WHERE user_id IN (5, 6)")
    b.execute("UPDATE accounts SET last = 'Other' WHERE user_id = 7")
    b.execute("UPDATE accounts SET score = score + 1 WHERE user_id = 8")
    b.execute("INSERT INTO accounts (user_id, mail) VALUES (9000, 'extra')")
    b.commit()
    r = cli("validate", "--config", str(config), "--format", "json", "--examples", "5")
    assert r.returncode == 1, r.stderr
    e = json.loads(r.stdout)["entities"][0]
    assert set(e) >= {"entity", "rows", "only_in", "changed", "duplicate_keys", "drift", "examples"}
    assert e["only_in"] == {"monolith": 2, "users": 1}
    assert e["changed"] == 2
    assert e["changed_columns"] == {"name:last": 1, "score": 1}
    assert [x["key"] for x in e["examples"]["missing"]] == [{"id": 5}, {"id": 6}]
    assert e["examples"]["extra"][0]["key"] == {"id": 9000}
    changed = {x["key"]["id"]: x["columns"] for x in e["examples"]["changed"]}
    assert changed[7] == {"name:last": {"monolith": "L7", "users": "Other"}}
    assert changed[8] == {"score": {"monolith": 2, "users": 3}}

    r = cli("validate", "--config", str(config), "--repair", "--dry-run", "--format", "json")
    assert r.returncode == 1
    plan = json.loads(r.stdout)["entities"][0]["repair"]
    assert plan["dry_run"] is True and plan["upserts"] == 4 and plan["deletes"] == 1
    assert {"key": {"id": 9000}, "action": "delete", "to": "users", "why": "extra"} in plan["actions"]

    assert cli("sync", "install", "--config", str(config)).returncode == 0
    r = cli("validate", "--config", str(config), "--repair", "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["entities"][0]["repair"]["still_different"] == 0
    r = cli("validate", "--config", str(config), "--format", "text")
    assert r.returncode == 0 and "consistent" in r.stdout


def test_bad_input_exits_2_naming_what(tmp_path):
    config, _, _ = setup(tmp_path, rows=10)
    r = cli("validate", "--config", str(config), "--entity", "nope")
    assert r.returncode == 2 and '"nope" is not in the config' in r.stderr
    text = config.read_text().replace('"mail"', '"missing_col"')
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    r = cli("validate", "--config", str(bad))
    assert r.returncode == 2
    assert 'entity "users"' in r.stderr and 'side "users"' in r.stderr and "missing_col" in r.stderr


def test_backfill_copies_what_the_service_lacks(tmp_path):
    config, _, b = setup(tmp_path, rows=3000)
    b.execute("DELETE FROM accounts WHERE user_id % 2 = 0")
    b.commit()
    assert cli("sync", "install", "--config", str(config)).returncode == 0
    r = cli("sync", "backfill", "--config", str(config), "--no-wait", "--chunk", "700")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)["entities"][0]
    assert done["progress"] == {"after": [3000], "read": 3000, "copied": 1500, "refused": 0, "done": True}
    assert done["refusals"] == []
    # The copies are written by the backfill itself: the sides match with no engine running.
    r = cli("validate", "--config", str(config), "--format", "json")
    assert r.returncode == 0, r.stdout
    # A finished copy is not read again; with the engine running, waiting for it returns.
    engine = subprocess.Popen([binary(), "sync", "run", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = cli("sync", "backfill", "--config", str(config))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["entities"][0]["progress"]["read"] == 3000
    finally:
        engine.terminate()
        engine.wait(timeout=20)


def test_audit_log_verify_names_the_first_broken_record(tmp_path):
    config, _, b = setup(tmp_path, rows=50)
    b.execute("DELETE FROM accounts WHERE user_id = 3")
    b.commit()
    for _ in range(3):
        assert cli("validate", "--config", str(config)).returncode == 1
    r = cli("audit", "verify", "--config", str(config))
    assert r.returncode == 0 and "intact: 6 records" in r.stdout, r.stdout
    head = r.stdout.split("head ")[1].strip()
    shown = [json.loads(line) for line in cli("audit", "show", "--config", str(config), "--kind", "validation").stdout.splitlines()]
    assert [x["seq"] for x in shown] == [1, 3, 5]

    control = sqlite3.connect(tmp_path / "control.db")
    control.execute("UPDATE strangler_audit SET body = replace(body, '\"id\":3', '\"id\":4') WHERE seq = 4")
    control.commit()
    r = cli("audit", "verify", "--config", str(config))
    assert r.returncode == 1 and "record 4 was altered" in r.stdout, r.stdout
    control.execute("DELETE FROM strangler_audit WHERE seq >= 4")
    control.commit()
    r = cli("audit", "verify", "--config", str(config))
    assert r.returncode == 0
    r = cli("audit", "verify", "--config", str(config), "--anchor", head)
    assert r.returncode == 1 and "record 6 of the anchor is gone" in r.stdout, r.stdout


def test_sync_run_backfills_entities_marked_for_it(tmp_path):
    import time
    config, _, b = setup(tmp_path, rows=1500)
    b.execute("DELETE FROM accounts WHERE user_id > 500")
    b.commit()
    config.write_text(config.read_text().replace('authority = "monolith"', 'authority = "monolith"\nbackfill = true'))
    assert cli("sync", "install", "--config", str(config)).returncode == 0
    assert cli("validate", "--config", str(config)).returncode == 1
    engine = subprocess.Popen([binary(), "sync", "run", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while cli("validate", "--config", str(config)).returncode != 0:
            assert time.time() < deadline, "the backfill did not complete"
            time.sleep(0.5)
    finally:
        engine.terminate()
        engine.wait(timeout=20)
    shown = [json.loads(line) for line in cli("audit", "show", "--config", str(config), "--kind", "backfill").stdout.splitlines()]
    assert len(shown) == 1 and json.loads(shown[0]["body"])["progress"]["copied"] == 1000


def test_continuous_validation_in_sync_run_with_its_admin_endpoints(tmp_path):
    import time
    import requests
    config, a, b = setup(tmp_path, rows=500)
    config.write_text(config.read_text().replace(
        'authority = "monolith"',
        'authority = "monolith"\nlag_tolerance = "200ms"\nvalidate = { interval = "1s" }'))
    assert cli("sync", "install", "--config", str(config)).returncode == 0
    worker = subprocess.Popen([binary(), "sync", "run", "--config", str(config), "--admin-listen", "127.0.0.1:0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        admin = sync_admin_address(worker)

        def latest():
            return requests.get(admin + "/admin/validation", timeout=5).json()["entities"]["users"]

        # The interval pass runs on its own.
        deadline = time.time() + 30
        while (latest().get("report") or {}).get("consistent") is not True:
            assert time.time() < deadline, latest()
            time.sleep(0.2)
        assert latest()["trigger"] == "interval" and "next_at_ms" in latest()

        # A write nobody captured (the engine's guard set around it): drift the engine cannot see.
        b.execute("UPDATE _strangler_guard SET applying = 1")
        b.execute("UPDATE accounts SET mail = 'drift@x.io' WHERE user_id = 7")
        b.execute("UPDATE _strangler_guard SET applying = 0")
        b.commit()
        r = requests.post(admin + "/admin/validation/users", timeout=5)
        assert r.status_code == 202 and r.json()["queued"] is True
        deadline = time.time() + 30
        while not ((latest().get("report") or {}).get("changed") == 1):
            assert time.time() < deadline, latest()
            time.sleep(0.2)
        report = latest()["report"]
        assert report["examples"]["changed"][0]["key"] == {"id": 7}
        assert report["changed_columns"] == {"email": 1}
        metrics = requests.get(admin + "/metrics", timeout=5).text
        assert 'strangler_validate_discrepancies{entity="users",kind="changed"} 1' in metrics

        # A key the engine applies is compared again once the lag tolerance has passed.
        a.execute("INSERT INTO users VALUES (9001, 'New@X.io', 'Bo Z', 1.5)")
        a.commit()
        deadline = time.time() + 30
        while not (latest().get("recheck") or {}).get("keys"):
            assert time.time() < deadline, latest()
            time.sleep(0.2)
        assert latest()["recheck"]["differing"] == 0, latest()

        r = requests.post(admin + "/admin/validation/nope", timeout=5)
        assert r.status_code == 404 and "users" in r.json()["detail"]
        assert r.headers["content-type"] == "application/problem+json"
        r = requests.get(admin + "/admin/validation/users", timeout=5)
        assert r.status_code == 405 and r.headers["allow"] == "POST"

        audit = requests.get(admin + "/admin/audit?kind=discrepancy&entity=users&limit=1000", timeout=5).json()
        assert audit["records"] and all(x["kind"] == "discrepancy" for x in audit["records"])
        assert any({"key": {"id": 7}, "kind": "changed"} in json.loads(x["body"])["keys"] for x in audit["records"])
        assert audit["next_after"] == audit["records"][-1]["seq"]
        r = requests.get(admin + "/admin/audit?limit=0", timeout=5)
        assert r.status_code == 400 and "limit" in r.json()["detail"]
    finally:
        worker.terminate()
        assert worker.wait(timeout=20) == 0
    assert cli("audit", "verify", "--config", str(config)).returncode == 0
