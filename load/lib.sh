# Shared parts of the load scripts; sourced from the repository root.

# A scratch directory ($work) and the background processes ($pids), both gone on exit.
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# upstream_conf PORT: NGINX config of the one-worker upstream answering every path with a
# small fixed body ("hello from the upstream").
upstream_conf() {
    cat <<CONF
worker_processes 1;
daemon off;
pid $work/upstream.pid;
error_log $work/upstream.err;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$1 reuseport backlog=4096;
        location / { return 200 "hello from the upstream\n"; }
    }
}
CONF
}

# strangler_conf PORT ADMIN_PORT UPSTREAM_PORT [THREADS]: a gateway config sending every
# request to the one upstream (I/O threads: one per CPU unless THREADS is given).
strangler_conf() {
    cat <<CONF
[gateway]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
control = "sqlite://$work/control-$1.db"
${4:+threads = $4}

[upstreams.up]
url = "http://127.0.0.1:$3"

[[routes]]
name = "all"
split = { up = 100 }
CONF
}
