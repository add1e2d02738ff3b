#!/usr/bin/env bash
# CPU per proxied request by number of I/O threads: two Strangler gateways, one with
# `threads = 1` and one with `threads = 2`, in front of the same one-worker NGINX upstream,
# driven by wrk in interleaved rounds; each round reads the gateway's user and system CPU
# from /proc and divides by the requests it served. From the medians it derives what one
# core sustains and how many cores 100,000 requests/s need on a host where the load
# generator and the upstream run elsewhere (CPU per request is what the gateway itself
# costs; on this 2-core machine they share the cores, so requests/s here are not that).
#
#   bash load/proxy-scaling.sh            # DURATION=8 CONNS=64 ROUNDS=5
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-5}
UP=18581 ONE=18584 TWO=18585
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is needed (apt-get install nginx)" >&2; exit 1; }
cargo build --release --bin strangler 2>&1 | tail -1

. load/lib.sh
upstream_conf $UP > "$work/upstream.conf"
strangler_conf $ONE $((ONE + 10)) $UP 1 > "$work/one.toml"
strangler_conf $TWO $((TWO + 10)) $UP 2 > "$work/two.toml"
export RUST_LOG=warn
nginx -c "$work/upstream.conf" & pids+=($!)
./target/release/strangler serve --config "$work/one.toml" 2> "$work/one.log" & pids+=($!)
./target/release/strangler serve --config "$work/two.toml" 2> "$work/two.log" & pids+=($!)
declare -A PID=([1]="${pids[1]}" [2]="${pids[2]}") PORT=([1]=$ONE [2]=$TWO)
for port in $UP $ONE $TWO; do
    up=0
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && { up=1; break; }; sleep 0.1; done
    [ "$up" = 1 ] || { echo "nothing listens on 127.0.0.1:$port; see $work" >&2; exit 1; }
done

TCK=$(getconf CLK_TCK)
ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
us() { awk -v d="$1" -v n="$2" -v t="$TCK" 'BEGIN { printf "%.2f\n", d / t / n * 1e6 }'; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

for t in 1 2; do wrk -t2 -c"$CONNS" -d2s "http://127.0.0.1:${PORT[$t]}/" > /dev/null; done
echo "measuring: wrk -t2 -c$CONNS -d${DURATION}s, $ROUNDS rounds, interleaved"
for r in $(seq 1 "$ROUNDS"); do
    for t in 1 2; do
        read -r u0 s0 < <(ticks "${PID[$t]}")
        out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:${PORT[$t]}/")
        read -r u1 s1 < <(ticks "${PID[$t]}")
        n=$(awk '/requests in/ { print $1 }' <<<"$out")
        rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
        us $((u1 - u0)) "$n" >> "$work/$t.usr"
        us $((s1 - s0)) "$n" >> "$work/$t.sys"
        us $((u1 - u0 + s1 - s0)) "$n" >> "$work/$t.cpu"
        echo "$rps" >> "$work/$t.rps"
        echo "  round $r threads=$t: $rps req/s, $(tail -1 "$work/$t.cpu") us CPU per request"
    done
done
echo
for t in 1 2; do
    echo "strangler threads=$t: cpu per request (us) $(median < "$work/$t.cpu") (usr $(median < "$work/$t.usr") sys $(median < "$work/$t.sys")), $(median < "$work/$t.rps") req/s here"
done
awk -v c1="$(median < "$work/1.cpu")" -v c2="$(median < "$work/2.cpu")" 'BEGIN {
    printf "one core sustains about %.0f req/s (1e6 / cpu per request at threads=1)\n", 1e6 / c1
    printf "100,000 req/s need about %.1f cores for the gateway (100,000 x %.2f us at threads=2)\n", 1e5 * c2 / 1e6, c2
}'
