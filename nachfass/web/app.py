"""The web service: SendGrid Event Webhook receiver and the unsubscribe/objection pages.

Start it with::

    nachfass webapp --host 127.0.0.1 --port 8025 --landing DIR

A Starlette application served by uvicorn (``nachfass/core/http_server.py``: total request deadline,
bounded connections, bounded header size). It never opens DuckDB (one writer at a time is the
warehouse's rule): every effect is a file appended to the landing folder, durably, before the client gets a
2xx. The ingest assets load those files later. Secrets come from the environment only
(``SENDGRID_WEBHOOK_PUBLIC_KEY``, ``NACHFASS_LINK_SIGNING_KEY``) and are never logged. See
docs/webservice.md.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nachfass.core.http_server import Limits, ServerThread
from nachfass.core.landing_files import (
    CONSENTS_TABLE,
    SENDGRID_EVENTS_TABLE,
    write_consent_event,
    write_sendgrid_batch,
)
from nachfass.core.links import InvalidToken, LinkSigner
from nachfass.core.paths import landing_dir as default_landing_dir
from nachfass.core.shop import ShopSettings
from nachfass.web import pages

log = logging.getLogger("nachfass.webapp")

ENV_WEBHOOK_PUBLIC_KEY = "SENDGRID_WEBHOOK_PUBLIC_KEY"
ENV_LINK_SIGNING_KEY = "NACHFASS_LINK_SIGNING_KEY"

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# SendGrid documents no replay window. Its batches are signed when sent, so honest requests are seconds
# old; 10 minutes tolerates clock skew and slow networks while keeping a captured request short-lived.
DEFAULT_REPLAY_WINDOW_S = 600
# SendGrid flushes a batch at 768 KB; 5 MB leaves room without letting anyone fill memory or disk.
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
# Unsubscribe form posts carry one short field; anything larger is not a mail client.
MAX_FORM_BYTES = 16 * 1024
# Unix seconds have 10 digits until the year 2286; a longer "timestamp" is not one (and a 400-digit one
# used to overflow the float arithmetic of the replay check).
MAX_TIMESTAMP_DIGITS = 12
# Signed webhook batches being read, verified and written at once: bounds memory (this × the body limit)
# and the threads that fsync. Further batches wait briefly, then get 503 and SendGrid retries them.
MAX_BATCHES_IN_FLIGHT = 16
BATCH_SLOT_WAIT_S = 5.0
# The whole request: headers, body, verification, the durable write and the answer.
REQUEST_DEADLINE_S = 30.0
MAX_CONNECTIONS = 256

_TOKEN_IN_PATH = re.compile(r"/([uo])/[^\s\"?]+")
_SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_PAGE_HEADERS = {
    # The token is in the URL: no referrer may carry it elsewhere.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
}


def _redact(text: str) -> str:
    """Tokens carry the address (signed, not encrypted): never write them to a log."""
    return _TOKEN_IN_PATH.sub(r"/\1/<token>", text)


@dataclass(frozen=True)
class WebappConfig:
    landing_dir: Path
    verifier: EventWebhook | None
    link_signer: LinkSigner | None
    replay_window_s: int
    max_body_bytes: int
    now: Callable[[], datetime]
    shop: ShopSettings | None


def load_webhook_verifier(public_key: str) -> EventWebhook:
    """Build sendgrid-python's verifier from a base64 DER (SubjectPublicKeyInfo) P-256 key.

    A PEM block is accepted too (people paste what they have). Errors never repeat the key.
    """
    text = public_key.strip()
    if text.startswith("-----BEGIN"):
        text = "".join(line for line in text.splitlines() if not line.startswith("-----"))
    text = "".join(text.split())
    try:
        verifier = EventWebhook(text)
    except Exception:
        raise ValueError(f"{ENV_WEBHOOK_PUBLIC_KEY} is not a base64 DER public key") from None
    key = verifier.public_key
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{ENV_WEBHOOK_PUBLIC_KEY} must be an ECDSA P-256 public key")
    return verifier


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read as it streams in and abandoned as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _declared_length(request: Request) -> int | None:
    """``Content-Length`` as a number; None without one (chunked); ValueError when malformed."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ValueError("bad Content-Length")
    return int(raw)


# ---- responses ---------------------------------------------------------------------------------------


