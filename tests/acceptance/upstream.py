"""A real upstream process for the acceptance suite: answers every request with its name.

Usage: python upstream.py NAME PORT_FILE [SQLITE_FILE TABLE KEY_COLUMN NAME_COLUMN]
Binds an ephemeral port on 127.0.0.1, writes it to PORT_FILE, serves until killed.
GET /health answers 200 unless the file PORT_FILE.sick exists (then 503).
With a database: PUT/POST /api/users/ID with a JSON body {"email": ..., "name": ...} upserts
the row into TABLE, the way a real monolith or service would take the write.
"""

import json
import os
import socket
import sqlite3
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Head and body go out in separate writes: without this, Nagle's algorithm waits
        # for the peer's delayed ACK (~40 ms) before sending the body.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        db = self.server.db
        if db and self.command in ("PUT", "POST") and self.path.startswith("/api/users/"):
            table, key, name_col = self.server.table
            row = json.loads(raw or b"{}")
            user_id = int(self.path.rsplit("/", 1)[1])
            with sqlite3.connect(db, timeout=30) as c:
                c.execute(
                    f"INSERT INTO {table} ({key}, email, {name_col}) VALUES (?, ?, ?) "
                    f"ON CONFLICT ({key}) DO UPDATE SET email = excluded.email, {name_col} = excluded.{name_col}",
                    (user_id, row.get("email"), row.get("name")))
        if self.path == "/health":
            status = 503 if os.path.exists(self.server.port_file + ".sick") else 200
        else:
            status = 200
        body = json.dumps({"served_by": self.server.name, "path": self.path,
                           "forwarded_for": self.headers.get("x-forwarded-for"),
                           "received": len(raw)}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args):
        pass


def main():
    name, port_file = sys.argv[1], sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.name = name
    server.port_file = port_file
    server.db = sys.argv[3] if len(sys.argv) > 3 else None
    server.table = tuple(sys.argv[4:7]) if len(sys.argv) > 6 else None
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
