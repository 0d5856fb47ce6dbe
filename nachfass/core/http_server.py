"""Serving the project's two HTTP services (the web service and the local SendGrid-compatible server).

Both are Starlette applications run by uvicorn. This module adds what uvicorn leaves to the operator:

* **a total deadline per request**: from the moment a connection is ready for a request (accepted, or the
  previous response finished) until the response is complete. uvicorn's own timeouts cover only idle
  keep-alive connections, so a client that sends one header byte every few seconds would otherwise hold its
  connection forever. When the deadline passes before the request's headers are complete the client gets
  ``408`` and the connection is closed; later (a body trickling in, an answer being written) the connection
  is closed. Asyncio holds a connection without a thread, so slow clients cost a socket, not a thread;
* **bounded concurrency**: at most ``limit_concurrency`` connections; beyond that uvicorn answers ``503``;
* **request headers** of at most ``max_header_bytes`` (h11 answers ``400`` beyond);
* the ``nachfass.abort`` ASGI extension: a callable that closes the connection without an answer. Only the
  local SendGrid server uses it, to imitate a network failure;
* :class:`ServerThread` binds its socket at construction, so the URL (port 0 = a free port) is known
  before it starts; ``start()``/``stop()`` serve in a background thread, ``run()`` in the foreground until
  SIGINT or SIGTERM, then finishes the requests in progress (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("nachfass.http")

ABORT_EXTENSION = "nachfass.abort"


@dataclass(frozen=True)
class Limits:
    request_deadline_s: float = 30.0  # whole request: headers, body, handling, answer
    keep_alive_s: int = 5  # idle time allowed between two requests on one connection
    limit_concurrency: int = 256  # open connections; beyond: 503
    max_header_bytes: int = 16 * 1024
    graceful_shutdown_s: int = 30  # on stop: requests in progress may finish within this time


class _Config(uvicorn.Config):
    def __init__(self, app: Any, limits: Limits, **kwargs: Any) -> None:
        self.limits = limits
        super().__init__(
            app,
            http=DeadlineProtocol,
            lifespan="off",
            log_config=None,  # never reconfigure the host process's logging (tests, the demo, Dagster)
            access_log=False,  # the applications log requests themselves, with tokens redacted
            server_header=False,
            date_header=True,
            timeout_keep_alive=limits.keep_alive_s,
            limit_concurrency=limits.limit_concurrency,
            h11_max_incomplete_event_size=limits.max_header_bytes,
            timeout_graceful_shutdown=limits.graceful_shutdown_s,
            **kwargs,
        )


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a total deadline per request and the ``nachfass.abort`` extension."""

    config: _Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn decides on access logging by whether its logger has handlers (which, under a host
        # process's root handler, it always has); the applications log requests themselves, tokens redacted.
        self.access_log = False
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.config.limits.request_deadline_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        waiting_for_headers = self.cycle is None or self.cycle.response_complete
        if waiting_for_headers and self.conn.their_state is h11.SEND_BODY:
            waiting_for_headers = False
        if waiting_for_headers and self.conn.our_state is h11.IDLE:
            try:
                body = b"request not completed in time\n"
                headers = [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ]
                self.transport.write(self.conn.send(h11.Response(status_code=408, headers=headers)))
                self.transport.write(self.conn.send(h11.Data(data=body)))
                self.transport.write(self.conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass
        log.info("request deadline (%.0f s) passed: connection closed", self.config.limits.request_deadline_s)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle and self.cycle is not None:
            # A new request cycle was created just now; its task has not run yet, so the extension is in
            # place before the application sees the scope.
            self.cycle.scope.setdefault("extensions", {})[ABORT_EXTENSION] = self._abort

    def _abort(self) -> None:
        self.transport.abort()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection gets a deadline of its own


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    # Listening from here on: a client that connects before the server loop runs waits in the backlog.
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ServerThread:
    """A uvicorn server for ``app`` on ``host:port`` (bound now), served in a background thread."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, limits: Limits | None = None
    ) -> None:
        self.limits = limits or Limits()
        self.socket = bind(host, port)
        self.url = url_of(self.socket)
        self.server = uvicorn.Server(_Config(app, self.limits))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def start(self, name: str = "http-server") -> None:
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name=name, daemon=True
        )
        self._thread.start()
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.01)  # not Event().wait(): a timed lock wait hangs under a shifted monotonic clock

    def run(self) -> None:
        """Serve in the foreground until SIGINT/SIGTERM (uvicorn installs the handlers in the main thread),
        then stop accepting and let the requests in progress finish."""
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def stop(self) -> None:
        """Stop accepting, let the requests in progress finish (graceful shutdown), then return."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.limits.graceful_shutdown_s + 5)
        self.socket.close()