def _json(status: int, payload: dict[str, Any], close: bool = False) -> JSONResponse:
    headers = {**_SECURITY_HEADERS, **({"Connection": "close"} if close else {})}
    return JSONResponse(payload, status_code=status, headers=headers)


def _html(status: int, html: str) -> HTMLResponse:
    return HTMLResponse(html, status_code=status, headers={**_SECURITY_HEADERS, **_PAGE_HEADERS})


def _refuse(status: int, reason: str, close: bool = False) -> JSONResponse:
    log.warning("webhook refused (%d): %s", status, reason)
    return _json(status, {"error": reason}, close=close)


# ---- SendGrid Event Webhook ----------------------------------------------------------------------------


def _verify_and_store(cfg: WebappConfig, body: bytes, signature: str, timestamp: str) -> tuple[int, str, int]:
    """Signature check, parse and durable write: CPU and fsync work, run in a worker thread."""
    try:
        # The helper takes str and re-encodes as UTF-8; strict UTF-8 decode/encode is the identity, so
        # the verified bytes are exactly the bytes received.
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        return 403, "bad signature", 0
    try:
        valid = cfg.verifier.verify_signature(payload, signature, timestamp)  # type: ignore[union-attr]
    except Exception:  # malformed base64/DER signatures raise instead of returning False
        valid = False
    if not valid:
        return 403, "bad signature", 0
    try:
        events = json.loads(payload)
    except RecursionError:
        return 400, "body nested too deeply", 0
    except ValueError:
        return 400, "body is not JSON", 0
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return 400, "body is not a JSON array of event objects", 0
    if events:
        try:
            path = write_sendgrid_batch(cfg.landing_dir, events, cfg.now())
        except (ValueError, RecursionError):  # lone surrogates cannot be written as UTF-8
            return 400, "body contains text that cannot be stored (invalid Unicode)", 0
        log.info("webhook batch stored: %d events in %s", len(events), path.name)
    return 200, "stored", len(events)


async def webhook(request: Request) -> Response:
    cfg: WebappConfig = request.app.state.cfg
    # Everything that needs no body is decided first (framing, then authentication headers): an
    # unauthenticated client never gets the server to read, buffer or parse what it sends.
    try:
        declared = _declared_length(request)
    except ValueError:
        return _refuse(400, "bad Content-Length", close=True)
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if declared is None and not chunked:
        return _refuse(411, "Content-Length required", close=True)
    if declared is not None and declared > cfg.max_body_bytes:
        return _refuse(413, f"body larger than {cfg.max_body_bytes} bytes", close=True)
    if cfg.verifier is None:
        return _refuse(403, "no webhook public key configured", close=True)
    signature = request.headers.get(SIGNATURE_HEADER)
    timestamp = request.headers.get(TIMESTAMP_HEADER)
    if not signature or not timestamp:
        return _refuse(403, "missing signature headers", close=True)
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > MAX_TIMESTAMP_DIGITS:
        return _refuse(403, "malformed timestamp", close=True)
    if abs(cfg.now().timestamp() - int(timestamp)) > cfg.replay_window_s:
        return _refuse(403, "timestamp outside the replay window", close=True)
    slots: anyio.Semaphore = request.app.state.batch_slots
    try:
        with anyio.fail_after(BATCH_SLOT_WAIT_S):
            await slots.acquire()
    except TimeoutError:
        return _refuse(503, "too many batches in progress; retry later", close=True)
    try:
        try:
            body = await _read_body(request, cfg.max_body_bytes)
        except _BodyTooLarge:
            return _refuse(413, f"body larger than {cfg.max_body_bytes} bytes", close=True)
        status, reason, count = await anyio.to_thread.run_sync(
            _verify_and_store, cfg, body, signature, timestamp
        )
    finally:
        slots.release()
    if status != 200:
        return _refuse(status, reason)
    return _json(200, {"status": "stored", "events": count})


# ---- unsubscribe / objection -----------------------------------------------------------------------------


def _verify_link(cfg: WebappConfig, kind: str, token: str) -> dict[str, Any] | None:
    purpose = "unsubscribe" if kind == "u" else "objection"
    try:
        data = cfg.link_signer.verify(token, purpose, cfg.now())  # type: ignore[union-attr]
    except InvalidToken as exc:
        log.warning("%s link refused: %s", purpose, exc)
        return None
    email = data.get("email")
    if not isinstance(email, str) or "@" not in email:
        log.warning("%s link refused: token carries no address", purpose)
        return None
    return data


