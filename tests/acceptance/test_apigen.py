"""The API generator, black-box: `strangler apigen` writes an OpenAPI 3.1 document that
openapi-spec-validator accepts; `strangler apigen serve` serves it on SQLite, PostgreSQL and
MariaDB, and schemathesis finds no failure of its default checks against each; injection
attempts in every parameter come back as 400s or literal matches with the data intact."""

import json
import os
import pathlib
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
import requests
from openapi_spec_validator import validate

from conftest import binary

SQLITE = """
CREATE TABLE kinds (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL UNIQUE,
  price NUMERIC(10,2) NOT NULL DEFAULT 0, active BOOLEAN NOT NULL DEFAULT 1, born DATE,
  seen TIMESTAMP, doc JSON, data BLOB, qty INTEGER CHECK (qty >= 0));
CREATE TABLE parts (kind_id INTEGER NOT NULL REFERENCES kinds(id), line INTEGER NOT NULL,
  note TEXT, PRIMARY KEY (kind_id, line));
CREATE TABLE log (at TEXT, what TEXT);
INSERT INTO kinds (name, price, qty) VALUES ('a', 1.5, 1), ('b', 2, 2), ('c', 3.25, 3);
"""

POSTGRES = """
DROP TABLE IF EXISTS st_parts; DROP TABLE IF EXISTS st_kinds;
CREATE TABLE st_kinds (id bigserial PRIMARY KEY, name varchar(20) NOT NULL UNIQUE,
  price numeric(10,2) NOT NULL DEFAULT 0, ratio double precision, active boolean NOT NULL DEFAULT true,
  born date, seen timestamptz, local timestamp, uid uuid, data bytea,
  qty integer CHECK (qty >= 0), status text CHECK (status IN ('new', 'paid')));
CREATE TABLE st_parts (kind_id bigint NOT NULL REFERENCES st_kinds(id), line integer NOT NULL,
  note text, PRIMARY KEY (kind_id, line));
INSERT INTO st_kinds (name, price, qty) VALUES ('a', 1.5, 1), ('b', 2, 2);
"""

