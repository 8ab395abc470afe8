"""Liveness and readiness over HTTP for Kubernetes probes (``consumers.serving``: a few threads).

``GET /healthz``: 200 while the poll loop has looped recently (a wedged loop fails the probe and
the pod is restarted). ``GET /readyz``: 200 once the consumer has joined its group (it received
an assignment, possibly empty) and while it is not shutting down; a member that lost its
partitions (its session timed out) is not ready until it is assigned again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from .errors import ConsumerError
from .serving import PooledHTTPServer, QuietHandler

log = logging.getLogger("consumers.health")
PORT_REFUSED = "cannot serve the health endpoints on port"  # the start of the refusal (the demo looks for it)


class HealthServer:
    def __init__(self, port: int, *, live: Callable[[], bool], ready: Callable[[], bool],
                 status: Callable[[], dict] | None = None, host: str = "0.0.0.0"):
        checks = {"/healthz": live, "/livez": live, "/readyz": ready}
        status_of = status or (lambda: {})

        class Handler(QuietHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                check = checks.get(self.path.split("?", 1)[0])
                if check is None:
                    self.send_error(404)
                    return
                ok = bool(check())
                body = json.dumps({"ok": ok, **status_of()}).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        try:
            self._server = PooledHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConsumerError(f"{PORT_REFUSED} {port}: {exc.strerror}; give a free "
                                "port with --health-port (`events run`: or EVENTS_HEALTH_PORT), or 0 for none") from exc
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="events-health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health endpoints on :%d (/healthz, /readyz)", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