async def link(request: Request) -> Response:
    cfg: WebappConfig = request.app.state.cfg
    kind = request.url.path[1]
    token = request.path_params["token"]
    if request.method in ("GET", "HEAD"):
        if cfg.link_signer is None:
            return _html(503, pages.unavailable(cfg.shop))
        data = _verify_link(cfg, kind, token)
        if data is None:
            return _html(403, pages.invalid_link(cfg.shop))
        if kind == "u":
            return _html(200, pages.unsubscribe_confirm(token, data["email"], cfg.shop))
        return _html(200, pages.objection_confirm(token, data["email"], cfg.shop))
    try:
        declared = _declared_length(request)
    except ValueError:
        return _html(400, pages.invalid_link(cfg.shop))
    if declared is not None and declared > MAX_FORM_BYTES:
        return PlainTextResponse("request too large\n", status_code=413, headers=_SECURITY_HEADERS)
    # The body (RFC 8058: "List-Unsubscribe=One-Click") is read only to drain the request: any POST is a
    # deliberate act, unlike the GETs that link scanners make.
    try:
        await _read_body(request, MAX_FORM_BYTES)
    except _BodyTooLarge:
        return PlainTextResponse("request too large\n", status_code=413, headers=_SECURITY_HEADERS)
    if cfg.link_signer is None:
        return _html(503, pages.unavailable(cfg.shop))
    data = _verify_link(cfg, kind, token)
    if data is None:
        return _html(403, pages.invalid_link(cfg.shop))
    choice = request.query_params.get("choice", "")
    event = "frequency_weekly" if kind == "u" and choice == "weekly" else "withdrawn"
    customer_id = data.get("customer_id")
    _, event_id = await anyio.to_thread.run_sync(
        lambda: write_consent_event(
            cfg.landing_dir,
            email=data["email"],
            customer_id=str(customer_id) if customer_id not in (None, "") else None,
            event=event,
            occurred_at=cfg.now(),
        )
    )
    log.info(
        "consent event %s stored (%s, campaign=%s, send_id=%s)",
        event_id,
        event,
        data.get("campaign"),
        data.get("send_id"),
    )
    if event == "frequency_weekly":
        return _html(200, pages.weekly_saved(data["email"], cfg.shop))
    if kind == "o":
        return _html(200, pages.objection_saved(data["email"], cfg.shop))
    return _html(200, pages.unsubscribed(data["email"], cfg.shop))


async def healthz(request: Request) -> Response:
    cfg: WebappConfig = request.app.state.cfg
    return _json(200, {"status": "ok", "webhook_key_configured": cfg.verifier is not None})


