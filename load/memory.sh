#!/usr/bin/env bash
# Memory of the release gateway: idle RSS, then RSS with 10,000 idle keep-alive client
# connections (each has made one proxied request and stays open).
#
#   bash load/memory.sh            # CONNECTIONS=10000
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-10000}
UP=18181 STR=18184 STR_ADMIN=18194
# Each side holds one descriptor per connection: raise the soft limit as far as allowed.
ulimit -n "$(ulimit -Hn)"

command -v nginx >/dev/null || { echo "needs nginx (apt-get install nginx)" >&2; exit 1; }
cargo build --release --bin strangler 2>&1 | tail -1
. load/lib.sh
upstream_conf $UP > "$work/upstream.conf"
strangler_conf $STR $STR_ADMIN $UP > "$work/strangler.toml"
nginx -c "$work/upstream.conf" & pids+=($!)
RUST_LOG=warn ./target/release/strangler serve --config "$work/strangler.toml" & gw=$!; pids+=($gw)
for port in $UP $STR; do
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$gw/status"; }
sleep 1
idle=$(rss)
echo "idle RSS: $((idle / 1024)) MB ($idle KiB)"

python3 - "$STR" "$CONNECTIONS" "$gw" <<'PY'
import socket, sys, time
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while b"upstream\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit(f"connection {i} closed early")
        data += chunk
    socks.append(s)
time.sleep(2)
rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
print(f"RSS with {n} idle keep-alive connections: {rss // 1024} MB ({rss} KiB)")
open("/tmp/strangler-memory-rss", "w").write(str(rss))
for s in socks:
    s.close()
PY
with=$(cat /tmp/strangler-memory-rss)
echo "added by $CONNECTIONS idle connections: $(((with - idle) / 1024)) MB"
