"""A local SendGrid-compatible Mail Send API for tests, demos and benchmarks (Starlette + uvicorn).

    nachfass sandbox --port 3030 [--api-key KEY] [--latency-ms 50]
        [--latency-jitter-ms 0] [--fail-rate-429 0.1] [--fail-rate-500 0.1] [--drop-rate 0.05]
        [--drop-after-accept-rate 0.05] [--timeout-rate 0.01] [--timeout-s 5] [--rate-limit-per-s N]
        [--store DIR]

``POST /v3/mail/send`` answers like the real API: 202 + ``X-Message-Id``; 200 in sandbox mode (not stored);
400 ``{"errors": [{"message", "field", "help"}]}`` for the rules in docs/spec/sendgrid.md; 401 for a
missing or wrong ``Authorization: Bearer``; 413 above 30 MB; 429 with ``X-RateLimit-*`` headers.

``POST /v3/recipients/erasejob`` (Recipients' Data Erasure API) answers 202 ``{"job_id": "<uuid>"}`` for
``{"email_addresses": [...]}`` with 1 to 5,000 valid addresses (at most 256 KB); 400 ``{"errors": [{"message",
"field"}]}`` otherwise; 401 like mail/send. Accepted requests are kept (``GET /_sandbox/erasejobs``).

Sandbox endpoints (contract used by ``event_simulator.py``):
    GET    /_sandbox/messages   JSON list of {message_id, received_at (ISO 8601 UTC), payload}
    DELETE /_sandbox/messages   forget them
    GET    /_sandbox/faults     current fault settings;  POST /_sandbox/faults  JSON object, merged in
    GET    /_sandbox/stats      counters (requests, accepted, by status, drops, max in flight, ...)
    GET    /_sandbox/erasejobs  JSON list of {job_id, received_at, email_addresses} (accepted erase jobs)

Fault injection (each request draws independently, in this order):
    drop_rate               close the socket without an answer, mail NOT stored ("drop before accept")
    fail_rate_429           429 with X-RateLimit-Limit/Remaining/Reset (reset = next full second)
    fail_rate_500           500 with an error body
    drop_after_accept_rate  store the mail, then close without an answer (the ambiguous case)
    timeout_rate            store the mail, sleep ``timeout_s`` (longer than the client timeout), close
    latency_ms (+ uniform latency_jitter_ms) is added to every request; rate_limit_per_s is a real
    fixed-window limit per second.
Clients cannot tell a drop before accept from one after accept: both must be recorded as ``unknown``.

Served like the web service (``nachfass/core/http_server.py``): asyncio, a total deadline per request
(120 s, longer than any injected timeout), bounded connections. Every malformed request gets a 4xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from nachfass.core.http_server import ABORT_EXTENSION, Limits, ServerThread

MAX_BODY_BYTES = 30 * 1024 * 1024
MAX_ERASE_ADDRESSES = 5000
MAX_ERASE_BODY_BYTES = 256 * 1024
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_CATEGORIES = 10
MAX_CATEGORY_LEN = 255
MAX_SEND_AT_AHEAD_S = 72 * 3600
# SendGrid's own, looser address check (this server stands in for SendGrid, so it keeps SendGrid's rule,
# not the project's stricter one in nachfass/core/addresses.py, which runs before a request is made).
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "Content-Type",
        "Content-Transfer-Encoding",
        "To",
        "From",
        "Subject",
        "Reply-To",
        "CC",
        "BCC",
    )
)


@dataclass
class Faults:
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    fail_rate_429: float = 0.0
    fail_rate_500: float = 0.0
    drop_rate: float = 0.0  # drop before accept
    drop_after_accept_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_s: float = 5.0
    rate_limit_per_s: int = 0  # 0 = unlimited

    def update(self, **changes: Any) -> None:
        names = {f.name: f.type for f in fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise ValueError(f"unknown fault {key!r} (known: {', '.join(sorted(names))})")
            setattr(self, key, type(getattr(self, key))(value))


class ValidationError(Exception):
    def __init__(self, message: str, field: str | None = None, help: str | None = None):
        super().__init__(message)
        self.message, self.field, self.help = message, field, help


def _check_address(obj: Any, field: str) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get("email"), str) or not _EMAIL.match(obj["email"]):
        raise ValidationError("Does not contain a valid address.", f"{field}.email")
    if "name" in obj and not isinstance(obj["name"], str):
        raise ValidationError("The name must be a string.", f"{field}.name")
    return obj["email"].lower()


def _check_custom_args(args: Any, field: str) -> int:
    if not isinstance(args, dict):
        raise ValidationError("Custom args must be an object of strings.", field)
    size = 0
    for key, value in args.items():
        if not isinstance(value, str):
            raise ValidationError("Custom arg values must be of type string.", f"{field}.{key}")
        size += len(key.encode()) + len(value.encode())
    return size


def _check_headers(headers: Any, field: str) -> None:
    if not isinstance(headers, dict):
        raise ValidationError("The headers must be an object.", field)
    for name, value in headers.items():
        if name.lower() in RESERVED_HEADERS:
            raise ValidationError(f"The header {name} is reserved and cannot be set.", f"{field}.{name}")
        if not isinstance(value, str):
            raise ValidationError("Header values must be strings.", f"{field}.{name}")


def validate(payload: Any, now: float | None = None) -> None:
    """Raise ValidationError for the first violated rule of docs/spec/sendgrid.md."""
    now = time.time() if now is None else now
    if not isinstance(payload, dict):
        raise ValidationError("The request body must be a JSON object.")
    pers = payload.get("personalizations")
    if not isinstance(pers, list) or not pers:
        raise ValidationError(
            "The personalizations field is required and must have at least one personalization.",
            "personalizations",
        )
    if len(pers) > MAX_PERSONALIZATIONS:
        raise ValidationError(
            "You may not have more than 1000 personalizations per API request.", "personalizations"
        )
    template = payload.get("template_id")
    recipients = 0
    args_size = 0
    for i, p in enumerate(pers):
        f = f"personalizations.{i}"
        if not isinstance(p, dict):
            raise ValidationError("Each personalization must be an object.", f)
        to = p.get("to")
        if not isinstance(to, list) or not to:
            raise ValidationError(
                "The to array is required for all personalization objects, and must have "
                "at least one email object with a valid email address.",
                f"{f}.to",
            )
        seen: set[str] = set()
        for kind in ("to", "cc", "bcc"):
            lst = p.get(kind, [])
            if not isinstance(lst, list):
                raise ValidationError(f"The {kind} field must be an array.", f"{f}.{kind}")
            for j, addr in enumerate(lst):
                email = _check_address(addr, f"{f}.{kind}.{j}")
                if email in seen:
                    raise ValidationError(
                        "Each email address in the personalization block should be unique "
                        "between to, cc, and bcc.",
                        f"{f}.{kind}.{j}.email",
                    )
                seen.add(email)
                recipients += 1
        if "headers" in p:
            _check_headers(p["headers"], f"{f}.headers")
        if "custom_args" in p:
            args_size += _check_custom_args(p["custom_args"], f"{f}.custom_args")
        if "subject" in p and (not isinstance(p["subject"], str) or not p["subject"]):
            raise ValidationError("The subject must be a non-empty string.", f"{f}.subject")
        if "send_at" in p:
            _check_send_at(p["send_at"], now, f"{f}.send_at")
    if recipients > MAX_RECIPIENTS:
        raise ValidationError("The total number of recipients must be 1000 or less.", "personalizations")
    _check_address(payload.get("from"), "from")
    if "reply_to" in payload:
        _check_address(payload["reply_to"], "reply_to")
    subject = payload.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject):
        raise ValidationError("The subject must be a non-empty string.", "subject")
    if not template and not subject and not all(p.get("subject") for p in pers):
        raise ValidationError(
            "The subject is required. You can get around this requirement if you use a "
            "template with a subject defined or if every personalization has a subject "
            "defined.",
            "subject",
        )
    content = payload.get("content")
    if content is None and not template:
        raise ValidationError(
            "Unless a valid template_id is provided, the content parameter is required.", "content"
        )
    if content is not None:
        if not isinstance(content, list) or not content:
            raise ValidationError("The content must be a non-empty array.", "content")
        for i, c in enumerate(content):
            if not isinstance(c, dict) or not isinstance(c.get("type"), str) or not c["type"]:
                raise ValidationError("The content type is required.", f"content.{i}.type")
            if not isinstance(c.get("value"), str) or not c["value"]:
                raise ValidationError(
                    "The content value must be a string at least one character in length.",
                    f"content.{i}.value",
                )
        types = [c["type"] for c in content]
        if "text/plain" in types and types[0] != "text/plain":
            raise ValidationError("If present, text/plain content must be first.", "content.0.type")
    if "headers" in payload:
        _check_headers(payload["headers"], "headers")
    if "custom_args" in payload:
        args_size += _check_custom_args(payload["custom_args"], "custom_args")
    if args_size > MAX_CUSTOM_ARGS_BYTES:
        raise ValidationError("The custom_args may not exceed 10,000 bytes.", "custom_args")
    cats = payload.get("categories")
    if cats is not None:
        if not isinstance(cats, list) or len(cats) > MAX_CATEGORIES:
            raise ValidationError("You may not have more than 10 categories per request.", "categories")
        for i, cat in enumerate(cats):
            if not isinstance(cat, str) or not cat or len(cat) > MAX_CATEGORY_LEN:
                raise ValidationError("A category cannot have more than 255 characters.", f"categories.{i}")
    if "send_at" in payload:
        _check_send_at(payload["send_at"], now, "send_at")


def _check_send_at(value: Any, now: float, field: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError("send_at must be a unix timestamp (integer).", field)
    if value > now + MAX_SEND_AT_AHEAD_S:
        raise ValidationError("The send_at parameter cannot be more than 72 hours in the future.", field)


def _errors(message: str, field: str | None = None, help: str | None = None) -> bytes:
    return json.dumps({"errors": [{"message": message, "field": field, "help": help}]}).encode()


def _erase_error(message: str, field: str) -> bytes:
    # The Recipients' Data Erasure API's error shape: {"errors": [{"message", "field"}]}
    return json.dumps({"errors": [{"message": message, "field": field}]}).encode()


def _json_response(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Response:
    return Response(
        body, status_code=status, headers=headers, media_type="application/json" if body else None
    )


class DropConnection(Response):
    """Close the connection without any answer: what a client sees when the network or SendGrid fails."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["extensions"][ABORT_EXTENSION]()
        # Let the event loop register the closed connection, so the server does not try to answer anyway.
        await asyncio.sleep(0)
        await asyncio.sleep(0)


