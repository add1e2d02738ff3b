#!/usr/bin/env bash
# Idle client connection memory by kind, on the release gateway: plain HTTP/1.1, HTTP/1.1
# over TLS and HTTP/2 over TLS, each with parking on (the default `timeouts.park`) and off
# (`park = "1h"`). Each connection makes one proxied request and stays open; the figure is
# the gateway's RSS growth divided by the connection count. HTTP/2 is measured once more
# with `header_read = "10s"`, to show its idle (parked) connections closed with GOAWAY at
# that limit.
#
#   bash load/memory-kinds.sh        # CONNECTIONS=2000
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-2000}
TARGET=${CARGO_TARGET_DIR:-target}
UP=18181 STR=18184 STR_ADMIN=18194
ulimit -n "$(ulimit -Hn)"
command -v nginx >/dev/null || { echo "needs nginx (apt-get install nginx)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "needs openssl" >&2; exit 1; }
cargo build --release --bin strangler 2>&1 | tail -1
. load/lib.sh
upstream_conf $UP > "$work/upstream.conf"
nginx -c "$work/upstream.conf" & pids+=($!)
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

measure() { # KIND PARK [HEADER_READ]
    local kind=$1 park=$2 limit=${3:-} conf="$work/gw-$1-$2${3:-}.toml"
    strangler_conf $STR $STR_ADMIN $UP > "$conf"
    printf '\n[gateway.timeouts]\npark = "%s"\n' "$park" >> "$conf"
    [ -z "$limit" ] || printf 'header_read = "%ss"\n' "$limit" >> "$conf"
    if [ "$kind" != plain ]; then
        printf '\n[gateway.tls]\ncert = "%s"\nkey = "%s"\n' "$work/cert.pem" "$work/key.pem" >> "$conf"
    fi
    RUST_LOG=warn "$TARGET/release/strangler" serve --config "$conf" & local gw=$!
    for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$STR) 2>/dev/null && break; sleep 0.1; done
    sleep 1
    python3 - "$STR" "$CONNECTIONS" "$gw" "$kind" "$park" "$STR_ADMIN" "$limit" <<'PY'
import socket, ssl, struct, sys, time, urllib.request
port, n, pid, kind, park = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
admin, limit = int(sys.argv[6]), sys.argv[7]
def metric(prefix):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
    return next((int(float(l.split()[-1])) for l in text.splitlines() if l.startswith(prefix)), 0)
def parked():
    return metric("strangler_gateway_connections_parked ")
def rss():
    return next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2"] if kind == "h2" else ["http/1.1"])
def frame(kind_, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind_, flags]) + struct.pack(">I", stream) + payload
def h2_get(s):
    # A connection window of 15 MB, as browsers grant (curl, Go and hyper grant more): a
    # client that grants none cannot be parked once a response has used some of it.
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
              + frame(8, 0, 0, struct.pack(">I", 15 * 1024 * 1024 - 65535)))
    # :method GET, :scheme https, :path /, :authority bench (HPACK static indexes).
    block = bytes([0x82, 0x87, 0x84, 0x41, 5]) + b"bench"
    s.sendall(frame(1, 0x5, 1, block))
    data = b""
    while True:
        while len(data) < 9:
            chunk = s.recv(65536)
            if not chunk: raise SystemExit("h2 connection closed early")
            data += chunk
        length = int.from_bytes(data[:3], "big"); t, flags = data[3], data[4]
        while len(data) < 9 + length:
            data += s.recv(65536)
        stream = int.from_bytes(data[5:9], "big") & 0x7fffffff
        if t == 4 and not flags & 1:
            s.sendall(frame(4, 1, 0, b""))  # ack the server's settings
        data = data[9 + length:]
        if stream == 1 and t in (0, 1) and flags & 1:
            return
def h1_get(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while b"upstream\n" not in data:
        chunk = s.recv(4096)
        if not chunk: raise SystemExit("connection closed early")
        data += chunk
before = rss()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if kind != "plain":
        s = ctx.wrap_socket(s, server_hostname="localhost")
    (h2_get if kind == "h2" else h1_get)(s)
    socks.append(s)
time.sleep(2)
after = rss()
label = {"plain": "plain HTTP/1.1", "tls": "HTTP/1.1 over TLS", "h2": "HTTP/2 over TLS"}[kind]
state = "parked" if park != "1h" else "not parked"
print(f"idle connection memory ({label}, park {park}, {state}): "
      f"{(after - before) / n:.1f} KiB per connection ({n} connections, {parked()} parked, RSS {before // 1024} -> {after // 1024} MB)")
if limit:
    time.sleep(int(limit) + 7)  # the limit, then up to 5 s for an answer to the GOAWAY
    closed = metric('strangler_gateway_connections_idle_closed_total{protocol="http2"}')
    print(f"idle HTTP/2 connections {int(limit) + 7}s after their last response (header_read {limit}s): "
          f"{metric('strangler_gateway_connections ')} open, {closed} closed with GOAWAY, "
          f"RSS {rss() // 1024} MB")
for s in socks: s.close()
PY
    kill "$gw"; wait "$gw" 2>/dev/null || true
}
for kind in ${KINDS:-plain tls h2}; do
    measure "$kind" 250ms
    measure "$kind" 1h
done
measure h2 250ms 10
