"""A real upstream process for the acceptance suite: answers every request with its name.

Usage: python upstream.py NAME PORT_FILE
Binds an ephemeral port on 127.0.0.1, writes it to PORT_FILE, serves until killed.
GET /health answers 200 unless the file PORT_FILE.sick exists (then 503).
"""

import json
import os
import socket
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
        if length:
            self.rfile.read(length)
        if self.path == "/health":
            status = 503 if os.path.exists(self.server.port_file + ".sick") else 200
        else:
            status = 200
        body = json.dumps({"served_by": self.server.name, "path": self.path,
                           "forwarded_for": self.headers.get("x-forwarded-for")}).encode()
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
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
