#!/usr/bin/env bash
# Side-by-side proxy comparison on this machine, in one run: the same NGINX upstream (a small
# fixed body) is hit directly and through Strangler, NGINX as a proxy and HAProxy, with the
# same load generator and settings. Each system is measured ROUNDS times, interleaved (in a
# rotated order from round to round), and the medians are reported. Then the added p99 latency of Strangler over a direct hit is
# measured at a fixed rate of half Strangler's throughput (oha -q), beside the gateway's own
# added-latency histogram (time spent in Strangler, not waiting for the upstream), scraped
# from its /metrics before and after each such run (load/added-latency.py).
#
#   bash load/proxy-compare.sh            # DURATION=10 CONNS=64 ROUNDS=3 THREADS=2
#   BASELINE_BIN=/path/to/old/strangler bash load/proxy-compare.sh
#                                         # also runs another build as "baseline", same rounds
#
# Everything runs on 127.0.0.1; the load generator shares the machine's cores with the
# proxies, exactly as it does for every system compared.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
UP=18081 NGX=18082 HAP=18083 STR=18084 STR_ADMIN=18094 BASE=18085 BASE_ADMIN=18095
BASELINE_BIN=${BASELINE_BIN:-}

install_missing() {
    local missing=()
    for tool in nginx haproxy wrk; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    if [ ${#missing[@]} -gt 0 ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    command -v oha >/dev/null || cargo install oha --locked
}
export PATH="$HOME/.cargo/bin:$PATH"
install_missing
cargo build --release --bin strangler 2>&1 | tail -1

. load/lib.sh
upstream_conf $UP > "$work/upstream.conf"
cat > "$work/proxy.conf" <<CONF
worker_processes auto;
daemon off;
pid $work/proxy.pid;
error_log $work/proxy.err;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream backend { server 127.0.0.1:$UP; keepalive 512; }
    server {
        listen 127.0.0.1:$NGX backlog=4096;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
cat > "$work/haproxy.cfg" <<CONF
global
    nbthread 2
    maxconn 8000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend f
    bind 127.0.0.1:$HAP
    default_backend b
backend b
    server s1 127.0.0.1:$UP maxconn 1000
CONF
strangler_conf $STR $STR_ADMIN $UP > "$work/strangler.toml"
strangler_conf $BASE $BASE_ADMIN $UP > "$work/baseline.toml"

nginx -c "$work/upstream.conf" & pids+=($!)
nginx -c "$work/proxy.conf" & pids+=($!)
haproxy -f "$work/haproxy.cfg" -q & pids+=($!)
RUST_LOG=warn ./target/release/strangler serve --config "$work/strangler.toml" 2> "$work/strangler.log" & pids+=($!)
ports=($UP $NGX $HAP $STR)
if [ -n "$BASELINE_BIN" ]; then
    RUST_LOG=warn "$BASELINE_BIN" serve --config "$work/baseline.toml" 2> "$work/baseline.log" & pids+=($!)
    ports+=($BASE)
fi
for port in "${ports[@]}"; do
    up=0
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && { up=1; break; }; sleep 0.1; done
    [ "$up" = 1 ] || { echo "nothing listens on 127.0.0.1:$port; see $work" >&2; exit 1; }
done

# CPU time (clock ticks, user and system) of a system's processes, for CPU per request.
declare -A PIDS=([direct]="" [strangler]="${pids[3]}" [nginx]="${pids[1]}" [haproxy]="${pids[2]}" [baseline]="${pids[4]:-}")
UP_PIDS="${pids[0]}"
TCK=$(getconf CLK_TCK)
ticks() { # PIDs and their children -> "user system"
    local all=() p
    for p in "$@"; do all+=("$p"); all+=($(pgrep -P "$p" || true)); done
    for p in "${all[@]}"; do awk '{ print $14, $15 }' "/proc/$p/stat" 2>/dev/null || true; done \
        | awk '{ u += $1; s += $2 } END { printf "%d %d\n", u, s }'
}
children_ticks() { # user and system ticks of this shell's finished children (the load generator)
    times > "$work/times"   # in this shell: a subshell's `times` would count its own children
    awk -v t="$TCK" 'NR == 2 { gsub(/[ms]/, " "); split($0, a, " "); printf "%d %d\n", (a[1] * 60 + a[2]) * t, (a[3] * 60 + a[4]) * t }' "$work/times"
}
per_request() { # ticks, requests -> microseconds per request
    awk -v d="$1" -v n="$2" -v t="$TCK" 'BEGIN { printf "%.2f\n", d / t / n * 1e6 }'
}

declare -A URL=([direct]="http://127.0.0.1:$UP/" [strangler]="http://127.0.0.1:$STR/" [nginx]="http://127.0.0.1:$NGX/" [haproxy]="http://127.0.0.1:$HAP/" [baseline]="http://127.0.0.1:$BASE/")
SYSTEMS=(direct strangler nginx haproxy)
HALF_SYSTEMS=(direct strangler)
if [ -n "$BASELINE_BIN" ]; then SYSTEMS+=(baseline); HALF_SYSTEMS+=(baseline); fi

to_ms() { # wrk latency value (e.g. 412.00us, 2.31ms, 1.02s) to milliseconds
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
# rotated K NAME...: the names starting from the K-th (mod their count), so that each round
# measures the systems in another order and none always runs right after the same one.
rotated() { local k=$1; shift; local a=("$@"); k=$((k % ${#a[@]})); printf '%s\n' "${a[@]:k}" "${a[@]:0:k}"; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "warming up"
for s in "${SYSTEMS[@]}"; do wrk -t"$THREADS" -c"$CONNS" -d2s "${URL[$s]}" >/dev/null; done

echo "measuring: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, $ROUNDS rounds, interleaved"
for r in $(seq 1 "$ROUNDS"); do
    for s in $(rotated $((r - 1)) "${SYSTEMS[@]}"); do
        read -r pu0 ps0 < <(ticks ${PIDS[$s]})
        read -r uu0 us0 < <(ticks $UP_PIDS)
        children_ticks > "$work/lg0"; read -r lu0 ls0 < "$work/lg0"
        out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "${URL[$s]}")
        read -r pu1 ps1 < <(ticks ${PIDS[$s]})
        read -r uu1 us1 < <(ticks $UP_PIDS)
        children_ticks > "$work/lg1"; read -r lu1 ls1 < "$work/lg1"
        n=$(awk '/requests in/ { print $1 }' <<<"$out")
        if [ -n "${PIDS[$s]}" ]; then
            per_request $((pu1 - pu0)) "$n" >> "$work/$s.cpu_user"
            per_request $((ps1 - ps0)) "$n" >> "$work/$s.cpu_sys"
        fi
        per_request $((uu1 - uu0 + us1 - us0)) "$n" >> "$work/$s.cpu_up"
        per_request $((lu1 - lu0 + ls1 - ls0)) "$n" >> "$work/$s.cpu_load"
        rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
        p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
        p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
        errors=$(awk '/Non-2xx|Socket errors/ { print }' <<<"$out")
        echo "  round $r $s: $rps req/s, p50 $p50 ms, p99 $p99 ms ${errors:+($errors)}"
        echo "$rps" >> "$work/$s.rps"; echo "$p50" >> "$work/$s.p50"; echo "$p99" >> "$work/$s.p99"
    done
done

printf '\n%-10s %14s %10s %10s\n' system "req/s (median)" "p50 ms" "p99 ms"
declare -A RPS
for s in "${SYSTEMS[@]}"; do
    RPS[$s]=$(median < "$work/$s.rps")
    printf '%-10s %14.0f %10.3f %10.3f\n' "$s" "${RPS[$s]}" "$(median < "$work/$s.p50")" "$(median < "$work/$s.p99")"
done

echo
echo "CPU per request (microseconds, medians): the proxy in user space and in the kernel,"
echo "the upstream, and the load generator (wrk)"
printf '%-10s %10s %10s %10s %10s\n' system "proxy usr" "proxy sys" upstream "load gen"
declare -A CPU_USER CPU_SYS CPU_REST
for s in "${SYSTEMS[@]}"; do
    u=-; k=-
    [ -s "$work/$s.cpu_user" ] && { u=$(median < "$work/$s.cpu_user"); k=$(median < "$work/$s.cpu_sys"); }
    up=$(median < "$work/$s.cpu_up"); lg=$(median < "$work/$s.cpu_load")
    CPU_USER[$s]=$u; CPU_SYS[$s]=$k; CPU_REST[$s]=$(awk -v a="$up" -v b="$lg" 'BEGIN { print a + b }')
    printf '%-10s %10s %10s %10s %10s\n' "$s" "$u" "$k" "$up" "$lg"
done
# On a CPU-bound box every request costs load generator + upstream + proxy CPU. A proxy that
# did no user-space work at all, with NGINX's kernel work, would reach at most this ratio.
awk -v r="${CPU_REST[nginx]}" -v u="${CPU_USER[nginx]}" -v k="${CPU_SYS[nginx]}" -v sk="${CPU_SYS[strangler]}" \
    'BEGIN { printf "best throughput ratio to nginx a proxy with no user-space work could reach here: %.2f (%.2f with strangler'"'"'s kernel time)\n", (r + u + k) / (r + k), (r + u + k) / (r + sk) }'

half=$(awk -v r="${RPS[strangler]}" 'BEGIN { printf "%d", r / 2 }')
echo
echo "fixed rate $half req/s (half of Strangler's throughput): oha -z ${DURATION}s -c $CONNS -q $half"
for r in $(seq 1 "$ROUNDS"); do
    for s in $(rotated $((r - 1)) "${HALF_SYSTEMS[@]}"); do
        # Strangler's own view: its added-latency histogram, scraped before and after.
        [ "$s" = strangler ] && curl -fs "http://127.0.0.1:$STR_ADMIN/metrics" > "$work/metrics.before"
        p99=$(oha -z "${DURATION}s" -c "$CONNS" -q "$half" --no-tui --output-format json "${URL[$s]}" \
            | python3 -c 'import json, sys; print("%.3f" % (json.load(sys.stdin)["latencyPercentiles"]["p99"] * 1000))')
        inside=""
        if [ "$s" = strangler ]; then
            curl -fs "http://127.0.0.1:$STR_ADMIN/metrics" > "$work/metrics.after"
            inside=$(python3 load/added-latency.py "$work/metrics.before" "$work/metrics.after")
            echo "$inside" >> "$work/inside.half"
            inside=" (inside, us: $inside)"
        fi
        echo "  round $r $s: p99 $p99 ms$inside"
        echo "$p99" >> "$work/$s.half"
    done
done
d99=$(median < "$work/direct.half")
s99=$(median < "$work/strangler.half")

echo
awk -v a="${RPS[strangler]}" -v b="${RPS[nginx]}" 'BEGIN { printf "throughput ratio strangler/nginx: %.2f\n", a / b }'
awk -v a="${RPS[strangler]}" -v b="${RPS[haproxy]}" 'BEGIN { printf "throughput ratio strangler/haproxy: %.2f\n", a / b }'
awk -v s="$s99" -v d="$d99" 'BEGIN { printf "added p99 latency at half load (ms): %.3f\n", s - d }'
cpu() { awk -v u="${CPU_USER[$1]}" -v k="${CPU_SYS[$1]}" 'BEGIN { printf "%.2f", u + k }'; }
echo "proxy cpu per request (us): strangler $(cpu strangler) nginx $(cpu nginx) haproxy $(cpu haproxy)"
# Medians over the rounds of the gateway's own p50, p99 and p99.9.
q() { awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }' "$work/inside.half" | median; }
echo "gateway added latency at half load (us): p50 $(q p50) p99 $(q p99) p999 $(q p999)"
if [ -n "$BASELINE_BIN" ]; then
    awk -v a="${RPS[strangler]}" -v b="${RPS[baseline]}" 'BEGIN { printf "throughput ratio strangler/baseline: %.2f\n", a / b }'
    awk -v s="$(median < "$work/baseline.half")" -v d="$d99" 'BEGIN { printf "baseline added p99 latency at half load (ms): %.3f\n", s - d }'
fi
