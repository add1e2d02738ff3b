#!/usr/bin/env bash
# The consistency validator and the initial copy at scale, side by side with data-diff and
# pgloader on the same data. Builds 1M-row tables (and 10M with TEN_M=1) on both sides and
# prints, one per line:
#   validate 1M rows (s): sqlite consistent X
#   validate 1M rows (s): sqlite 1% differing X
#   validate 1M rows (s): postgres consistent X
#   validate 1M rows (s): postgres 1% differing X
#   validate 1M rows (s): postgres-mariadb consistent X   (beside data-diff on the same tables)
#   reladiff 1M rows (s): postgres-mariadb consistent X ratio R  (data-diff's maintained fork)
#   validate 10M rows (s): postgres consistent X          (TEN_M=1)
#   peak RSS (MB): X                                      (the largest run)
#   backfill 1M rows (s): sqlite -> postgres X
#   pgloader 1M rows (s): sqlite -> postgres X ratio R
# Every time is the median of RUNS runs (default 3). Needs the local PostgreSQL and MariaDB.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
ROWS=${ROWS:-1000000}
PG=${STRANGLER_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
MY=${STRANGLER_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}
PG_BASE=${PG%/*}
export PATH="$HOME/.cargo/bin:$HOME/.local/bin:$PATH"
cargo build --release --bin strangler 2>&1 | tail -1
BIN=$(pwd)/${CARGO_TARGET_DIR:-target}/release/strangler
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

psql_() { psql -qAtX "$1" -c "$2"; }
for db in vb_left vb_right; do
    psql_ "$PG_BASE/postgres" "DROP DATABASE IF EXISTS $db" >/dev/null
    psql_ "$PG_BASE/postgres" "CREATE DATABASE $db" >/dev/null
done
mariadb -e "DROP DATABASE IF EXISTS vb_right; CREATE DATABASE vb_right"

echo "building $ROWS-row tables..." >&2
PG_TABLE="CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(100), price NUMERIC(12,2), at TIMESTAMP, ok BOOLEAN);"
PG_FILL="INSERT INTO items SELECT g, 'item ' || g, (g % 100000) / 100.0, timestamp '2026-01-01' + g * interval '1 second', g % 2 = 0 FROM generate_series(1, $ROWS) g;"
for db in vb_left vb_right; do
    psql_ "$PG_BASE/$db" "$PG_TABLE $PG_FILL ANALYZE items;"
done
mariadb vb_right -e "CREATE TABLE items (id BIGINT PRIMARY KEY, name VARCHAR(100), price DECIMAL(12,2), at DATETIME(6), ok TINYINT(1));
  INSERT INTO items SELECT seq, CONCAT('item ', seq), (seq % 100000) / 100.0, TIMESTAMP'2026-01-01 00:00:00' + INTERVAL seq SECOND, seq % 2 = 0 FROM seq_1_to_$ROWS;"
python3 - "$WORK" "$ROWS" <<'PY'
import sqlite3, sys
work, rows = sys.argv[1], int(sys.argv[2])
for name in ("left", "right"):
    c = sqlite3.connect(f"{work}/{name}.db")
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(100), price NUMERIC(12,2), at TIMESTAMP, ok BOOLEAN)")
    c.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)",
                  ((g, f"item {g}", (g % 100000) / 100.0, f"2026-01-01 {g % 86400 // 3600:02}:{g % 3600 // 60:02}:{g % 60:02}", g % 2 == 0) for g in range(1, rows + 1)))
    c.commit()
PY

config() { # LEFT RIGHT [extra]
    cat > "$WORK/v.toml" <<TOML
[gateway]
control = "sqlite://$WORK/control.db"
[sides.monolith]
database = "$1"
[sides.svc]
database = "$2"
[[entities]]
name = "items"
monolith = { table = "items", key = ["id"] }
svc = { table = "items", key = ["id"] }
columns = { id = "id", name = "name", price = "price", at = "at", ok = "ok" }
${3:-}
TOML
}

echo 0 > "$WORK/peak"
# median_validate: runs validate RUNS times, prints the median seconds and keeps the peak RSS
# (in a file: it runs in a command substitution's subshell).
median_validate() {
    local times=() t rss
    for _ in $(seq "$RUNS"); do
        /usr/bin/time -f "%e %M" -o "$WORK/time" "$BIN" validate --config "$WORK/v.toml" --format json > "$WORK/report.json" || true
        # A non-zero exit (1: discrepancies found) adds a line before the figures.
        read -r t rss < <(tail -1 "$WORK/time")
        times+=("$t")
        [ "$rss" -gt "$(cat "$WORK/peak")" ] && echo "$rss" > "$WORK/peak"
    done
    printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

config "sqlite://$WORK/left.db" "sqlite://$WORK/right.db"
echo "validate 1M rows (s): sqlite consistent $(median_validate)"
python3 -c "
import sqlite3; c = sqlite3.connect('$WORK/right.db'); c.execute('UPDATE items SET name = name || \"!\" WHERE id % 100 = 0'); c.commit()"
echo "validate 1M rows (s): sqlite 1% differing $(median_validate)"
grep -q '"changed": '$((ROWS / 100)) "$WORK/report.json" || { echo "wrong report" >&2; head -30 "$WORK/report.json" >&2; }

config "$PG_BASE/vb_left" "$PG_BASE/vb_right"
echo "validate 1M rows (s): postgres consistent $(median_validate)"
psql_ "$PG_BASE/vb_right" "UPDATE items SET name = name || '!' WHERE id % 100 = 0" >/dev/null
echo "validate 1M rows (s): postgres 1% differing $(median_validate)"
psql_ "$PG_BASE/vb_right" "UPDATE items SET name = left(name, length(name) - 1) WHERE id % 100 = 0" >/dev/null

config "$PG_BASE/vb_left" "${MY%/*}/vb_right"
OURS=$(median_validate)
echo "validate 1M rows (s): postgres-mariadb consistent $OURS"
# data-diff's own install pulls a wheel from GitHub; reladiff is its maintained fork, same
# algorithm (checksums in each database, bisection) and command line.
DIFF=$(command -v reladiff || command -v data-diff || true)
if [ -z "$DIFF" ]; then
    pip install -q --user 'reladiff[postgresql,mysql]' >/dev/null 2>&1 || true
    DIFF=$(command -v reladiff || true)
fi
if [ -n "$DIFF" ]; then
    times=()
    for _ in $(seq "$RUNS"); do
        s=$(date +%s.%N)
        "$DIFF" "postgresql://postgres@127.0.0.1:5432/vb_left" items "mysql://root@127.0.0.1:3306/vb_right" items \
            -k id -c name -c price -c at -c ok --stats > "$WORK/dd.txt" 2>&1 || true
        times+=("$(echo "$(date +%s.%N) - $s" | bc)")
    done
    DD=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    echo "$(basename "$DIFF") 1M rows (s): postgres-mariadb consistent $DD ratio $(echo "scale=2; $DD / $OURS" | bc) ($(grep -o '[0-9]* rows unchanged' "$WORK/dd.txt" || echo 'no unchanged count'))"
else
    echo "reladiff 1M rows (s): not run (pip install reladiff failed)"
fi

if [ "${TEN_M:-0}" = 1 ]; then
    for db in vb_left vb_right; do
        psql_ "$PG_BASE/$db" "DROP TABLE items; $PG_TABLE ${PG_FILL//$ROWS/$((ROWS * 10))} ANALYZE items;"
    done
    config "$PG_BASE/vb_left" "$PG_BASE/vb_right"
    echo "validate 10M rows (s): postgres consistent $(RUNS=1 median_validate)"
fi
echo "peak RSS (MB): $(($(cat "$WORK/peak") / 1024))"

# Backfill SQLite -> PostgreSQL: `strangler sync backfill` into the service's table (primary
# key in place, capture installed), until it exits, beside pgloader making the same table from
# the same file, runs interleaved. (Timing `sync run` by polling the progress row, as before,
# spent a fifth of a core on psql and its server processes beside the copy it timed.)
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
config "sqlite://$WORK/left.db" "$PG_BASE/vb_right"
PL_OK=1
command -v pgloader >/dev/null || apt-get install -y -qq pgloader >/dev/null 2>&1 || PL_OK=0
bf=() pl=()
for _ in $(seq "$RUNS"); do
    psql_ "$PG_BASE/vb_right" "DROP TABLE IF EXISTS items; DROP TABLE IF EXISTS _strangler_backfill; $PG_TABLE" >/dev/null
    "$BIN" sync install --config "$WORK/v.toml" >/dev/null
    s=$(date +%s.%N)
    "$BIN" sync backfill --config "$WORK/v.toml" > "$WORK/backfill.json"
    bf+=("$(echo "$(date +%s.%N) - $s" | bc)")
    COPIED=$(psql_ "$PG_BASE/vb_right" "SELECT count(*) FROM items")
    [ "$COPIED" -eq "$ROWS" ] || echo "backfill: $COPIED of $ROWS rows on PostgreSQL" >&2
    if [ "$PL_OK" = 1 ]; then
        psql_ "$PG_BASE/vb_right" "DROP TABLE items" >/dev/null
        s=$(date +%s.%N)
        pgloader --quiet "$WORK/left.db" "$PG_BASE/vb_right" > "$WORK/pgloader.log" 2>&1 || true
        pl+=("$(echo "$(date +%s.%N) - $s" | bc)")
    fi
done
BF=$(median "${bf[@]}")
echo "backfill 1M rows (s): sqlite -> postgres $BF"
if [ "$PL_OK" = 1 ]; then
    PL=$(median "${pl[@]}")
    echo "pgloader 1M rows (s): sqlite -> postgres $PL ratio $(echo "scale=2; $BF / $PL" | bc)"
else
    echo "pgloader 1M rows (s): not run (apt-get install pgloader failed)"
fi
