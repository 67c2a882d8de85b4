"""The metrics process: ``python -m gristmill.metrics --fd N --dir DIR --supervisor PID``.

Started (exec'd) by the supervisor when ``--metrics-bind`` is set. It serves
``GET /metrics`` in the Prometheus text format (OpenMetrics when the scraper asks for
it) on the socket it inherits as fd N, from the segments in DIR, and nothing else: any
other path is 404. One thread, one request at a time, each bounded by a timeout: a
scrape is a few kilobytes. It exits on SIGTERM, and by itself when the supervisor
is gone.
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import socket
import socketserver
import sys
from typing import Any
from urllib.parse import urlsplit

#: Seconds a scraper may take to send its request and read the answer.
REQUEST_TIMEOUT = 10.0
#: Seconds between two looks at whether the supervisor is still there.
SUPERVISOR_CHECK = 1.0


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C reaches the whole process group: the supervisor stops us with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parser = argparse.ArgumentParser(prog="python -m gristmill.metrics")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--supervisor", type=int, required=True)
    args = parser.parse_args(argv)

    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    from gristmill.metrics.collector import SegmentCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SegmentCollector(args.dir))

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT
        server_version = "gristmill-metrics"

        def do_GET(self) -> None:
            if urlsplit(self.path).path != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encoder(registry)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self) -> str:
            addr: Any = self.client_address
            return str(addr[0]) if addr else "unix"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would flood the log

    sock = socket.socket(fileno=args.fd)
    server = _Server(sock, Handler)
    while os.getppid() == args.supervisor:
        server.handle_request()
    return 0


class _Server(http.server.HTTPServer):
    """An HTTP server on a socket that is already bound and listening."""

    timeout = SUPERVISOR_CHECK

    def __init__(self, sock: socket.socket, handler: Any) -> None:
        socketserver.BaseServer.__init__(self, sock.getsockname(), handler)
        self.socket = sock
        self.address_family = sock.family


if __name__ == "__main__":
    sys.exit(main())