class _TooLarge(Exception):
    pass


class SandboxState:
    """Everything the server remembers: accepted mails, erase jobs, counters and the fault settings."""

    def __init__(
        self, *, api_key: str | None = None, store: Path | None = None, faults: Faults | None = None
    ) -> None:
        self.api_key = api_key
        self.faults = faults or Faults()
        self._messages: list[dict[str, Any]] = []
        self._erasejobs: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._inflight = 0
        self._max_inflight = 0
        self._window = (0, 0)  # (second, count) for rate_limit_per_s
        self._store_file = None
        if store is not None:
            store = Path(store)
            store.mkdir(parents=True, exist_ok=True)
            self._store_file = (store / "messages.ndjson").open("a", encoding="utf-8")

    def faults_update(self, **changes: Any) -> None:
        with self._lock:
            self.faults.update(**changes)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counters[key] += n

    def enter(self) -> None:
        with self._lock:
            self._inflight += 1
            self._max_inflight = max(self._max_inflight, self._inflight)

    def leave(self) -> None:
        with self._lock:
            self._inflight -= 1

    def rate_limited(self) -> tuple[int, int] | None:
        limit = self.faults.rate_limit_per_s
        if limit <= 0:
            return None
        now = int(time.time())
        with self._lock:
            second, n = self._window
            if second != now:
                second, n = now, 0
            n += 1
            self._window = (second, n)
        return (limit, now + 1) if n > limit else None

    def store(self, message_id: str, payload: dict[str, Any]) -> None:
        record = {"message_id": message_id, "received_at": datetime.now(UTC).isoformat(), "payload": payload}
        with self._lock:
            self._messages.append(record)
            self._counters["accepted"] += 1
            if self._store_file is not None:
                self._store_file.write(json.dumps(record, ensure_ascii=False) + "\n")
                self._store_file.flush()

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._messages)

    def store_erasejob(self, job_id: str, addresses: list[str]) -> None:
        received_at = datetime.now(UTC).isoformat()
        record = {"job_id": job_id, "received_at": received_at, "email_addresses": addresses}
        with self._lock:
            self._erasejobs.append(record)
            self._counters["erasejobs"] += 1

    def erasejobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._erasejobs)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self._counters,
                "stored": len(self._messages),
                "inflight": self._inflight,
                "max_inflight": self._max_inflight,
            }

    def close(self) -> None:
        if self._store_file is not None:
            self._store_file.close()
            self._store_file = None


