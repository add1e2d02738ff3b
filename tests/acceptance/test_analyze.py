"""The boundary analyzer, black-box: `strangler analyze` on a real-shaped e-commerce monolith
in SQLite (tests/fixtures/shop.sql) with an evidence file, its JSON report's fixed shape, the
Markdown and DOT renderings, bad input, and the emitted config that `strangler check` accepts."""

import json
import pathlib
import sqlite3
import subprocess

from conftest import binary

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def shop(tmp):
    db = tmp / "shop.db"
    with sqlite3.connect(db) as c:
        c.executescript((FIXTURES / "shop.sql").read_text())
    return f"sqlite://{db}"


def analyze(*args):
    return subprocess.run([binary(), "analyze", *args], capture_output=True, text=True, timeout=60)


def service_of(report, table):
    return next(s["name"] for s in report["services"] if table in s["tables"])


def test_report_shape_and_a_sound_split(tmp_path):
    url = shop(tmp_path)
    r = analyze("--database", url, "--evidence", str(FIXTURES / "shop-evidence.jsonl"))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    for key in ["services", "cut", "cycles", "metrics", "inferred_fks", "unknown_tables", "order"]:
        assert key in report, key
    assert set(report["cut"]) == {"foreign_keys", "transactions", "endpoints"}
    assert set(report["metrics"]) == {"modularity", "cohesion", "coupling", "tx_local_share"}
    for s in report["services"]:
        assert set(s) >= {"name", "tables", "why"} and s["why"]
    assert report["inferred_fks"] == 7
    assert report["unknown_tables"] == {"ghost_table": 3}
    assert service_of(report, "users") == service_of(report, "user_sessions")
    assert service_of(report, "payments") == service_of(report, "refunds")
    assert service_of(report, "orders") != service_of(report, "payments")
    assert service_of(report, "products") == "products"
    crossing = {(k["from"], k["to"]) for k in report["cut"]["foreign_keys"]}
    assert ("payments", "orders") in crossing
    assert any(e["name"] == "POST /orders/{id}/payments" for e in report["cut"]["endpoints"])
    assert 0 < report["metrics"]["modularity"] < 1
    # Determinism: the same input, the same bytes.
    again = analyze("--database", url, "--evidence", str(FIXTURES / "shop-evidence.jsonl"))
    assert again.stdout == r.stdout


def test_exact_count_keep_together_markdown_and_dot(tmp_path):
    url = shop(tmp_path)
    r = analyze("--database", url, "--services", "3", "--keep-together", "users,products")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert len(report["services"]) == 3
    assert service_of(report, "users") == service_of(report, "products")
    md = analyze("--database", url, "--format", "markdown")
    assert md.returncode == 0 and md.stdout.startswith("# Proposed services")
    out = tmp_path / "shop.dot"
    dot = analyze("--database", url, "--format", "dot", "--out", str(out))
    assert dot.returncode == 0, dot.stderr
    assert out.read_text().startswith("digraph services {")
    assert "svg" in dot.stdout.lower() or "graphviz" in dot.stdout.lower()


def test_emitted_config_passes_check(tmp_path):
    url = shop(tmp_path)
    cfg = tmp_path / "step1.toml"
    r = analyze("--database", url, "--evidence", str(FIXTURES / "shop-evidence.jsonl"),
                "--emit-config", str(cfg))
    assert r.returncode == 0, r.stderr
    text = cfg.read_text()
    assert "[[entities]]" in text and "[[routes]]" in text
    check = subprocess.run([binary(), "check", "--config", str(cfg)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    assert ": ok (" in check.stdout


def test_bad_input_is_named(tmp_path):
    url = shop(tmp_path)
    bad = tmp_path / "ev.jsonl"
    bad.write_text('{"tables": ["users"]}\n{"tables": "users"}\n')
    r = analyze("--database", url, "--evidence", str(bad))
    assert r.returncode != 0
    assert "ev.jsonl: line 2" in r.stderr
    r = analyze("--database", url, "--pg-log", str(tmp_path / "missing.log"))
    assert r.returncode != 0 and "missing.log" in r.stderr
    r = analyze("--database", url, "--services", "0")
    assert r.returncode != 0 and "--services" in r.stderr
    r = analyze("--database", url, "--services", "99")
    assert r.returncode != 0 and "only 21 tables" in r.stderr
    r = analyze("--database", "sqlite://" + str(tmp_path / "no" / "such" / "dir.db"))
    assert r.returncode != 0 and "database" in r.stderr
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    r = analyze("--database", f"sqlite://{empty}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["services"] == []
