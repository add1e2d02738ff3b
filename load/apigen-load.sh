#!/usr/bin/env bash
# Generated API under load: `strangler apigen serve` over a 10,000-row table, on SQLite and on
# PostgreSQL, hit with oha for DURATION seconds per case at CONNS connections:
#   GET /v1/items?limit=20     (a page of 20 rows)
#   GET /v1/items/{id}         (a keyed read, id drawn from 1..9999 per request)
# Prints requests/s, p99, and the CPU each request cost the Strangler process (user + system,
# from /proc, SQLite's own work included since it runs in-process) and, on PostgreSQL, the CPU
# of the PostgreSQL server's processes per request beside it.
#
#   bash load/apigen-load.sh                     # DURATION=10 CONNS=32
#   STRANGLER_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test bash load/apigen-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
PG_URL=${STRANGLER_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || cargo install oha --locked
cargo build --release --bin strangler 2>&1 | tail -1
BIN=${CARGO_TARGET_DIR:-target}/release/strangler
. load/lib.sh
TICK=$(getconf CLK_TCK)

# cpu_ticks PID...: user + system clock ticks of the processes.
cpu_ticks() {
    local total=0 p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$total"
}

pg_pids() { pgrep -x postgres || pgrep -f "postgres:" || true; }

# measure NAME URL_OR_REGEX PID DB: one oha run, then the figures.
measure() {
    local name=$1 target=$2 pid=$3 db=$4 flag=""
    case "$target" in *"["*) flag="--rand-regex-url" ;; esac
    local before pgbefore after pgafter
    before=$(cpu_ticks "$pid")
    pgbefore=$(cpu_ticks $(pg_pids))
    oha -z "${DURATION}s" -c "$CONNS" --no-tui --output-format json $flag "$target" > "$work/oha.json"
    after=$(cpu_ticks "$pid")
    pgafter=$(cpu_ticks $(pg_pids))
    python3 - "$work/oha.json" "$name" "$((after - before))" "$((pgafter - pgbefore))" "$TICK" "$db" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
name, ticks, pgticks, tick, db = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
codes = d.get("statusCodeDistribution", {})
n = sum(codes.values())
ok = codes.get("200", 0)
rps = d["summary"]["requestsPerSec"]
p99 = d["latencyPercentiles"]["p99"] * 1000
cpu = ticks * 1e6 / tick / max(n, 1)
line = f"apigen {db} {name}: {rps:.0f} req/s, p99 {p99:.2f} ms, strangler cpu {cpu:.1f} us/request"
if db == "postgres":
    line += f", postgres cpu {pgticks * 1e6 / tick / max(n, 1):.1f} us/request"
if ok != n:
    line += f" ({n - ok} of {n} not 200: {codes})"
print(line)
PY
}

# serve DB_URL PORT: starts `apigen serve` for the items table; echoes its pid.
serve() {
    cat > "$work/api-$2.toml" <<CONF
[services.load]
database = "$1"
tables = ["$3"]
listen = "127.0.0.1:$2"
pool = 16
CONF
    "$BIN" apigen serve --config "$work/api-$2.toml" > "$work/api-$2.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$2/openapi.json" > /dev/null && break
        sleep 0.1
    done
    echo "$pid"
}

run_cases() {
    local db=$1 port=$2 pid=$3 resource=$4
    curl -sf "http://127.0.0.1:$port/v1/$resource?limit=20" > /dev/null
    measure "GET /v1/$resource?limit=20" "http://127.0.0.1:$port/v1/$resource?limit=20" "$pid" "$db"
    measure "GET /v1/$resource/{id}" "http://127.0.0.1:$port/v1/$resource/[1-9][0-9]{0,3}" "$pid" "$db"
}

python3 - "$work/items.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.executescript("""PRAGMA journal_mode=WAL;
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price NUMERIC(10,2),
  qty INTEGER, created TIMESTAMP);""")
c.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)",
              [(i, f"item {i}", i * 0.25, i % 100, "2024-01-01T00:00:00Z") for i in range(1, 10001)])
c.commit()
PY
pid=$(serve "sqlite://$work/items.db" 18180 items)
run_cases sqlite 18180 "$pid" items

if psql "$PG_URL" -qc "SELECT 1" >/dev/null 2>&1; then
    psql "$PG_URL" -q -v ON_ERROR_STOP=1 <<'SQL'
DROP TABLE IF EXISTS apigen_load_items;
CREATE TABLE apigen_load_items (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2),
  qty integer, created timestamptz);
INSERT INTO apigen_load_items SELECT i, 'item ' || i, i * 0.25, i % 100, '2024-01-01T00:00:00Z'
  FROM generate_series(1, 10000) i;
ANALYZE apigen_load_items;
SQL
    pid=$(serve "$PG_URL" 18181 apigen_load_items)
    run_cases postgres 18181 "$pid" apigen_load_items
    psql "$PG_URL" -qc "DROP TABLE apigen_load_items"
else
    echo "apigen postgres: not measured ($PG_URL does not answer)"
fi
