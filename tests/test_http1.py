"""The SendGrid transport's own HTTP/1.1 connection (nachfass/core/mail/http1.py) against a raw socket server.

The server answers with scripted bytes, so the cases the local SendGrid server never produces are covered:
chunked bodies, interim 100 answers, HTTP/1.0 bodies delimited by the end of the connection, a keep-alive
connection the server closed while idle, an answer cut off before or after the status line. And the
request itself: what the official client (``SendGridAPIClient.send()``) sends, this one sends too.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable

import pytest
import sendgrid
from sendgrid_fixtures import API_KEY, SHOP, make_mail

from nachfass.core.mail import http1
from nachfass.core.mail.sendgrid_payload import build_payload
from nachfass.core.mail.transport import SendGridAuthError, SendGridTransport

OK = b"HTTP/1.1 202 Accepted\r\nX-Message-Id: m-1\r\nContent-Length: 0\r\n\r\n"


def read_request(conn: socket.socket, buf: bytearray) -> tuple[bytes, dict[str, str], bytes] | None:
    """One request from ``conn`` (``buf`` keeps what was read beyond it); None at the end of the stream."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    buf[:] = rest[length:]
    return lines[0].encode(), headers, rest[:length]


class RawServer:
    """Accepts connections; ``answer(number, request)`` gives the bytes to send, or None to hang up."""

    def __init__(self, answer: Callable[[int, tuple], bytes | None]) -> None:
        self.answer = answer
        self.requests: list[tuple[bytes, dict[str, str], bytes]] = []
        self.connections = 0
        self.close_after: set[int] = set()  # request numbers after whose answer the server hangs up
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        with conn:
            while (request := read_request(conn, buf)) is not None:
                self.requests.append(request)
                reply = self.answer(len(self.requests), request)
                if reply is None:
                    return
                conn.sendall(reply)
                if b"connection: close" in reply.lower() or reply.startswith(b"HTTP/1.0"):
                    return
                if len(self.requests) in self.close_after:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server():
    servers: list[RawServer] = []

    def start(answer):
        srv = RawServer(answer)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()


def post(srv: RawServer, body: bytes = b"{}", conn: http1.Connection | None = None):
    conn = conn or http1.Connection("http", "127.0.0.1", srv.port, timeout=0.5)
    head = http1.request_head("POST", "/v3/mail/send", f"127.0.0.1:{srv.port}", {"Accept": "text/plain"})
    return conn, conn.post(head, body)


def test_same_request_as_the_official_client(server):
    srv = server(lambda n, req: OK)
    mail = make_mail(1)
    SendGridTransport(API_KEY, srv.url, shop=SHOP).send(mail)
    sendgrid.SendGridAPIClient(api_key=API_KEY, host=srv.url).send(build_payload(mail, SHOP))
    (ours_line, ours, ours_body), (official_line, official, official_body) = srv.requests
    assert ours_line == official_line == b"POST /v3/mail/send HTTP/1.1"
    assert json.loads(ours_body) == json.loads(official_body)
    for name in ("host", "authorization", "user-agent", "accept", "content-type"):
        assert ours[name] == official[name], name
    assert ours["authorization"] == f"Bearer {API_KEY}"
    assert int(ours["content-length"]) == len(ours_body)


def test_keep_alive_reuses_one_connection(server):
    srv = server(lambda n, req: OK)
    conn, _ = post(srv)
    for _ in range(4):
        _, (status, headers, body) = post(srv, conn=conn)
        assert (status, body) == (202, b"")
        assert headers["x-message-id"] == headers.get("X-MESSAGE-ID") == "m-1"
    assert srv.connections == 1 and len(srv.requests) == 5


def test_chunked_body_with_trailer_and_interim_answer(server):
    reply = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'7;ext=1\r\n{"error\r\n8\r\ns": []}\n\r\n0\r\nX-Trailer: 1\r\n\r\n'
    )
    srv = server(lambda n, req: reply if n == 1 else OK)
    conn, (status, _, body) = post(srv)
    assert (status, body) == (400, b'{"errors": []}\n')
    _, (status, _, _) = post(srv, conn=conn)  # the chunked answer was read to its end: the socket is reusable
    assert status == 202 and srv.connections == 1


def test_misframed_chunk_keeps_the_status_and_drops_the_connection(server):
    reply = b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"
    srv = server(lambda n, req: reply)
    conn, (status, _, body) = post(srv)
    assert (status, body, conn.sock) == (400, b"", None)


def test_body_until_close_and_connection_close(server):
    answers = {
        1: b"HTTP/1.0 500 Internal Server Error\r\n\r\nbroken",
        2: b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy",
    }
    srv = server(lambda n, req: answers.get(n, OK))
    conn, answer = post(srv)
    assert (answer[0], answer[2]) == (500, b"broken") and conn.sock is None
    _, answer = post(srv, conn=conn)
    assert (answer[0], answer[2]) == (503, b"busy") and conn.sock is None
    _, answer = post(srv, conn=conn)
    assert answer[0] == 202 and srv.connections == 3


def test_idle_connection_closed_by_the_server_is_replaced_not_ambiguous(server):
    srv = server(lambda n, req: OK)
    srv.close_after.add(1)  # an idle timeout: the server closes a keep-alive connection without a word
    conn, _ = post(srv)
    threading.Event().wait(0.2)
    _, (status, _, _) = post(srv, conn=conn)
    assert status == 202 and srv.connections == 2 and len(srv.requests) == 2


def test_hang_up_before_the_status_line_is_no_answer(server):
    srv = server(lambda n, req: None)
    with pytest.raises(http1.NoAnswer):
        post(srv)
    assert len(srv.requests) == 1  # it arrived: the server may have acted on it


def test_cut_after_the_status_line_keeps_the_status(server):
    srv = server(lambda n, req: b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\nshort")
    conn, (status, _, body) = post(srv)
    # The server keeps the connection open without sending the rest: the read times out, the status decides.
    assert (status, body) == (202, b"") and conn.sock is None


def test_garbage_instead_of_http_is_no_answer(server):
    srv = server(lambda n, req: b"SMTP ready\r\n\r\n")
    with pytest.raises(http1.NoAnswer, match="status line"):
        post(srv)


def test_refused_is_not_sent():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = http1.Connection("http", "127.0.0.1", port, timeout=2)
    with pytest.raises(http1.NotSent):
        conn.post(http1.request_head("POST", "/", "x", {}), b"{}")


def test_header_injection_and_non_latin1_refused():
    with pytest.raises(ValueError):
        http1.request_head("POST", "/", "h", {"Authorization": "Bearer a\r\nX-Evil: 1"})
    with pytest.raises(UnicodeEncodeError):
        http1.request_head("POST", "/", "h", {"Authorization": "Bearer ключ"})


def test_host_header_like_http_client():
    assert http1.host_header("api.sendgrid.com", None, "https") == "api.sendgrid.com"
    assert http1.host_header("api.sendgrid.com", 443, "https") == "api.sendgrid.com"
    assert http1.host_header("127.0.0.1", 3030, "http") == "127.0.0.1:3030"
    assert http1.host_header("::1", 8080, "http") == "[::1]:8080"
    assert http1.host_header("bücher.example", None, "http") == "xn--bcher-kva.example"


def test_a_key_outside_latin1_is_refused_by_name_never_by_value():
    with pytest.raises(SendGridAuthError, match="SENDGRID_API_KEY") as info:
        SendGridTransport("SG.schlüssel-ключ", "http://127.0.0.1:9", shop=SHOP)
    assert "ключ" not in str(info.value) and "schlüssel" not in str(info.value)
