"""A minimal HTTP/1.1 client connection for one job: POST a JSON body, read the answer, keep the socket.

Why not ``http.client``: at 1,000+ mails/s its per-request work (a regex check per header, the ``email``
package parsing every response header block) cost as much CPU as building the mail itself, and the sender
runs on a shared 2-core machine. This client sends a header block prepared once per transport plus the
body in one ``sendall`` and parses the answer with ``readline``; what it does *not* do (no redirects, no
proxies, no compression, no ``Expect: 100-continue``) SendGrid's Mail Send does not need.

It keeps the distinction the at-most-once ledger depends on (``transport.py``):

* :class:`NotSent` — raised before the last byte of the request was handed to the kernel (connect refused,
  DNS, TLS handshake, reset while sending): the server cannot have acted on it;
* :class:`NoAnswer` — the request left, but no complete status line and header block came back (timeout,
  connection closed or reset): the server may have acted on it.

A body that breaks off after the status line and headers arrived is returned as empty: the status decides.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
from collections.abc import Iterator, Mapping

MAX_LINE = 65_536
MAX_HEADERS = 100


class NotSent(Exception):
    """The request did not fully leave the process: retrying cannot duplicate it."""


class NoAnswer(Exception):
    """The request left, but no complete answer came back: the server may or may not have acted on it."""


class Headers(Mapping[str, str]):
    """Response headers, looked up case-insensitively (a repeated header keeps its last value)."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, tuple[str, str]]) -> None:
        self._items = items  # lower-cased name -> (name as sent, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def get(self, name: str, default=None):  # type: ignore[override]
        item = self._items.get(name.lower())
        return default if item is None else item[1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


def host_header(hostname: str, port: int | None, scheme: str) -> str:
    """The ``Host`` value as ``http.client`` writes it: IDNA, IPv6 in brackets, the port unless default."""
    host = f"[{hostname}]" if ":" in hostname else hostname.encode("idna").decode("ascii")
    default = 443 if scheme == "https" else 80
    return host if port is None or port == default else f"{host}:{port}"


def request_head(method: str, path: str, host: str, headers: Mapping[str, str]) -> bytes:
    """Request line and headers (without ``Content-Length`` and the blank line), encoded once.

    Raises ``ValueError`` for a name or value that could break the header block (CR, LF, NUL) and
    ``UnicodeEncodeError`` for a value outside Latin-1 (what ``http.client`` accepts).
    """
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in headers.items():
        if name.lower() in ("host", "content-length"):
            continue
        for part in (name, value):
            if any(c in part for c in "\r\n\0"):
                raise ValueError("a header name or value contains CR, LF or NUL")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


class Connection:
    """One keep-alive connection; not thread-safe (the transport keeps one per worker thread)."""

    def __init__(
        self,
        scheme: str,
        hostname: str,
        port: int | None,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.scheme = scheme
        self.hostname = hostname
        self.port = port or (443 if scheme == "https" else 80)
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.sock: socket.socket | None = None
        self._reader = None

    def close(self) -> None:
        sock, reader = self.sock, self._reader
        self.sock = self._reader = None
        for thing in (reader, sock):
            if thing is not None:
                with contextlib.suppress(OSError):
                    thing.close()

    def _connect(self) -> None:
        sock = socket.create_connection((self.hostname, self.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.hostname)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._reader = sock.makefile("rb")

    def _stale(self) -> bool:
        # An idle keep-alive socket that is readable has been closed by the server (or holds garbage):
        # reusing it would turn a harmless stale connection into an ambiguous "no answer".
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def post(self, head: bytes, body: bytes) -> tuple[int, Headers, bytes]:
        """Send ``head`` (from :func:`request_head`) with ``body``; return status, headers and body."""
        if self.sock is not None and self._stale():
            self.close()
        try:
            if self.sock is None:
                self._connect()
            self.sock.sendall(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
        except (OSError, ValueError) as exc:
            self.close()
            raise NotSent(f"{type(exc).__name__}: {exc}") from None
        try:
            status, version, headers = self._read_head()
        except (OSError, ValueError) as exc:
            self.close()
            raise NoAnswer(f"{type(exc).__name__}: {exc}") from None
        try:
            data, reusable = self._read_body(status, version, headers)
        except (OSError, ValueError):
            data, reusable = b"", False  # the status line arrived: it decides
        if not reusable:
            self.close()
        return status, headers, data

    # --- reading the answer ---------------------------------------------------------------------------

    def _line(self) -> bytes:
        line = self._reader.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ValueError("header line too long")
        return line

    def _read_head(self) -> tuple[int, str, Headers]:
        while True:
            line = self._line()
            if not line:
                raise ConnectionError("the server closed the connection without an answer")
            version, _, rest = line.decode("latin-1").partition(" ")
            code = rest[:3]
            if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise ValueError(f"not an HTTP/1.x status line: {line[:40]!r}")
            status = int(code)
            items: dict[str, tuple[str, str]] = {}
            while True:
                raw = self._line()
                if raw in (b"\r\n", b"\n"):
                    break
                if not raw:
                    raise ConnectionError("the connection closed inside the response headers")
                if len(items) >= MAX_HEADERS:
                    raise ValueError("too many response headers")
                name, sep, value = raw.decode("latin-1").partition(":")
                if sep:
                    items[name.strip().lower()] = (name.strip(), value.strip())
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer (100 Continue): the real one follows
            return status, version, Headers(items)

    def _read_body(self, status: int, version: str, headers: Headers) -> tuple[bytes, bool]:
        connection = (headers.get("Connection") or "").lower()
        keep = "close" not in connection and (version != "HTTP/1.0" or "keep-alive" in connection)
        if status in (204, 304):
            return b"", keep  # no body by definition, whatever the headers say
        if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size_line = self._line()
                if not size_line:
                    raise ConnectionError("the connection closed inside a chunked body")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self._line() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(parts), keep
                parts.append(self._exact(size))
                if self._line() not in (b"\r\n", b"\n"):
                    raise ValueError("a chunk is longer than its size line says")
        length = headers.get("Content-Length")
        if length is not None:
            n = int(length)
            if n < 0:
                raise ValueError("negative Content-Length")
            return self._exact(n), keep
        return self._reader.read(), False  # delimited by the end of the connection

    def _exact(self, n: int) -> bytes:
        data = self._reader.read(n)
        if len(data) != n:
            raise ConnectionError("the connection closed inside the response body")
        return data
