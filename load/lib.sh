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

# prepare TOOL: checks that TOOL and NGINX are here, installs oha if missing, builds the
# release binary (the single-worker scripts: instructions, syscalls, allocations).
prepare() {
    command -v "$1" >/dev/null || { echo "$1 is needed (apt-get install $1)" >&2; exit 1; }
    command -v nginx >/dev/null || { echo "nginx is needed (load/proxy-compare.sh installs it)" >&2; exit 1; }
    export PATH="$HOME/.cargo/bin:$PATH"
    command -v oha >/dev/null || cargo install oha --locked
    cargo build --release --bin strangler 2>&1 | tail -1
    echo "work dir: $work" >&2
}

# proxy_conf PORT UPSTREAM_PORT: NGINX as a proxy with one worker (no master) to the upstream.
proxy_conf() {
    cat <<CONF
master_process off;
worker_processes 1;
daemon off;
pid $work/proxy.pid;
error_log $work/proxy.err;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream backend { server 127.0.0.1:$2; keepalive 64; }
    server {
        listen 127.0.0.1:$1;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
CONF
}
