"""The web service over real HTTP on 127.0.0.1 with real ECDSA signatures and signed link tokens."""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nachfass.core.landing_files import CONSENT_COLUMNS
from nachfass.core.links import LinkSigner
from nachfass.devtools.event_simulator import generate_keypair, sign_payload
from nachfass.web.app import (
    DEFAULT_REPLAY_WINDOW_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    RunningWebapp,
    make_server,
    run_webapp,
)

LINK_KEY = "test-link-signing-key-0123456789"
EMAIL = "erika.musterfrau@example.com"


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, str]:
    return generate_keypair()


@pytest.fixture(scope="module")
def signer() -> LinkSigner:
    return LinkSigner(LINK_KEY)


@pytest.fixture
def app(tmp_path: Path, keypair: tuple[bytes, str], signer: LinkSigner) -> Iterator[RunningWebapp]:
    with run_webapp(tmp_path / "landing", keypair[1], signer) as running:
        yield running


def request(
    app: RunningWebapp,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, http.client.HTTPMessage]:
    parts = urlsplit(app.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        # HTTP header names are case-insensitive (the server sends them in lower case): look them up so.
        return response.status, response.read().decode("utf-8"), response.headers
    finally:
        conn.close()


def signed_headers(private_key: bytes, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_payload(private_key, body, ts),
        TIMESTAMP_HEADER: ts,
    }


def sample_events() -> list[dict]:
    base = {"email": "kunde@example.com", "send_id": "s-1", "campaign": "cross_sell", "step": "1"}
    return [
        {
            **base,
            "event": "processed",
            "timestamp": 1790000000,
            "sg_event_id": "ev-1",
            "sg_message_id": "m1.f",
        },
        {
            **base,
            "event": "delivered",
            "timestamp": 1790000005,
            "sg_event_id": "ev-2",
            "sg_message_id": "m1.f",
        },
        {**base, "event": "open", "timestamp": 1790000100, "sg_event_id": "ev-3", "sg_machine_open": True},
        {
            **base,
            "event": "click",
            "timestamp": 1790000200,
            "sg_event_id": "ev-4",
            "url": "https://x.example/ä",
        },
    ]


def event_files(app: RunningWebapp) -> list[Path]:
    return sorted((app.landing_dir / "sendgrid_events").iterdir())


def consent_files(app: RunningWebapp) -> list[Path]:
    return sorted((app.landing_dir / "consents").iterdir())


def all_files(landing: Path) -> list[Path]:
    return [p for p in landing.rglob("*") if p.is_file()]


def assert_no_temp_files(landing: Path) -> None:
    leftovers = [p for p in landing.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def read_ndjson(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# ---- webhook --------------------------------------------------------------------------------------------


def test_valid_signed_batch_is_stored_exactly(app: RunningWebapp, keypair: tuple[bytes, str]) -> None:
    events = sample_events()
    body = json.dumps(events, ensure_ascii=False).encode("utf-8")
    status, text, _ = request(app, "POST", "/webhooks/sendgrid", body, signed_headers(keypair[0], body))
    assert status == 200, text
    files = event_files(app)
    assert len(files) == 1
    assert files[0].suffix == ".ndjson"
    assert read_ndjson(files[0]) == events
    assert_no_temp_files(app.landing_dir)


@pytest.mark.parametrize("case", ["forged", "unsigned", "wrong_key", "stale", "future", "garbage_signature"])
def test_unauthenticated_batches_are_refused(
    app: RunningWebapp, keypair: tuple[bytes, str], case: str
) -> None:
    body = json.dumps(sample_events()).encode("utf-8")
    now = int(time.time())
    if case == "forged":
        headers = signed_headers(keypair[0], b'[{"event":"open"}]')
    elif case == "unsigned":
        headers = {"Content-Type": "application/json"}
    elif case == "wrong_key":
        headers = signed_headers(generate_keypair()[0], body)
    # a minute outside the window: one second past it raced the request on a loaded machine (the
    # truncated `now` and the request's own time ate the margin, and a "future" batch was accepted)
    elif case == "stale":
        headers = signed_headers(keypair[0], body, now - DEFAULT_REPLAY_WINDOW_S - 60)
    elif case == "future":
        headers = signed_headers(keypair[0], body, now + DEFAULT_REPLAY_WINDOW_S + 60)
    else:
        headers = {**signed_headers(keypair[0], body), SIGNATURE_HEADER: "not base64!"}
    status, _, _ = request(app, "POST", "/webhooks/sendgrid", body, headers)
    assert status == 403
    assert all_files(app.landing_dir) == []


def test_replay_window_uses_the_injected_clock(tmp_path: Path, keypair: tuple[bytes, str]) -> None:
    fixed = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    body = b"[]"
    with run_webapp(tmp_path, keypair[1], None, now=lambda: fixed, replay_window_s=600) as app:
        inside = signed_headers(keypair[0], body, int(fixed.timestamp()) - 599)
        outside = signed_headers(keypair[0], body, int(fixed.timestamp()) - 601)
        assert request(app, "POST", "/webhooks/sendgrid", body, inside)[0] == 200
        assert request(app, "POST", "/webhooks/sendgrid", body, outside)[0] == 403


def test_oversized_body_is_refused_before_reading(tmp_path: Path, keypair: tuple[bytes, str]) -> None:
    with run_webapp(tmp_path, keypair[1], None, max_body_bytes=1000) as app:
        parts = urlsplit(app.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        # Only the headers are sent: the server must answer from Content-Length alone.
        conn.putrequest("POST", "/webhooks/sendgrid")
        conn.putheader("Content-Length", str(6 * 1024 * 1024))
        for name, value in signed_headers(keypair[0], b"x").items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        conn.close()
        # Just over the limit, really sent: still 413.
        body = json.dumps([{"event": "open", "pad": "x" * 1000}]).encode()
        assert request(app, "POST", "/webhooks/sendgrid", body, signed_headers(keypair[0], body))[0] == 413
        assert all_files(app.landing_dir) == []


def test_missing_content_length_is_refused(app: RunningWebapp, keypair: tuple[bytes, str]) -> None:
    parts = urlsplit(app.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.putrequest("POST", "/webhooks/sendgrid")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()


@pytest.mark.parametrize("body", [b"[{not json", b'{"event": "open"}', b"[1, 2]", b'"text"'])
def test_signed_non_array_bodies_are_bad_requests(
    app: RunningWebapp, keypair: tuple[bytes, str], body: bytes
) -> None:
    status, _, _ = request(app, "POST", "/webhooks/sendgrid", body, signed_headers(keypair[0], body))
    assert status == 400
    assert all_files(app.landing_dir) == []


def test_same_batch_twice_gives_two_files_with_the_same_event_ids(
    app: RunningWebapp, keypair: tuple[bytes, str]
) -> None:
    body = json.dumps(sample_events()).encode()
    for _ in range(2):
        assert request(app, "POST", "/webhooks/sendgrid", body, signed_headers(keypair[0], body))[0] == 200
    files = event_files(app)
    assert len(files) == 2
    ids = [[e["sg_event_id"] for e in read_ndjson(f)] for f in files]
    assert ids[0] == ids[1] == ["ev-1", "ev-2", "ev-3", "ev-4"]  # the ingest dedups on sg_event_id
    assert_no_temp_files(app.landing_dir)


def test_without_public_key_everything_is_refused(
    tmp_path: Path, keypair: tuple[bytes, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), run_webapp(tmp_path, None, None) as app:
        body = json.dumps(sample_events()).encode()
        assert request(app, "POST", "/webhooks/sendgrid", body, signed_headers(keypair[0], body))[0] == 403
        status, text, _ = request(app, "GET", "/healthz")
        assert status == 200
        assert json.loads(text) == {"status": "ok", "webhook_key_configured": False}
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY is not set" in caplog.text
    assert all_files(tmp_path / "sendgrid_events") == []


def test_bad_public_key_fails_at_start_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        make_server(tmp_path, "bm90IGEga2V5", None)
    assert "bm90IGEga2V5" not in str(info.value)


def test_healthz(app: RunningWebapp) -> None:
    status, text, headers = request(app, "GET", "/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(text) == {"status": "ok", "webhook_key_configured": True}


def test_unknown_paths_and_methods(app: RunningWebapp) -> None:
    assert request(app, "GET", "/nope")[0] == 404
    assert request(app, "GET", "/webhooks/sendgrid")[0] == 405
    status, text, _ = request(app, "GET", "/u/a/b")
    assert status == 404 and "Traceback" not in text


# ---- mutation property ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_app(
    tmp_path_factory: pytest.TempPathFactory, keypair: tuple[bytes, str]
) -> Iterator[RunningWebapp]:
    with run_webapp(tmp_path_factory.mktemp("landing"), keypair[1], None) as running:
        yield running


SIGNED_BODY = json.dumps(sample_events()).encode()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    body = bytearray(SIGNED_BODY)
    kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
    if kind == "flip":
        i = draw(st.integers(0, len(body) - 1))
        body[i] ^= draw(st.integers(1, 255))
    elif kind == "insert":
        i = draw(st.integers(0, len(body)))
        body[i:i] = draw(st.binary(min_size=1, max_size=8))
    elif kind == "delete":
        i = draw(st.integers(0, len(body) - 1))
        del body[i : i + draw(st.integers(1, 8))]
    elif kind == "truncate":
        body = body[: draw(st.integers(0, len(body) - 1))]
    else:
        body += draw(st.binary(min_size=1, max_size=8))
    return bytes(body)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutated())
def test_any_mutation_of_a_signed_body_is_refused(
    shared_app: RunningWebapp, keypair: tuple[bytes, str], body: bytes
) -> None:
    assert body != SIGNED_BODY
    ts = str(int(time.time()))
    headers = {SIGNATURE_HEADER: sign_payload(keypair[0], SIGNED_BODY, ts), TIMESTAMP_HEADER: ts}
    status, _, _ = request(shared_app, "POST", "/webhooks/sendgrid", body, headers)
    assert status == 403
    assert all_files(shared_app.landing_dir) == []


# ---- unsubscribe / objection ----------------------------------------------------------------------------


def token(signer: LinkSigner, purpose: str = "unsubscribe", email: str = EMAIL, days: float = 30) -> str:
    data = {"email": email, "customer_id": "c-42", "send_id": "send-7", "campaign": "cross_sell"}
    return signer.sign(purpose, data, datetime.now(UTC) + timedelta(days=days))


def read_consents(app: RunningWebapp) -> list[dict]:
    rel = duckdb.sql(f"select * from read_csv('{app.landing_dir / 'consents'}/*.csv', all_varchar=true)")
    return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]


def test_get_unsubscribe_page_has_no_side_effect_and_both_options(
    app: RunningWebapp, signer: LinkSigner
) -> None:
    tok = token(signer)
    status, html, headers = request(app, "GET", f"/u/{tok}")
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "Abmelden" in html
    assert "Weniger E-Mails (höchstens eine pro Woche)" in html
    assert f'action="{tok}?choice=weekly"' in html
    assert "er***@example.com" in html
    assert EMAIL not in html  # partly masked
    assert request(app, "HEAD", f"/u/{tok}")[0] == 200
    assert consent_files(app) == []


def test_one_click_post_writes_one_withdrawn_event(app: RunningWebapp, signer: LinkSigner) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, html, _ = request(app, "POST", f"/u/{token(signer)}", b"List-Unsubscribe=One-Click", headers)
    assert status == 200
    assert "Sie wurden abgemeldet" in html
    rows = read_consents(app)
    assert len(consent_files(app)) == 1
    assert len(rows) == 1
    row = rows[0]
    assert row["email"] == EMAIL
    assert row["customer_id"] == "c-42"
    assert (row["purpose"], row["event"], row["source"]) == ("marketing_email", "withdrawn", "mail_link")
    assert row["occurred_at"].endswith("Z")
    assert_no_temp_files(app.landing_dir)


def test_weekly_choice_writes_frequency_weekly(app: RunningWebapp, signer: LinkSigner) -> None:
    status, html, _ = request(app, "POST", f"/u/{token(signer)}?choice=weekly", b"")
    assert status == 200
    assert "höchstens eine" in html
    assert [r["event"] for r in read_consents(app)] == ["frequency_weekly"]


def test_objection_link(app: RunningWebapp, signer: LinkSigner) -> None:
    tok = token(signer, "objection")
    status, html, _ = request(app, "GET", f"/o/{tok}")
    assert status == 200 and "Widerspruch" in html
    assert consent_files(app) == []
    status, html, _ = request(app, "POST", f"/o/{tok}", b"")
    assert status == 200 and "Widerspruch wurde gespeichert" in html
    assert [r["event"] for r in read_consents(app)] == ["withdrawn"]


@pytest.mark.parametrize("case", ["tampered", "expired", "wrong_purpose", "garbage", "foreign_key"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_invalid_tokens_are_refused_and_write_nothing(
    app: RunningWebapp, signer: LinkSigner, case: str, method: str
) -> None:
    if case == "tampered":
        tok = token(signer)  # one character changed (opaque tokens have no dot to split at)
        tok = f"{tok[:20]}{'A' if tok[20] != 'A' else 'B'}{tok[21:]}"
    elif case == "expired":
        tok = token(signer, days=-1)
    elif case == "wrong_purpose":
        tok = token(signer, "cart")
    elif case == "foreign_key":
        tok = token(LinkSigner("another-key-another-key-another"))
    else:
        tok = "nonsense"
    status, html, _ = request(
        app, method, f"/u/{tok}", b"List-Unsubscribe=One-Click" if method == "POST" else None
    )
    assert status in (400, 403)
    assert "ungültig oder abgelaufen" in html
    assert "Traceback" not in html
    assert consent_files(app) == []


def test_unsubscribe_token_is_not_an_objection_token(app: RunningWebapp, signer: LinkSigner) -> None:
    assert request(app, "POST", f"/o/{token(signer, 'unsubscribe')}", b"")[0] == 403
    assert consent_files(app) == []


def test_consent_csv_matches_the_export_contract(app: RunningWebapp, signer: LinkSigner) -> None:
    tricky = 'o"brien,jr@example.com'  # quotes and commas survive the CSV round trip
    request(app, "POST", f"/u/{token(signer, email=tricky)}", b"List-Unsubscribe=One-Click")
    request(app, "POST", f"/u/{token(signer)}?choice=weekly", b"")
    rel = duckdb.sql(f"select * from read_csv('{app.landing_dir / 'consents'}/*.csv', header=true)")
    assert tuple(rel.columns) == CONSENT_COLUMNS
    rows = duckdb.sql(
        f"select email, event, occurred_at::timestamptz is not null as ts_ok, length(consent_event_id) "
        f"from read_csv('{app.landing_dir / 'consents'}/*.csv', header=true, all_varchar=true) order by event"
    ).fetchall()
    assert rows == [(EMAIL, "frequency_weekly", True, 36), (tricky, "withdrawn", True, 36)]


def test_page_escapes_token_data(app: RunningWebapp, signer: LinkSigner) -> None:
    evil = "<script>alert(1)</script>@example.com"
    status, html, _ = request(app, "GET", f"/u/{token(signer, email=evil)}")
    assert status == 200
    assert "<script>" not in html
    assert "&lt;s" in html


def test_logs_carry_no_tokens_or_addresses(
    app: RunningWebapp, signer: LinkSigner, caplog: pytest.LogCaptureFixture
) -> None:
    tok = token(signer)
    with caplog.at_level(logging.DEBUG):
        request(app, "GET", f"/u/{tok}")
        request(app, "POST", f"/u/{tok}", b"List-Unsubscribe=One-Click")
        request(app, "POST", f"/u/{tok[:-3]}xyz", b"")
    assert caplog.records, "the service logs requests"
    assert tok[:20] not in caplog.text
    assert EMAIL not in caplog.text
    assert LINK_KEY not in caplog.text


# ---- hostile and slow clients (issue 12) ----------------------------------------------------------------


def raw_exchange(app: RunningWebapp, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, return everything the server answers until it closes or goes quiet."""
    parts = urlsplit(app.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and b"connection: close" not in received.lower():
                    head, _, rest = received.partition(b"\r\n\r\n")
                    length = re.search(rb"content-length: (\d+)", head.lower())
                    if length and len(rest) >= int(length.group(1)):
                        break
        except TimeoutError:
            pass
    return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def test_a_400_digit_timestamp_is_refused_not_a_500(app: RunningWebapp, keypair: tuple[bytes, str]) -> None:
    body = json.dumps(sample_events()).encode()
    headers = {**signed_headers(keypair[0], body), TIMESTAMP_HEADER: "9" * 400}
    assert request(app, "POST", "/webhooks/sendgrid", body, headers)[0] == 403
    assert all_files(app.landing_dir) == []


def test_a_signed_body_of_100000_brackets_is_a_bad_request_not_a_500(
    app: RunningWebapp, keypair: tuple[bytes, str]
) -> None:
    body = b"[" * 100_000
    status, text, _ = request(app, "POST", "/webhooks/sendgrid", body, signed_headers(keypair[0], body))
    assert status == 400, text
    assert all_files(app.landing_dir) == []


def test_a_non_ascii_token_is_an_invalid_link_not_a_500(app: RunningWebapp) -> None:
    for method in ("GET", "POST"):
        status, html, _ = request(app, method, "/u/%C3%A4.%C3%A4", b"" if method == "POST" else None)
        assert status == 403 and "ungültig oder abgelaufen" in html
    assert consent_files(app) == []


def test_unsigned_requests_are_refused_before_the_body_is_read(app: RunningWebapp) -> None:
    parts = urlsplit(app.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.putrequest("POST", "/webhooks/sendgrid")
    conn.putheader("Content-Length", str(4 * 1024 * 1024))  # announced, never sent
    conn.endheaders()
    started = time.monotonic()
    response = conn.getresponse()
    assert response.status == 403
    assert time.monotonic() - started < 2  # answered without waiting for the 4 MiB
    conn.close()


def test_the_body_limit_holds_for_chunked_bodies_too(tmp_path: Path, keypair: tuple[bytes, str]) -> None:
    body = json.dumps([{"event": "open", "pad": "x" * 5000}]).encode()
    with run_webapp(tmp_path, keypair[1], None, max_body_bytes=1000) as app:
        parts = urlsplit(app.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request(
            "POST",
            "/webhooks/sendgrid",
            body=iter([body[:800], body[800:]]),
            headers=signed_headers(keypair[0], body),
            encode_chunked=True,
        )
        assert conn.getresponse().status == 413
        conn.close()
        assert all_files(tmp_path / "sendgrid_events") == []


def test_a_slow_client_is_cut_off_at_the_request_deadline(tmp_path: Path) -> None:
    with run_webapp(tmp_path, None, None, request_deadline_s=1.0) as app:
        parts = urlsplit(app.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            started = time.monotonic()
            received = b""
            try:
                for byte in b"POST /webhooks/sendgrid HTTP/1.1\r\nHost: x\r\n":  # one byte every 0.2 s
                    sock.sendall(bytes([byte]))
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except (ConnectionResetError, TimeoutError):
                pass
            held = time.monotonic() - started
    assert held < 3, f"a slow client held its connection for {held:.1f} s"
    assert received.startswith(b"HTTP/1.1 408")


def test_connections_beyond_the_limit_get_503(tmp_path: Path) -> None:
    with run_webapp(tmp_path, None, None, max_connections=4) as app:
        parts = urlsplit(app.url)
        idle = [socket.create_connection((parts.hostname, parts.port), timeout=5) for _ in range(4)]
        try:
            time.sleep(0.2)
            assert request(app, "GET", "/healthz")[0] == 503
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)
        assert request(app, "GET", "/healthz")[0] == 200


_TOKEN_CHARS = st.sampled_from(["%C3%A4", "%00", "%FF", "%2F", "..", "a", ".", "%", "%E2%80%AE", "~"])


@st.composite
def malformed_request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"G\xc3\xa4T"]))
    prefix = draw(st.sampled_from(["/u/", "/o/", "/webhooks/sendgrid", "/healthz", "/", "//u/"]))
    path = prefix + "".join(draw(st.lists(_TOKEN_CHARS, max_size=6)))
    query = draw(st.sampled_from(["", "?choice=weekly", "?choice=%FF", "?%%%", "?a=" + "b" * 3000]))
    headers = draw(
        st.lists(
            st.sampled_from(
                [
                    b"Content-Length: abc",
                    b"Content-Length: -1",
                    b"Content-Length: 99999999999999999999999",
                    b"Transfer-Encoding: gzip",
                    f"{TIMESTAMP_HEADER}: {'9' * 400}".encode(),
                    f"{TIMESTAMP_HEADER}: \xb2\xb3".encode("latin-1"),
                    f"{SIGNATURE_HEADER}: ???".encode(),
                    b"Content-Type: application/json; charset=latin-1",
                    b"X-Weird: \xff\xfe",
                ]
            ),
            max_size=3,
            unique=True,
        )
    )
    body = draw(st.sampled_from([b"", b"[", b"[" * 5000, b"\xff\xfe", b"List-Unsubscribe=One-Click"]))
    head = b"%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" % (method, (path + query).encode())
    if not any(h.lower().startswith((b"content-length", b"transfer-encoding")) for h in headers):
        headers = [*headers, b"Content-Length: %d" % len(body)]
    return head + b"\r\n".join(headers) + b"\r\n\r\n" + body


@pytest.fixture(scope="module")
def configured_app(
    tmp_path_factory: pytest.TempPathFactory, keypair: tuple[bytes, str], signer: LinkSigner
) -> Iterator[RunningWebapp]:
    with run_webapp(tmp_path_factory.mktemp("landing"), keypair[1], signer) as running:
        yield running


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=malformed_request())
def test_malformed_requests_get_4xx_never_5xx(configured_app: RunningWebapp, raw: bytes) -> None:
    response = raw_exchange(configured_app, raw, timeout=5)
    status = status_of(response)
    assert status == 0 or 200 <= status < 500, response[:300]
    assert b"Traceback" not in response
