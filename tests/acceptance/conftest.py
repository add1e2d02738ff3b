"""Fixtures for the black-box suite: the built `strangler` binary, real upstream processes,
and temporary configs. Nothing here imports the project's code."""

import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent


def binary():
    path = os.environ.get("STRANGLER_BIN") or str(ROOT / "target" / "debug" / "strangler")
    if not os.path.exists(path):
        pytest.fail(f"strangler binary not found at {path}; build it first (cargo build)")
    return path


class Upstream:
    def __init__(self, name, tmp, db=()):
        self.name = name
        self.port_file = str(tmp / f"{name}.port")
        self.proc = subprocess.Popen([sys.executable, str(HERE / "upstream.py"), name, self.port_file, *db])
        deadline = time.time() + 10
        while not os.path.exists(self.port_file):
            if time.time() > deadline:
                raise RuntimeError(f"upstream {name} did not start")
            time.sleep(0.02)
        self.port = int(pathlib.Path(self.port_file).read_text())
        self.url = f"http://127.0.0.1:{self.port}"

    def sick(self, on=True):
        marker = pathlib.Path(self.port_file + ".sick")
        if on:
            marker.write_text("1")
        elif marker.exists():
            marker.unlink()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Gateway:
    def __init__(self, config_text, tmp, name="gw"):
        self.config = tmp / f"{name}.toml"
        self.config.write_text(config_text)
        self.lines = queue.Queue()
        self.proc = subprocess.Popen([binary(), "serve", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "RUST_LOG": "info"})
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.time() + 20
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                self.proc.kill()
                raise RuntimeError("gateway did not report listening")
            if "strangler gateway listening" in line:
                fields = json.loads(line)["fields"]
                self.addr, self.admin_addr = fields["addr"], fields["admin_addr"]
                break
        self.session = requests.Session()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.put(line)

    def url(self, path):
        return f"http://{self.addr}{path}"

    def admin(self, path):
        return f"http://{self.admin_addr}{path}"

    def get(self, path, headers=None):
        return self.session.get(self.url(path), headers=headers or {}, timeout=10)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def upstreams(tmp_path):
    made = []

    def make(*names, dbs=None):
        out = [Upstream(n, tmp_path, (dbs or {}).get(n, ())) for n in names]
        made.extend(out)
        return out

    yield make
    for u in made:
        u.kill()


@pytest.fixture
def gateway(tmp_path):
    started = []

    def make(config_text, name="gw"):
        gw = Gateway(config_text.replace("{dir}", str(tmp_path)), tmp_path, name)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


def base_config(mono, svc, route_extra="", split="{ monolith = 80, users = 20 }", gateway_extra=""):
    return f"""
[gateway]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
control = "sqlite://{{dir}}/control.db"
control_poll = "100ms"
{gateway_extra}

[upstreams.monolith]
url = "{mono.url}"
health = {{ path = "/health", interval = "100ms", unhealthy_threshold = 2, healthy_threshold = 2 }}

[upstreams.users]
url = "{svc.url}"
health = {{ path = "/health", interval = "100ms", unhealthy_threshold = 2, healthy_threshold = 2 }}
passive = {{ consecutive_failures = 3, base_ejection = "5s" }}

[[routes]]
name = "users"
path_prefix = "/api/users"
split = {split}
fallback = "monolith"
sticky = {{ header = "x-user-id" }}
entity = "users"
{route_extra}
"""


def sync_admin_address(worker, seconds=20):
    """The admin URL a `sync run --admin-listen` worker logs (its stderr piped as text)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        line = worker.stderr.readline()
        if "sync admin API listening" in line:
            return "http://" + json.loads(line)["fields"]["admin"]
    raise AssertionError("the worker did not log its admin address")
