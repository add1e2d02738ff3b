#!/usr/bin/env bash
# Sync benchmark: writers on both sides at a set rate (10 rows per transaction), commit ->
# visible-on-the-other-side latency, for SQLite<->SQLite and PostgreSQL<->PostgreSQL (and
# PostgreSQL<->PostgreSQL through NATS JetStream in broker mode); the
# pgbench ceiling of the same inserts on this machine (plain, and with our capture triggers);
# and a one-million-change backlog drained with the peak RSS.
#
#   bash load/sync-bench.sh            # RATE=10000 DURATION=60 BACKLOG=1000000
# (DURATION, not SECONDS: bash keeps its own SECONDS, the shell's age, which read 0 here.)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-10000}
DURATION=${DURATION:-60}
BACKLOG=${BACKLOG:-1000000}
PG=${STRANGLER_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
export STRANGLER_TEST_POSTGRES_URL=$PG

cargo bench --bench sync_bench --no-run 2>&1 | tail -1
BENCH=$(ls -t target/release/deps/sync_bench-* | grep -v '\.d$' | head -1)

echo "== pgbench ceiling: the same 10-row inserts, no sync (4 clients, 15 s)"
ROOT=${PG%/*}
psql -q "$PG" -c "DROP DATABASE IF EXISTS sync_pgbench" -c "CREATE DATABASE sync_pgbench" >/dev/null
psql -q "$ROOT/sync_pgbench" -c "CREATE TABLE bench (id BIGINT PRIMARY KEY, side INTEGER NOT NULL, t_us BIGINT NOT NULL, payload VARCHAR(64)); CREATE SEQUENCE s" >/dev/null
cat > /tmp/sync_pgbench.sql <<'SQL'
INSERT INTO bench SELECT nextval('s'), 0, 0, 'payload' FROM generate_series(1, 10);
SQL
tps=$(pgbench -n -c 4 -j 2 -T 15 -f /tmp/sync_pgbench.sql "$ROOT/sync_pgbench" 2>/dev/null | awk '/^tps/ {print $3; exit}')
echo "pgbench plain inserts: $(awk -v t="$tps" 'BEGIN {printf "%.0f", t * 10}') changes/s"
cat > /tmp/sync_capture.toml <<TOML
[gateway]
control = "sqlite:///tmp/sync_pgbench_control.db"
[sides.a]
database = "$ROOT/sync_pgbench"
[sides.b]
database = "sqlite:///tmp/sync_pgbench_b.db"
[[entities]]
name = "bench"
a = { table = "bench", key = ["id"] }
b = { table = "bench", key = ["id"] }
authority = "a"
columns = { id = "id", side = "side", t_us = "t_us", payload = "payload" }
TOML
rm -f /tmp/sync_pgbench_b.db
python3 -c "import sqlite3; sqlite3.connect('/tmp/sync_pgbench_b.db').execute('CREATE TABLE bench (id BIGINT PRIMARY KEY, side INTEGER NOT NULL, t_us BIGINT NOT NULL, payload VARCHAR(64))')"
cargo run --release -q -- sync install --config /tmp/sync_capture.toml >/dev/null
tps=$(pgbench -n -c 4 -j 2 -T 15 -f /tmp/sync_pgbench.sql "$ROOT/sync_pgbench" 2>/dev/null | awk '/^tps/ {print $3; exit}')
echo "pgbench inserts with capture triggers: $(awk -v t="$tps" 'BEGIN {printf "%.0f", t * 10}') changes/s"

echo "== backlog of $BACKLOG changes (sqlite <-> sqlite)"
"$BENCH" --pair sqlite --backlog "$BACKLOG"

NATS=${STRANGLER_TEST_NATS_URL:-nats://127.0.0.1:4222}
echo "== postgres <-> postgres through NATS JetStream ($NATS) at $RATE changes/s for ${DURATION}s"
"$BENCH" --pair postgres --rate "$RATE" --seconds "$DURATION" --broker "$NATS"

for pair in sqlite postgres; do
    echo "== $pair <-> $pair at $RATE changes/s for ${DURATION}s"
    "$BENCH" --pair "$pair" --rate "$RATE" --seconds "$DURATION"
done
