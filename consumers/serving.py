"""The HTTP servers of the probes and the scrapes (``/healthz``, ``/metrics``): a few threads, however
many connections are open.

The standard library's threading servers start a thread per connection and keep it while the
connection stays open: a thousand idle connections held a thousand threads. Here an open connection
waits in a selector (a socket, no thread) until it has sent something; then one of ``WORKERS``
threads serves it (a probe or a scrape takes milliseconds). A connection that sends nothing within
``READ_TIMEOUT_S``, or stalls within a request for that long, is closed.
"""

from __future__ import annotations

import selectors
import socket
import socketserver
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

WORKERS = 4
READ_TIMEOUT_S = 5.0
SWEEP_S = 0.5  # how often connections that sent nothing are looked over


class PoolingMixIn(socketserver.BaseServer):
    """Like ``socketserver.ThreadingMixIn``: connections wait in a selector until readable, then a
    pool of ``WORKERS`` threads serves them."""

    workers = WORKERS
    request_queue_size = 128  # connections the kernel holds before the server accepts them

    def process_request(self, request: Any, client_address: Any) -> None:
        if not hasattr(self, "_selector"):
            self._selector = selectors.DefaultSelector()
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="events-http")
            self._lock = threading.Lock()
            self._waiting: dict[socket.socket, float] = {}  # connection -> when it was accepted
            self._closed = False
            threading.Thread(target=self._hand_over, name="events-http-wait", daemon=True).start()
        with self._lock:
            self._waiting[request] = time.monotonic()
            self._selector.register(request, selectors.EVENT_READ, client_address)

    def _hand_over(self) -> None:
        """Gives each connection that sent something to the pool; closes those idle too long."""
        while not self._closed:
            try:
                ready = self._selector.select(SWEEP_S)
            except (OSError, ValueError):  # the selector was closed: the server is closing
                return
            with self._lock:
                for key, _ in ready:
                    connection = cast(socket.socket, key.fileobj)
                    self._selector.unregister(connection)
                    del self._waiting[connection]
                    self._pool.submit(self._serve, connection, key.data)
                idle = [c for c, since in self._waiting.items() if time.monotonic() - since > READ_TIMEOUT_S]
                for connection in idle:
                    self._selector.unregister(connection)
                    del self._waiting[connection]
            for connection in idle:
                self.shutdown_request(connection)

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        request.settimeout(READ_TIMEOUT_S)
        try:
            self.finish_request(request, client_address)
        except OSError:  # timed out, reset by the client: nothing to report
            pass
        except Exception:  # noqa: BLE001 - as socketserver does: report, close, serve the next one
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        if hasattr(self, "_selector"):
            with self._lock:
                self._closed = True
                waiting, self._waiting = list(self._waiting), {}
                self._selector.close()
            for connection in waiting:
                self.shutdown_request(connection)
            self._pool.shutdown(wait=False, cancel_futures=True)


class PooledHTTPServer(PoolingMixIn, HTTPServer):
    pass


class PooledWSGIServer(PoolingMixIn, WSGIServer):
    pass


class QuietHandler(BaseHTTPRequestHandler):
    """Probes every few seconds, scrapes every few more: kept out of the logs."""

    def log_message(self, *_args) -> None:
        pass


class QuietWSGIHandler(WSGIRequestHandler):
    def log_message(self, *_args) -> None:
        pass