class _Guard:
    """Outermost layer: one redacted log line per request, 404 pages, and never a stack trace to a client.

    Any exception below becomes a plain 500 page (the traceback goes to the log, with the path redacted).
    """

    def __init__(self, app: ASGIApp, config: WebappConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status: list[int] = []

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        path = _redact(scope.get("path", ""))
        try:
            await self.app(scope, receive, send_status)
        except ClientDisconnect:
            status.append(499)  # the client went away mid-request: nothing to answer
        except Exception:
            log.exception("error handling %s %s", scope.get("method"), path)
            if not status:
                response = _html(500, pages.server_error(self.config.shop))
                response.headers["Connection"] = "close"
                await response(scope, receive, send_status)
        client = scope.get("client") or ("-", 0)
        log.info("%s %s %s %s", client[0], scope.get("method"), path, status[0] if status else "-")


def create_app(config: WebappConfig) -> ASGIApp:
    async def not_found(request: Request, exc: Exception) -> Response:
        return _html(404, pages.not_found(config.shop))

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        allow = getattr(exc, "headers", {}).get("Allow", "")
        return PlainTextResponse(
            "method not allowed\n", status_code=405, headers={**_SECURITY_HEADERS, "Allow": allow}
        )

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/webhooks/sendgrid", webhook, methods=["POST"]),
            Route("/u/{token}", link, methods=["GET", "HEAD", "POST"]),
            Route("/o/{token}", link, methods=["GET", "HEAD", "POST"]),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    app.state.cfg = config
    app.state.batch_slots = anyio.Semaphore(MAX_BATCHES_IN_FLIGHT)
    return _Guard(app, config)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class WebappServer(ServerThread):
    """The service bound to its address; ``start()``/``stop()`` in a thread, or ``serve_forever()``."""

    def __init__(self, config: WebappConfig, host: str, port: int, limits: Limits) -> None:
        self.config = config
        super().__init__(create_app(config), host, port, limits)

    def serve_forever(self) -> None:
        self.run()


def make_server(
    landing_dir: Path | str,
    public_key: str | None,
    link_signer: LinkSigner | None,
    host: str = "127.0.0.1",
    port: int = 0,
    replay_window_s: int = DEFAULT_REPLAY_WINDOW_S,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    now: Callable[[], datetime] | None = None,
    shop: ShopSettings | None = None,
    request_deadline_s: float = REQUEST_DEADLINE_S,
    max_connections: int = MAX_CONNECTIONS,
) -> WebappServer:
    """Create (and bind) the server.

    ``public_key``: base64 DER P-256 key of the signed Event Webhook, or None (the webhook then refuses
    everything). ``link_signer``: verifies unsubscribe/objection tokens, or None (pages answer 503).
    ``now``: the clock (aware UTC datetime) for the replay window, token expiry and file names.
    """
    verifier = load_webhook_verifier(public_key) if public_key and public_key.strip() else None
    if verifier is None:
        log.warning(
            "%s is not set: the SendGrid webhook endpoint refuses every request (403)", ENV_WEBHOOK_PUBLIC_KEY
        )
    if link_signer is None:
        log.warning("%s is not set: unsubscribe and objection links answer 503", ENV_LINK_SIGNING_KEY)
    landing = Path(landing_dir).resolve()
    for table in (SENDGRID_EVENTS_TABLE, CONSENTS_TABLE):
        (landing / table).mkdir(parents=True, exist_ok=True)
    config = WebappConfig(
        landing_dir=landing,
        verifier=verifier,
        link_signer=link_signer,
        replay_window_s=int(replay_window_s),
        max_body_bytes=int(max_body_bytes),
        now=now or _utcnow,
        shop=shop,
    )
    limits = Limits(request_deadline_s=request_deadline_s, limit_concurrency=max_connections)
    return WebappServer(config, host, port, limits)


@dataclass(frozen=True)
class RunningWebapp:
    server: WebappServer
    url: str
    landing_dir: Path


@contextmanager
def run_webapp(
    landing_dir: Path | str,
    public_key: str | None = None,
    link_signer: LinkSigner | None = None,
    **kwargs: Any,
) -> Iterator[RunningWebapp]:
    """Run the service in a background thread for the duration of the ``with`` block (tests, demo)."""
    server = make_server(landing_dir, public_key, link_signer, **kwargs)
    server.start("nachfass-webapp")
    try:
        yield RunningWebapp(server=server, url=server.url, landing_dir=server.config.landing_dir)
    finally:
        server.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 8025,
    *,
    landing: Path | None = None,
    replay_window: int = DEFAULT_REPLAY_WINDOW_S,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    request_deadline: float = REQUEST_DEADLINE_S,
    max_connections: int = MAX_CONNECTIONS,
    shop_config: Path | None = None,
    log_level: str = "INFO",
) -> int:
    """Serve until SIGINT/SIGTERM (`nachfass webapp`); 2 when the settings are unusable."""
    args = SimpleNamespace(**locals())
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    try:
        signing_key = os.environ.get(ENV_LINK_SIGNING_KEY) or None
        signer = LinkSigner(signing_key) if signing_key else None
        shop: ShopSettings | None
        try:
            from nachfass.core.shop import load_shop_settings

            shop = load_shop_settings(args.shop_config)
        except Exception as exc:  # the pages still work, only without contact details and Impressum
            log.warning("shop settings not loaded (%s); pages show no contact details", exc)
            shop = None
        server = make_server(
            args.landing or default_landing_dir(),
            os.environ.get(ENV_WEBHOOK_PUBLIC_KEY),
            signer,
            host=args.host,
            port=args.port,
            replay_window_s=args.replay_window,
            max_body_bytes=args.max_body_bytes,
            shop=shop,
            request_deadline_s=args.request_deadline,
            max_connections=args.max_connections,
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    log.info("listening on %s, landing folder %s", server.url, server.config.landing_dir)
    # uvicorn handles SIGINT/SIGTERM: it stops accepting and lets requests in progress finish, so a batch
    # is never cut between "stored" and "answered".
    server.serve_forever()
    log.info("stopped")
    return 0