MARIADB = """
DROP TABLE IF EXISTS st_parts; DROP TABLE IF EXISTS st_kinds;
CREATE TABLE st_kinds (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20) NOT NULL UNIQUE,
  price DECIMAL(10,2) NOT NULL DEFAULT 0, ratio DOUBLE, active BOOLEAN NOT NULL DEFAULT 1,
  born DATE, local DATETIME(6), data BLOB, qty INT CHECK (qty >= 0),
  status ENUM('new', 'paid')) ENGINE=InnoDB;
CREATE TABLE st_parts (kind_id BIGINT NOT NULL, line INT NOT NULL, note TEXT,
  PRIMARY KEY (kind_id, line), FOREIGN KEY (kind_id) REFERENCES st_kinds(id)) ENGINE=InnoDB;
INSERT INTO st_kinds (name, price, qty) VALUES ('a', 1.5, 1), ('b', 2, 2);
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sqlite_db(tmp):
    db = tmp / "api.db"
    with sqlite3.connect(db) as c:
        c.executescript(SQLITE)
    return f"sqlite://{db}"


def apigen(*args):
    return subprocess.run([binary(), "apigen", *args], capture_output=True, text=True, timeout=60)


class Served:
    def __init__(self, tmp, url, tables):
        self.port = free_port()
        cfg = tmp / "api.toml"
        cfg.write_text(
            f'[services.shop]\ndatabase = "{url}"\n{tables}\nlisten = "127.0.0.1:{self.port}"\n'
            "max_limit = 50\n"
        )
        self.proc = subprocess.Popen([binary(), "apigen", "serve", "--config", str(cfg)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                if requests.get(self.base + "/openapi.json", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.proc.kill()
        raise AssertionError("apigen serve did not start: " + self.proc.stderr.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def schemathesis(base, tmp):
    st = pathlib.Path(sys.executable).parent / "st"
    report = subprocess.run(
        [str(st), "run", base + "/openapi.json", "--url", base, "--max-examples", "25",
         "--seed", "1", "--no-color"],
        capture_output=True, text=True, timeout=600, cwd=tmp)
    return report


def check_served(tmp, url, tables, count_table):
    served = Served(tmp, url, tables)
    try:
        doc = requests.get(served.base + "/openapi.json").json()
        validate(doc)
        assert doc["openapi"] == "3.1.0"
        # Injection attempts: 400 or a literal (empty) match, never a 500, never data lost.
        before = requests.get(served.base + f"/v1/{count_table}?count=exact").json()["count"]
        for query in ["name=a'%20OR%20'1'%3D'1", "name[like]=%25'%3B%20DROP%20TABLE%20x%3B--",
                      "qty=1%20OR%201%3D1", "sort=name;DROP", "fields=name,(select%201)",
                      "limit=1;DELETE", "after=1%20OR%201%3D1", "name[in]=a',x'"]:
            r = requests.get(served.base + f"/v1/{count_table}?{query}")
            assert r.status_code in (200, 400), (query, r.status_code, r.text)
            if r.status_code == 200:
                assert r.json()["items"] == [], query
            else:
                assert r.headers["content-type"] == "application/problem+json"
        r = requests.get(served.base + f"/v1/{count_table}/1%20OR%201=1")
        assert r.status_code == 400
        after = requests.get(served.base + f"/v1/{count_table}?count=exact").json()["count"]
        assert after == before
        run = schemathesis(served.base, tmp)
        print(run.stdout[-3000:])
        assert run.returncode == 0, run.stdout[-6000:]
        assert "No issues found" in run.stdout, run.stdout[-6000:]
    finally:
        served.stop()


def test_document_is_valid_openapi_31_and_bad_input_is_named(tmp_path):
    url = sqlite_db(tmp_path)
    out = tmp_path / "shop.json"
    r = apigen("--database", url, "--all", "--service", "shop", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "3 resources (1 read-only)" in r.stdout
    doc = json.loads(out.read_text())
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert "/v1/parts/{kind_id},{line}" in doc["paths"]
    assert "post" not in doc["paths"]["/v1/log"], "a keyless table is a read-only list"
    assert "read-only" in doc["components"]["schemas"]["log"]["description"]
    assert doc["components"]["schemas"]["kindsWrite"]["properties"]["qty"]["minimum"] == 0
    r = apigen("--database", url, "--tables", "kinds,nope", "--service", "shop")
    assert r.returncode != 0 and '"nope"' in r.stderr, r.stderr
    r = apigen("--database", url, "--service", "shop")
    assert r.returncode != 0 and "--tables" in r.stderr
    r = apigen("--database", "oracle://x", "--all", "--service", "shop")
    assert r.returncode != 0 and "oracle://x" in r.stderr


def test_sqlite_api_passes_schemathesis(tmp_path):
    check_served(tmp_path, sqlite_db(tmp_path), "all = true", "kinds")


def test_postgres_api_passes_schemathesis(tmp_path):
    url = os.environ.get("STRANGLER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("STRANGLER_TEST_POSTGRES_URL not set")
    subprocess.run(["psql", url, "-q", "-v", "ON_ERROR_STOP=1", "-c", POSTGRES], check=True)
    check_served(tmp_path, url, 'tables = ["st_kinds", "st_parts"]', "st_kinds")


def test_mariadb_api_passes_schemathesis(tmp_path):
    url = os.environ.get("STRANGLER_TEST_MYSQL_URL")
    if not url:
        pytest.skip("STRANGLER_TEST_MYSQL_URL not set")
    subprocess.run(["mariadb", "-h", "127.0.0.1", "-u", "root", "test", "-e", MARIADB], check=True)
    check_served(tmp_path, url, 'tables = ["st_kinds", "st_parts"]', "st_kinds")
