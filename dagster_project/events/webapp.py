"""The web service: SendGrid Event Webhook receiver and the unsubscribe/objection pages.

Start it with::

    python -m dagster_project.events.webapp --host 127.0.0.1 --port 8025 --landing DIR

It never opens DuckDB (one writer at a time is the warehouse's rule): every effect is a file appended to
the landing folder, durably, before the client gets a 2xx. The ingest assets load those files later.
Secrets come from the environment only (``SENDGRID_WEBHOOK_PUBLIC_KEY``, ``NACHFASS_LINK_SIGNING_KEY``)
and are never logged. See docs/webservice.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook

from dagster_project.events import pages
from dagster_project.events.storage import (
    CONSENTS_TABLE,
    SENDGRID_EVENTS_TABLE,
    write_consent_event,
    write_sendgrid_batch,
)
from dagster_project.links import InvalidToken, LinkSigner
from dagster_project.paths import landing_dir as default_landing_dir
from dagster_project.shop import ShopSettings

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
# A slow client may hold a thread at most this long (keeps slow-loris from exhausting threads).
REQUEST_TIMEOUT_S = 30

_TOKEN_IN_PATH = re.compile(r"/([uo])/[^\s\"?]+")


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


class WebappServer(ThreadingHTTPServer):
    # Non-daemon handler threads + block_on_close: server_close() waits for in-flight writes, so a stop
    # never cuts a batch between "stored" and "answered".
    daemon_threads = False
    block_on_close = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], config: WebappConfig) -> None:
        self.config = config
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unhandled error while serving a request")


class _Handler(BaseHTTPRequestHandler):
    server: WebappServer
    server_version = "nachfass-webapp"
    timeout = REQUEST_TIMEOUT_S

    def version_string(self) -> str:
        return self.server_version  # do not advertise the Python version

    # ---- logging without secrets -------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.info("%s %s", self.address_string(), _redact(format % args))

    # ---- dispatch ----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_HEAD(self) -> None:  # noqa: N802
        # Link scanners send HEAD; answer without effects and without a body.
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method)
        except TimeoutError:
            self.close_connection = True
        except Exception:
            # No stack trace to the client; the log has it (paths redacted, no request data).
            log.exception("error handling %s %s", method, _redact(urlsplit(self.path).path))
            self.close_connection = True
            with suppress(Exception):
                self._html(500, pages.server_error(self.server.config.shop))

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        if path == "/healthz":
            if method in ("GET", "HEAD"):
                return self._json(
                    200, {"status": "ok", "webhook_key_configured": self._cfg.verifier is not None}
                )
            return self._method_not_allowed("GET, HEAD")
        if path == "/webhooks/sendgrid":
            if method == "POST":
                return self._webhook()
            return self._method_not_allowed("POST")
        match = re.fullmatch(r"/([uo])/([^/]+)", path)
        if match:
            kind, token = match.group(1), unquote(match.group(2))
            choice = (parse_qs(parts.query).get("choice") or [""])[0]
            if method in ("GET", "HEAD"):
                return self._link_page(kind, token)
            return self._link_action(kind, token, choice)
        return self._html(404, pages.not_found(self._cfg.shop))

    @property
    def _cfg(self) -> WebappConfig:
        return self.server.config

    # ---- responses ---------------------------------------------------------------------------------
    def _send(self, status: int, content_type: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, "application/json", json.dumps(payload).encode("utf-8"))

    def _html(self, status: int, html: str) -> None:
        self._send(
            status,
            "text/html; charset=utf-8",
            html.encode("utf-8"),
            {
                # The token is in the URL: no referrer may carry it elsewhere.
                "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY",
                "Content-Security-Policy": (
                    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                    "frame-ancestors 'none'; base-uri 'none'"
                ),
            },
        )

    def _method_not_allowed(self, allow: str) -> None:
        self._send(405, "text/plain; charset=utf-8", b"method not allowed\n", {"Allow": allow})

    # ---- request bodies ----------------------------------------------------------------------------
    def _content_length(self) -> int | None:
        """The declared body size; None if absent. Raises ValueError if malformed."""
        if self.headers.get("Transfer-Encoding"):
            raise ValueError("chunked bodies are not supported")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        value = int(raw.strip())
        if value < 0:
            raise ValueError("negative Content-Length")
        return value

    def _read_exactly(self, length: int) -> bytes | None:
        data = self.rfile.read(length) if length else b""
        return data if len(data) == length else None

    # ---- SendGrid Event Webhook --------------------------------------------------------------------
    def _refuse(self, status: int, reason: str) -> None:
        log.warning("webhook refused (%d): %s", status, reason)
        self._json(status, {"error": reason})

    def _webhook(self) -> None:
        cfg = self._cfg
        try:
            length = self._content_length()
        except ValueError:
            self.close_connection = True
            return self._refuse(400, "bad Content-Length")
        if length is None:
            self.close_connection = True
            return self._refuse(411, "Content-Length required")
        if length > cfg.max_body_bytes:
            # Decided on the header alone: the body is never read, so it cannot fill memory.
            self.close_connection = True
            return self._refuse(413, f"body larger than {cfg.max_body_bytes} bytes")
        body = self._read_exactly(length)
        if body is None:
            self.close_connection = True
            return self._refuse(400, "body shorter than Content-Length")
        if cfg.verifier is None:
            return self._refuse(403, "no webhook public key configured")
        signature = self.headers.get(SIGNATURE_HEADER)
        timestamp = self.headers.get(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            return self._refuse(403, "missing signature headers")
        if not timestamp.isascii() or not timestamp.isdigit():
            return self._refuse(403, "malformed timestamp")
        skew = cfg.now().timestamp() - int(timestamp)
        if abs(skew) > cfg.replay_window_s:
            return self._refuse(403, "timestamp outside the replay window")
        try:
            # The helper takes str and re-encodes as UTF-8; strict UTF-8 decode/encode is the identity,
            # so the verified bytes are exactly the bytes received.
            payload = body.decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse(403, "bad signature")
        try:
            valid = cfg.verifier.verify_signature(payload, signature, timestamp)
        except Exception:  # malformed base64/DER signatures raise instead of returning False
            valid = False
        if not valid:
            return self._refuse(403, "bad signature")
        try:
            events = json.loads(payload)
        except ValueError:
            return self._refuse(400, "body is not JSON")
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            return self._refuse(400, "body is not a JSON array of event objects")
        if events:
            path = write_sendgrid_batch(cfg.landing_dir, events, cfg.now())
            log.info("webhook batch stored: %d events in %s", len(events), path.name)
        self._json(200, {"status": "stored", "events": len(events)})

    # ---- unsubscribe / objection -------------------------------------------------------------------
    def _verify_link(self, kind: str, token: str) -> dict[str, Any] | None:
        cfg = self._cfg
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

    def _link_page(self, kind: str, token: str) -> None:
        shop = self._cfg.shop
        if self._cfg.link_signer is None:
            return self._html(503, pages.unavailable(shop))
        data = self._verify_link(kind, token)
        if data is None:
            return self._html(403, pages.invalid_link(shop))
        if kind == "u":
            return self._html(200, pages.unsubscribe_confirm(token, data["email"], shop))
        return self._html(200, pages.objection_confirm(token, data["email"], shop))

    def _link_action(self, kind: str, token: str, choice: str) -> None:
        cfg = self._cfg
        try:
            length = self._content_length() or 0
        except ValueError:
            self.close_connection = True
            return self._html(400, pages.invalid_link(cfg.shop))
        if length > MAX_FORM_BYTES:
            self.close_connection = True
            return self._send(413, "text/plain; charset=utf-8", b"request too large\n")
        # The body (RFC 8058: "List-Unsubscribe=One-Click") is read only to drain the request: any POST is
        # a deliberate act, unlike the GETs that link scanners make.
        if self._read_exactly(length) is None:
            self.close_connection = True
            return self._html(400, pages.invalid_link(cfg.shop))
        if cfg.link_signer is None:
            return self._html(503, pages.unavailable(cfg.shop))
        data = self._verify_link(kind, token)
        if data is None:
            return self._html(403, pages.invalid_link(cfg.shop))
        event = "frequency_weekly" if kind == "u" and choice == "weekly" else "withdrawn"
        customer_id = data.get("customer_id")
        _, event_id = write_consent_event(
            cfg.landing_dir,
            email=data["email"],
            customer_id=str(customer_id) if customer_id not in (None, "") else None,
            event=event,
            occurred_at=cfg.now(),
        )
        log.info(
            "consent event %s stored (%s, campaign=%s, send_id=%s)",
            event_id,
            event,
            data.get("campaign"),
            data.get("send_id"),
        )
        if event == "frequency_weekly":
            return self._html(200, pages.weekly_saved(data["email"], cfg.shop))
        if kind == "o":
            return self._html(200, pages.objection_saved(data["email"], cfg.shop))
        return self._html(200, pages.unsubscribed(data["email"], cfg.shop))


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
) -> WebappServer:
    """Create (and bind) the server; call ``serve_forever()`` / ``shutdown()`` / ``server_close()``.

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
    return WebappServer((host, port), config)


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
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="nachfass-webapp", daemon=True
    )
    thread.start()
    try:
        yield RunningWebapp(server=server, url=server.url, landing_dir=server.config.landing_dir)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dagster_project.events.webapp",
        description="SendGrid Event Webhook receiver and unsubscribe pages (writes to the landing folder).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument(
        "--landing", type=Path, default=None, help="landing folder (default: NACHFASS_LANDING)"
    )
    parser.add_argument("--replay-window", type=int, default=DEFAULT_REPLAY_WINDOW_S, help="seconds")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--shop-config", type=Path, default=None, help="default: config/shop.yaml")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    try:
        signing_key = os.environ.get(ENV_LINK_SIGNING_KEY) or None
        signer = LinkSigner(signing_key) if signing_key else None
        shop: ShopSettings | None
        try:
            from dagster_project.shop import load_shop_settings

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
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _raise_interrupt)
    log.info("listening on %s, landing folder %s", server.url, server.config.landing_dir)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        server.server_close()  # waits for in-flight requests (block_on_close)
    return 0


if __name__ == "__main__":
    sys.exit(main())
