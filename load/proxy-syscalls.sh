#!/usr/bin/env bash
# System calls per proxied request, by kind, for Strangler and NGINX side by side. Both proxy
# to the same one-worker NGINX upstream with one I/O thread (one NGINX worker); each gets
# 2,000 warm-up requests, then `strace -c -f` is attached to every thread of the proxy
# process for N requests (oha -n, 8 keep-alive connections) and detached. The tables are
# strace's own; the per-request figures divide each count by N.
#
#   bash load/proxy-syscalls.sh
#   BASELINE_BIN=/path/to/old/strangler bash load/proxy-syscalls.sh
#   N=20000 CONNS=8 bash load/proxy-syscalls.sh
#
# strace slows every call down, so the process spends longer per request than it does
# untraced; the counts are what matters: each call is made whether traced or not. Timer and
# housekeeping threads are counted for both proxies alike.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
CONNS=${CONNS:-8}
UP=18281 NGX=18282 STR=18284 BASE=18286
BASELINE_BIN=${BASELINE_BIN:-}
. load/lib.sh
prepare strace
upstream_conf $UP > "$work/upstream.conf"
proxy_conf $NGX $UP > "$work/proxy.conf"
export RUST_LOG=warn
nginx -c "$work/upstream.conf" & pids+=($!)

# trace NAME PORT COMMAND... -> prints the strace table and "NAME: S syscalls per request"
trace() {
    local name=$1 port=$2; shift 2
    "$@" > "$work/$name.log" 2>&1 &
    local pid=$!
    pids+=($pid)
    local up=0
    for _ in $(seq 1 120); do curl -fs -o /dev/null "http://127.0.0.1:$port/" && { up=1; break; }; sleep 0.25; done
    [ "$up" = 1 ] || { echo "$name did not answer on port $port; see $work/$name.log" >&2; exit 1; }
    oha -n 2000 -c "$CONNS" --no-tui "http://127.0.0.1:$port/" > /dev/null
    strace -c -f -p "$pid" -o "$work/$name.strace" 2> "$work/$name.strace.err" &
    local tracer=$!
    sleep 1
    local ok
    ok=$(oha -n "$N" -c "$CONNS" --no-tui --output-format json "http://127.0.0.1:$port/" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["statusCodeDistribution"].get("200", 0))')
    kill -INT "$tracer"; wait "$tracer" 2>/dev/null || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
    [ "$ok" = "$N" ] || { echo "$name: only $ok of $N requests answered 200" >&2; exit 1; }
    echo "== $name: system calls during $N requests (strace -c -f)"
    python3 - "$work/$name.strace" "$N" "$name" "$work/$name.spr" <<'PY'
import sys
path, n, name, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows, total = [], 0
for line in open(path):
    parts = line.split()
    if not parts or parts[0].startswith(("%", "-")) or parts[-1] == "total":
        if parts and parts[-1] == "total":
            total = int(parts[3] if len(parts) > 4 else parts[2])
        continue
    # % time, seconds, usecs/call, calls, [errors], syscall
    calls = int(parts[3])
    errors = int(parts[4]) if len(parts) == 6 else 0
    rows.append((calls, errors, parts[-1]))
rows.sort(reverse=True)
print(f"{'syscall':<18}{'calls':>10}{'errors':>9}{'per request':>13}")
for calls, errors, sc in rows:
    print(f"{sc:<18}{calls:>10}{errors:>9}{calls / n:>13.3f}")
total = total or sum(r[0] for r in rows)
print(f"{'total':<18}{total:>10}{sum(r[1] for r in rows):>9}{total / n:>13.3f}")
open(out, "w").write(f"{total / n:.2f}\n")
PY
    echo
}

# One I/O thread, like the one NGINX worker.
strangler_conf $STR $((STR + 10)) $UP 1 > "$work/strangler.toml"
trace strangler $STR ./target/release/strangler serve --config "$work/strangler.toml"
trace nginx $NGX nginx -c "$work/proxy.conf"
if [ -n "$BASELINE_BIN" ]; then
    strangler_conf $BASE $((BASE + 10)) $UP 1 > "$work/baseline.toml"
    trace baseline $BASE "$BASELINE_BIN" serve --config "$work/baseline.toml"
fi
line="proxy syscalls per request: strangler $(cat "$work/strangler.spr") nginx $(cat "$work/nginx.spr")"
[ -n "$BASELINE_BIN" ] && line="$line baseline $(cat "$work/baseline.spr")"
echo "$line"
