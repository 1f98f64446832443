"""
The tiny C{auth_http} responder nginx's mail proxy needs: every login is
allowed and sent to one upstream (Dovecot checks the password itself).

Run as a process of its own, so that it never competes with the benchmark's
measuring thread for a GIL::

    python3 bench/_authhttp.py PORT UPSTREAM_PORT
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOOPBACK = "127.0.0.1"


def makeHandler(upstreamPort: int) -> type[BaseHTTPRequestHandler]:
    """
    A request handler answering every request with C{Auth-Status: OK} and
    the upstream's address.
    """

    class AuthHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Auth-Status", "OK")
            self.send_header("Auth-Server", LOOPBACK)
            self.send_header("Auth-Port", str(upstreamPort))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return AuthHandler


def serve(port: int, upstreamPort: int) -> None:
    """
    Answer nginx's auth requests on 127.0.0.1:C{port} until killed.
    """
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer((LOOPBACK, port), makeHandler(upstreamPort))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
