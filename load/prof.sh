#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: unlike
# requests per second on a shared 2-core machine, the count repeats from run to run, so
# small changes to the hot path can be compared. Strangler and NGINX as a proxy (one worker)
# forward to the same NGINX upstream; each gets 2,000 warm-up requests, then its counters are
# zeroed and 10,000 requests at 8 connections (oha -n) are counted.
#
#   bash load/proxy-instructions.sh
#   BASELINE_BIN=/path/to/old/strangler bash load/proxy-instructions.sh
#
# Counts cover every thread of the proxy process, so timers and other background work that
# runs while the requests are served is included, for both proxies alike.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
UP=18181 NGX=18182 STR=18184 BASE=18186
BASELINE_BIN=${BASELINE_BIN:-}
. load/lib.sh
prepare valgrind
upstream_conf $UP > "$work/upstream.conf"
proxy_conf $NGX $UP > "$work/proxy.conf"
export RUST_LOG=warn
nginx -c "$work/upstream.conf" & pids+=($!)

# count NAME PORT COMMAND... -> prints "NAME: I instructions per request"
count() {
    local name=$1 port=$2; shift 2
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$name" "$@" 2> "$work/$name.log" &
    local pid=$!
    pids+=($pid)
    local up=0
    for _ in $(seq 1 240); do curl -fs -o /dev/null "http://127.0.0.1:$port/" && { up=1; break; }; sleep 0.5; done
    [ "$up" = 1 ] || { echo "$name did not answer on port $port; see $work/$name.log" >&2; exit 1; }
    oha -n 2000 -c 8 --no-tui "http://127.0.0.1:$port/" > /dev/null
    callgrind_control -z "$pid" > /dev/null 2>&1
    local ok
    ok=$(oha -n "$N" -c 8 --no-tui --output-format json "http://127.0.0.1:$port/" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["statusCodeDistribution"].get("200", 0))')
    callgrind_control -d "$pid" > /dev/null 2>&1
    sleep 1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    [ "$ok" = "$N" ] || { echo "$name: only $ok of $N requests answered 200" >&2; exit 1; }
    local total
    total=$(awk '/^summary:/ { print $2 }' "$work/cg.$name.1")
    echo "$name: $((total / N)) instructions per request"
    echo "$((total / N))" > "$work/$name.ipr"
}

# One I/O thread, like the one NGINX worker.
strangler_conf $STR $((STR + 10)) $UP 1 > "$work/strangler.toml"
count strangler $STR ./target/release/strangler serve --config "$work/strangler.toml"
cp "$work/cg.strangler.1" /tmp/cg.out; exit 0
if [ -n "$BASELINE_BIN" ]; then
    strangler_conf $BASE $((BASE + 10)) $UP 1 > "$work/baseline.toml"
    count baseline $BASE "$BASELINE_BIN" serve --config "$work/baseline.toml"
fi
echo
echo "proxy instructions per request: strangler $(cat "$work/strangler.ipr") nginx $(cat "$work/nginx.ipr")"
awk -v s="$(cat "$work/strangler.ipr")" -v n="$(cat "$work/nginx.ipr")" \
    'BEGIN { printf "instructions per request ratio strangler/nginx: %.2f\n", s / n }'
if [ -n "$BASELINE_BIN" ]; then
    awk -v s="$(cat "$work/strangler.ipr")" -v b="$(cat "$work/baseline.ipr")" \
        'BEGIN { printf "instructions per request ratio strangler/baseline: %.2f\n", s / b }'
fi