def _state(request: Request) -> SandboxState:
    return request.app.state.sandbox


def _reply(
    request: Request, status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> Response:
    _state(request).count(f"status_{status}")
    return _json_response(status, body, headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body; past ``limit`` the rest is read and discarded (a client that is still sending would see a
    connection reset instead of the 413), then ``_TooLarge`` is raised."""
    chunks: list[bytes] = []
    size = 0
    too_large = False
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            too_large = True
            chunks.clear()
        elif not too_large:
            chunks.append(chunk)
    if too_large:
        raise _TooLarge
    return b"".join(chunks)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _authorized(request: Request) -> Response | None:
    """Bearer key check shared by all API routes: None when fine, else the 401 answer."""
    auth = request.headers.get("authorization", "")
    expected = _state(request).api_key
    token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
    if not token or (expected is not None and not secrets.compare_digest(token.encode(), expected.encode())):
        return _reply(
            request,
            401,
            _errors("The provided authorization grant is invalid, expired, or revoked", None, None),
        )
    return None


async def mail_send(request: Request) -> Response:
    srv = _state(request)
    srv.enter()
    try:
        return await _mail_send(request, srv)
    finally:
        srv.leave()


async def _mail_send(request: Request, srv: SandboxState) -> Response:
    faults = srv.faults
    srv.count("requests")
    try:
        body = await _read_body(request, MAX_BODY_BYTES)  # read first: answering before reading causes resets
    except _TooLarge:
        return _reply(
            request,
            413,
            _errors(
                "The JSON payload you have included in your request is too large.",
                None,
                "https://docs.sendgrid.com/api-reference/mail-send/limitations",
            ),
        )
    except ClientDisconnect:  # the client went away mid-request (e.g. killed): nothing to answer
        srv.count("incomplete")
        return DropConnection()
    if (refusal := _authorized(request)) is not None:
        return refusal
    delay = faults.latency_ms + random.uniform(0, faults.latency_jitter_ms)
    if delay > 0:
        await asyncio.sleep(delay / 1000)
    rnd = random.random
    if rnd() < faults.drop_rate:
        srv.count("dropped")
        return DropConnection()
    limited = srv.rate_limited()
    if limited is not None or rnd() < faults.fail_rate_429:
        limit, reset = limited or (max(faults.rate_limit_per_s, 600), int(time.time()) + 1)
        return _reply(
            request,
            429,
            _errors("too many requests"),
            {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
        )
    if rnd() < faults.fail_rate_500:
        return _reply(request, 500, _errors("Internal server error (injected fault)"))
    try:
        payload = _parse_json(body)
    except ValueError:
        return _reply(
            request,
            400,
            _errors(
                "The request body must be valid JSON.",
                None,
                "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html",
            ),
        )
    try:
        validate(payload)
    except ValidationError as exc:
        srv.count("invalid")
        return _reply(request, 400, _errors(exc.message, exc.field, exc.help))
    message_id = secrets.token_urlsafe(16)[:22]
    sandbox = bool(((payload.get("mail_settings") or {}).get("sandbox_mode") or {}).get("enable"))
    if sandbox:
        srv.count("sandbox_mode")
        return _reply(request, 200, b"", {"X-Message-Id": message_id})
    srv.store(message_id, payload)
    if rnd() < faults.drop_after_accept_rate:
        srv.count("dropped")
        srv.count("dropped_after_accept")
        return DropConnection()
    if rnd() < faults.timeout_rate:
        srv.count("timeouts")
        await asyncio.sleep(faults.timeout_s)
        return DropConnection()
    return _reply(request, 202, b"", {"X-Message-Id": message_id})


async def erasejob(request: Request) -> Response:
    """POST /v3/recipients/erasejob: 202 {"job_id"} for 1..5000 valid, unique addresses (max 256 KB)."""
    try:
        body = await _read_body(request, MAX_BODY_BYTES)
    except _TooLarge:
        return _reply(request, 413, _errors("The request payload is too large."))
    if (refusal := _authorized(request)) is not None:
        return refusal
    field = "email_addresses"
    if len(body) > MAX_ERASE_BODY_BYTES:
        return _reply(request, 400, _erase_error("The request payload exceeds 256Kb.", field))
    try:
        data = _parse_json(body)
    except ValueError:
        return _reply(request, 400, _erase_error("The request body must be valid JSON.", ""))
    addresses = data.get(field) if isinstance(data, dict) else None
    if not isinstance(addresses, list) or not addresses:
        return _reply(request, 400, _erase_error("email_addresses is required and must not be empty.", field))
    if len(addresses) > MAX_ERASE_ADDRESSES:
        return _reply(
            request,
            400,
            _erase_error(f"A maximum of {MAX_ERASE_ADDRESSES} email_addresses is allowed.", field),
        )
    for address in addresses:
        if not isinstance(address, str) or not _EMAIL.match(address):
            return _reply(request, 400, _erase_error(f"Email_address {address} is not valid", field))
    job_id = str(uuid.uuid4())
    _state(request).store_erasejob(job_id, list(dict.fromkeys(addresses)))
    return _reply(request, 202, json.dumps({"job_id": job_id}).encode())


async def sandbox_messages(request: Request) -> Response:
    srv = _state(request)
    if request.method == "DELETE":
        srv.clear()
        return _reply(request, 204)
    return _reply(request, 200, json.dumps(srv.messages()).encode())


async def sandbox_faults(request: Request) -> Response:
    srv = _state(request)
    if request.method == "POST":
        try:
            changes = _parse_json(await _read_body(request, 64 * 1024) or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("a JSON object of fault settings is required")
            srv.faults_update(**changes)
        except _TooLarge:
            return _reply(request, 413, _errors("too large"))
        except (ValueError, TypeError) as exc:
            return _reply(request, 400, _errors(str(exc)))
    return _reply(request, 200, json.dumps(asdict(srv.faults)).encode())


async def sandbox_stats(request: Request) -> Response:
    return _reply(request, 200, json.dumps(_state(request).stats()).encode())


async def sandbox_erasejobs(request: Request) -> Response:
    return _reply(request, 200, json.dumps(_state(request).erasejobs()).encode())


def create_app(state: SandboxState) -> Starlette:
    async def not_found(request: Request, exc: Exception) -> Response:
        return _reply(request, 404, _errors("Not found"))

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return _reply(
            request,
            405,
            _errors("Method not allowed"),
            {"Allow": getattr(exc, "headers", {}).get("Allow", "")},
        )

    app = Starlette(
        routes=[
            Route("/v3/mail/send", mail_send, methods=["POST"]),
            Route("/v3/recipients/erasejob", erasejob, methods=["POST"]),
            Route("/_sandbox/messages", sandbox_messages, methods=["GET", "DELETE"]),
            Route("/_sandbox/faults", sandbox_faults, methods=["GET", "POST"]),
            Route("/_sandbox/stats", sandbox_stats, methods=["GET"]),
            Route("/_sandbox/erasejobs", sandbox_erasejobs, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    app.state.sandbox = state
    return app


# Injected timeouts sleep up to ``timeout_s`` inside a request: the deadline must leave room for them.
SANDBOX_LIMITS = Limits(
    request_deadline_s=120.0, keep_alive_s=30, limit_concurrency=2048, graceful_shutdown_s=5
)


@dataclass
class SandboxHandle:
    server: SandboxState
    url: str  # e.g. http://127.0.0.1:40123 -- pass as the SendGrid host
    port: int

    def messages(self) -> list[dict[str, Any]]:
        return self.server.messages()

    def erasejobs(self) -> list[dict[str, Any]]:
        """Accepted POST /v3/recipients/erasejob requests: {job_id, received_at, email_addresses}."""
        return self.server.erasejobs()

    def clear(self) -> None:
        self.server.clear()

    def set_faults(self, **changes: Any) -> None:
        self.server.faults_update(**changes)

    def stats(self) -> dict[str, Any]:
        return self.server.stats()


@contextlib.contextmanager
def run_sandbox(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    api_key: str | None = None,
    store: Path | None = None,
    **faults: Any,
) -> Iterator[SandboxHandle]:
    """Run the server in a background thread for the duration of the block (port 0 = a free port)."""
    f = Faults()
    f.update(**faults)
    state = SandboxState(api_key=api_key, store=store, faults=f)
    server = ServerThread(create_app(state), host, port, SANDBOX_LIMITS)
    server.start("sendgrid-sandbox")
    try:
        yield SandboxHandle(state, server.url, server.port)
    finally:
        server.stop()
        state.close()


def serve(
    host: str = "127.0.0.1",
    port: int = 3030,
    *,
    api_key: str | None = None,
    store: Path | None = None,
    faults: Faults | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (`nachfass sandbox`)."""
    state = SandboxState(api_key=api_key, store=store, faults=faults or Faults())
    server = ServerThread(create_app(state), host, port, SANDBOX_LIMITS)
    print(f"SendGrid sandbox listening on {server.url} (set SENDGRID_API_HOST to this URL)", flush=True)
    try:
        server.run()  # until SIGINT/SIGTERM
    finally:
        state.close()
