#!/usr/bin/env bash
# Heap allocations per proxied request, counted by valgrind's DHAT: Strangler (one I/O thread)
# proxies to a one-worker NGINX upstream twice, once for N1 and once for N2 requests (oha -n,
# 8 keep-alive connections, after the same warm-up), and stops gracefully so DHAT writes its
# totals. Start-up and shutdown cost the same in both runs, so the difference divided by
# N2 - N1 is what one request allocates.
#
#   bash load/proxy-allocs.sh
#   BASELINE_BIN=/path/to/old/strangler bash load/proxy-allocs.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N1=${N1:-2000}
N2=${N2:-12000}
UP=18481 STR=18484
BASELINE_BIN=${BASELINE_BIN:-}
. load/lib.sh
prepare valgrind
upstream_conf $UP > "$work/upstream.conf"
export RUST_LOG=warn
nginx -c "$work/upstream.conf" & pids+=($!)
strangler_conf $STR $((STR + 10)) $UP 1 > "$work/strangler.toml"

# run BIN N -> prints "BLOCKS BYTES" allocated over the whole run
run() {
    local bin=$1 n=$2
    valgrind --tool=dhat --dhat-out-file=/dev/null "$bin" serve --config "$work/strangler.toml" \
        2> "$work/dhat.log" &
    local pid=$!
    local up=0
    for _ in $(seq 1 240); do curl -fs -o /dev/null "http://127.0.0.1:$STR/" && { up=1; break; }; sleep 0.5; done
    [ "$up" = 1 ] || { echo "strangler did not answer; see $work/dhat.log" >&2; exit 1; }
    oha -n 500 -c 8 --no-tui "http://127.0.0.1:$STR/" > /dev/null
    oha -n "$n" -c 8 --no-tui "http://127.0.0.1:$STR/" > /dev/null
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$work/dhat.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"Total:\s+([\d,]+) bytes in ([\d,]+) blocks", text)
if not m:
    sys.exit("no DHAT totals; the process did not exit cleanly:\n" + text[-2000:])
print(m.group(2).replace(",", ""), m.group(1).replace(",", ""))
PY
}

# per BIN NAME -> prints "NAME: A allocations (B bytes) per request"
per() {
    local a b
    read -r a1 b1 < <(run "$1" "$N1")
    read -r a2 b2 < <(run "$1" "$N2")
    awk -v n="$2" -v a1="$a1" -v a2="$a2" -v b1="$b1" -v b2="$b2" -v d="$((N2 - N1))" \
        'BEGIN { printf "%s: %.2f allocations (%.0f bytes) per request\n", n, (a2 - a1) / d, (b2 - b1) / d }'
}

per ./target/release/strangler strangler
[ -n "$BASELINE_BIN" ] && per "$BASELINE_BIN" baseline
exit 0
