"""Transports: where a rendered mail goes. SendGrid (v3 Mail Send) or a local outbox folder.

Outcome classification (the heart of "at most once", see docs/sending.md):

* certainly **not accepted** -> safe to retry: HTTP 429 (wait for ``X-RateLimit-Reset``), 500/503 and other
  5xx except 502/504 (explicit error answers), and connection errors raised *before the whole request was
  handed to the socket* (connection refused, DNS failure, connect timeout, reset while sending the body:
  SendGrid cannot act on a body it did not fully receive).
* **accepted** -> ``sent``: any 2xx (202, or 200 in sandbox mode), with ``X-Message-Id``.
* **refused** -> ``failed`` for this mail only: 400, 413 and other 4xx, 5xx retries exhausted.
* **ambiguous** -> ``unknown``, never resent: no (complete) answer after the request was sent (read
  timeout, connection closed or reset before the status line), 502/504 (a gateway gave up on a backend that
  may have accepted the mail).
* **abort the run**: 401/403 raise ``SendGridAuthError``; connection errors or 429s that outlast the retry
  budget raise ``SendGridUnavailableError``. Both mean "this request was certainly not accepted", so the
  sender may release the claim.

The HTTP call: by default one persistent ``http.client`` connection per worker thread (keep-alive), with
the headers, host and data-residency handling of the official ``sendgrid.SendGridAPIClient``. urllib (used
by sendgrid-python/python_http_client) opens a new TCP+TLS connection per request, which at 100k mails is
the dominant cost. ``connection_reuse=False`` sends through ``SendGridAPIClient.send()`` itself instead;
both paths share the same classification.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import select
import ssl
import threading
import time
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import python_http_client.exceptions
import sendgrid

from nachfass.core.mail.eml import eml_head, payload_to_eml
from nachfass.core.mail.message import RenderedMail, SendResult
from nachfass.core.mail.sendgrid_payload import PayloadError, build_payload, payload_body
from nachfass.core.shop import ShopSettings

DEFAULT_HOST = "https://api.sendgrid.com"
EU_HOST = "https://api.eu.sendgrid.com"
MAIL_SEND_PATH = "/v3/mail/send"
MAX_BODY_BYTES = 30 * 1024 * 1024
ENV_API_KEY = "SENDGRID_API_KEY"
ENV_API_HOST = "SENDGRID_API_HOST"

Classification = Literal["sent", "failed", "retry", "rate_limited", "auth", "unknown"]


@dataclass(frozen=True)
class TransportResult(SendResult):
    """A ``SendResult`` that also says how many HTTP requests it took (stored in ``mail.sends.attempts``)."""

    attempts: int = 1


class SendAbortError(RuntimeError):
    """Stop the run: the request that raised this was certainly not accepted by SendGrid."""


class SendGridAuthError(SendAbortError):
    """SendGrid refused the API key (401/403). The message names the setting, never the key."""


class SendGridUnavailableError(SendAbortError):
    """SendGrid could not be reached (or kept rate limiting) for longer than the retry budget."""


@runtime_checkable
class Transport(Protocol):
    name: str  # 'sendgrid' | 'outbox': stored in mail.sends.transport

    def send(self, mail: RenderedMail) -> SendResult: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------------------
# Pure policy functions (property-tested)


def classify_status(status: int) -> Classification:
    """What an HTTP status from POST /v3/mail/send means for this one mail."""
    if 200 <= status < 300:
        return "sent"
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    if status in (502, 504):
        return "unknown"
    if 500 <= status < 600:
        return "retry"
    return "failed"


def backoff_delay(attempt: int, *, base: float = 0.5, cap: float = 30.0, rand: float | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)].

    ``attempt`` counts from 0 (the delay after the first failure). Full jitter spreads the retries of many
    worker threads that failed together, so they do not hit the API again in lock-step.
    """
    if rand is None:
        rand = random.random()
    attempt = max(0, attempt)
    # Clamp the exponent: 2**attempt for a large attempt would overflow float multiplication.
    ceiling = min(cap, base * (2.0 ** min(attempt, 60)))
    return max(0.0, min(1.0, rand)) * ceiling


def rate_limit_wait(headers: Mapping[str, str] | None, now: float, *, max_wait: float = 60.0) -> float | None:
    """Seconds to wait after a 429, from ``X-RateLimit-Reset`` (unix time); None if absent or garbage."""
    if not headers:
        return None
    raw = headers.get("X-RateLimit-Reset")
    if raw is None:
        return None
    try:
        reset = float(str(raw).strip())
    except ValueError:
        return None
    if reset != reset or reset in (float("inf"), float("-inf")):  # NaN / inf
        return None
    return min(max(0.0, reset - now), max_wait)


def error_message(body: bytes | str | None, status: int) -> str:
    """SendGrid's ``errors[].message`` (with ``field``) joined, or a short body excerpt."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    detail = ""
    try:
        data = json.loads(body or "")
        parts = []
        for err in data.get("errors") or []:
            msg = str(err.get("message") or "").strip()
            field = err.get("field")
            parts.append(f"{field}: {msg}" if field else msg)
        detail = "; ".join(p for p in parts if p)
    except (ValueError, AttributeError, TypeError):
        detail = (body or "").strip()[:200]
    return f"SendGrid {status}: {detail}" if detail else f"SendGrid {status}"


# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class _NotSent(Exception):
    """The request did not fully leave the process: retrying cannot duplicate it."""


class _Ambiguous(Exception):
    """The request left, but no complete answer came back: SendGrid may or may not have it."""


class _RedactKey(logging.Filter):
    # python_http_client logs request headers (including "Authorization: Bearer <key>") at DEBUG level.
    def filter(self, record: logging.LogRecord) -> bool:
        return "Bearer" not in str(record.msg)


_phc_logger = logging.getLogger("python_http_client.client")
if not any(isinstance(f, _RedactKey) for f in _phc_logger.filters):
    _phc_logger.addFilter(_RedactKey())


class SendGridTransport:
    """POST /v3/mail/send with retries, classification and per-thread keep-alive connections.

    Thread-safe: ``send`` is called from many worker threads; each thread gets its own connection.
    """

    name = "sendgrid"

    def __init__(
        self,
        api_key: str,
        host: str = DEFAULT_HOST,
        *,
        shop: ShopSettings,
        sandbox_mode: bool = False,
        data_residency: str | None = None,
        timeout: float = 30.0,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_rate_limit_wait: float = 120.0,
        connection_reuse: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        as_of: datetime | None = None,
    ) -> None:
        if not api_key or not api_key.strip():
            raise SendGridAuthError(f"{ENV_API_KEY} is empty: set it in the environment to send via SendGrid")
        if any(c.isspace() or not c.isprintable() for c in api_key):
            # http.client would put the rejected value into its ValueError text: refuse it here instead.
            raise SendGridAuthError(f"{ENV_API_KEY} contains whitespace or control characters")
        if not api_key.isascii():
            # HTTP header values are Latin-1 at most and SendGrid keys are ASCII; http.client would fail
            # with an encoding error that holds the value: name the setting, never the value.
            raise SendGridAuthError(f"{ENV_API_KEY} contains characters outside ASCII")
        self._api_key = api_key
        self.shop = shop
        self.as_of = as_of  # the run's logical time, echoed in custom_args (events carry it back)
        self.sandbox_mode = sandbox_mode
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_rate_limit_wait = max_rate_limit_wait
        self.connection_reuse = connection_reuse
        self._sleep = sleep
        self._client = sendgrid.SendGridAPIClient(api_key=api_key, host=host.rstrip("/"))
        if data_residency:
            self._client.set_sendgrid_data_residency(data_residency)  # raises ValueError unless eu/global
        self._client.client.timeout = timeout  # propagated to every urllib request it builds
        self.host = self._client.host
        parts = urlsplit(self.host)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{ENV_API_HOST} must be an http(s) URL, got {self.host!r}")
        self._scheme = parts.scheme
        self._hostname = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + MAIL_SEND_PATH
        # The official client's headers: Authorization, User-Agent (sendgrid/x.y;python), Accept.
        self._headers = dict(self._client.client.request_headers)
        self._headers["Content-Type"] = "application/json"
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._conns_lock = threading.Lock()
        self._ssl = ssl.create_default_context() if self._scheme == "https" else None

    def __repr__(self) -> str:  # never show the key
        return f"SendGridTransport(host={self.host!r}, sandbox_mode={self.sandbox_mode})"

    # --- sanitizing -------------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    # --- one HTTP request -------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._ssl is not None:
                conn = http.client.HTTPSConnection(
                    self._hostname, self._port, timeout=self.timeout, context=self._ssl
                )
            else:
                conn = http.client.HTTPConnection(self._hostname, self._port, timeout=self.timeout)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _post_keepalive(self, body: bytes) -> _Answer:
        conn = self._connection()
        if conn.sock is not None:
            # An idle keep-alive socket that is readable has been closed by the server (or holds garbage):
            # reusing it would turn a harmless stale connection into an ambiguous "no answer".
            try:
                readable, _, _ = select.select([conn.sock], [], [], 0)
            except (OSError, ValueError):
                readable = [conn.sock]
            if readable:
                conn.close()
        try:
            if conn.sock is None:
                conn.connect()
            conn.request("POST", self._path, body=body, headers=self._headers)
        except (OSError, http.client.HTTPException) as exc:
            # Raised before the last byte of the body was handed to the kernel: SendGrid cannot have acted.
            conn.close()
            raise _NotSent(f"{type(exc).__name__}: {exc}") from None
        try:
            resp = conn.getresponse()
            status = resp.status
            headers = resp.headers
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _Ambiguous(f"{type(exc).__name__}: {exc}") from None
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            data = b""  # the status line arrived: it decides
        if resp.will_close:
            conn.close()
        return _Answer(status, headers, data)

    def _post_official(self, payload: dict) -> _Answer:
        try:
            resp = self._client.send(payload)
            return _Answer(resp.status_code, resp.headers, resp.body or b"")
        except python_http_client.exceptions.HTTPError as exc:
            return _Answer(exc.status_code, exc.headers or {}, exc.body or b"")
        except urllib.error.URLError as exc:
            # urllib wraps only errors of connect + sending the request in URLError; errors while waiting
            # for the answer propagate unwrapped (below).
            raise _NotSent(f"{type(exc.reason).__name__}: {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Ambiguous(f"{type(exc).__name__}: {exc}") from None

    # --- one mail ---------------------------------------------------------------------------------------

    def send(self, mail: RenderedMail) -> TransportResult:
        try:
            payload = build_payload(mail, self.shop, sandbox_mode=self.sandbox_mode, as_of=self.as_of)
            body = payload_body(payload)
        except PayloadError as exc:
            return TransportResult("failed", error=str(exc), attempts=0)
        if len(body) >= MAX_BODY_BYTES:
            return TransportResult(
                "failed", error=f"payload is {len(body)} bytes, SendGrid's limit is 30 MB", attempts=0
            )
        attempts = 0
        retries = 0  # 5xx / not-sent retries; 429 waits are budgeted by time instead
        rate_waited = 0.0
        while True:
            attempts += 1
            try:
                answer = self._post_keepalive(body) if self.connection_reuse else self._post_official(payload)
            except _NotSent as exc:
                retries += 1
                if retries >= self.max_attempts:
                    raise SendGridUnavailableError(
                        self._redact(f"SendGrid at {self.host} unreachable after {attempts} attempts: {exc}")
                    ) from None
                self._sleep(backoff_delay(retries - 1, base=self.backoff_base, cap=self.backoff_cap))
                continue
            except _Ambiguous as exc:
                return TransportResult(
                    "unknown",
                    error=self._redact(f"no answer after the request was sent ({exc}); not resent"),
                    attempts=attempts,
                )
            kind = classify_status(answer.status)
            if kind == "sent":
                return TransportResult(
                    "sent", message_id=answer.headers.get("X-Message-Id"), attempts=attempts
                )
            if kind == "auth":
                raise SendGridAuthError(
                    f"SendGrid refused the API key (HTTP {answer.status}): check the setting {ENV_API_KEY} "
                    f"(key must be valid and have the 'Mail Send' permission). "
                    + self._redact(error_message(answer.body, answer.status))
                )
            if kind == "rate_limited":
                wait = rate_limit_wait(answer.headers, time.time(), max_wait=self.backoff_cap)
                if wait is None:
                    wait = backoff_delay(attempts - 1, base=self.backoff_base, cap=self.backoff_cap)
                wait += random.uniform(0, 0.05)  # de-synchronise the threads waiting for the same reset
                if rate_waited + wait > self.max_rate_limit_wait:
                    raise SendGridUnavailableError(
                        f"SendGrid kept answering 429 for more than {self.max_rate_limit_wait:.0f}s: "
                        f"lower the send rate (rate_limit_per_s)"
                    )
                rate_waited += wait
                self._sleep(wait)
                continue
            message = self._redact(error_message(answer.body, answer.status))
            if kind == "retry":
                retries += 1
                if retries >= self.max_attempts:
                    return TransportResult(
                        "failed", error=f"{message} (after {attempts} attempts)", attempts=attempts
                    )
                self._sleep(backoff_delay(retries - 1, base=self.backoff_base, cap=self.backoff_cap))
                continue
            if kind == "unknown":
                return TransportResult(
                    "unknown", error=f"{message}: gateway error, may have been accepted", attempts=attempts
                )
            return TransportResult("failed", error=message, attempts=attempts)

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()


def _writer_alive(tmp_name: str) -> bool:
    """Whether the process that named this outbox temporary file (``.tmp-<pid>-<file>``) still runs; a
    name without a process id is a leftover of an older version."""
    pid = tmp_name.split("-", 2)[1] if tmp_name.count("-") >= 2 else ""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


class OutboxTransport:
    """Writes ``<outbox>/<send_id>.eml`` (RFC 5322) and ``<send_id>.json`` (the exact SendGrid payload).

    Used when no API key is configured: the run goes end to end and a human can open the mails.
    """

    name = "outbox"
    # What deliver() should use with this transport (see there): composing is CPU work under the GIL,
    # writing is local. One worker beside the sending thread: with two, each file write hands the GIL to
    # the other composing worker and waits for it back (bench_outbox on tmpfs: 3,438 mails/s with one,
    # 2,218 with two; on disk the two were within the noise).
    max_concurrency = 1
    claim_batch = 500
    # SendGrid's request rate (the send step's rate_limit_per_s) does not apply to files: held to the
    # default 600/s, a 1M-customer first run spent 243 s of its send step waiting; unthrottled, the
    # whole step takes ~100 s.
    rate_limited = False

    def __init__(
        self, outbox_dir: Path | str | None, *, shop: ShopSettings, as_of: datetime | None = None
    ) -> None:
        """``outbox_dir`` None: every mail is composed as for the folder (one that cannot be composed fails
        as it would in a live run) and none is written: a backtest without ``--mail-files``, whose month of
        hourly ticks at 100,000 customers would write ~1 GB of files a day and side (docs/benchmarks.md)."""
        self.outbox_dir = Path(outbox_dir) if outbox_dir is not None else None
        if self.outbox_dir is not None:
            self.outbox_dir.mkdir(parents=True, exist_ok=True)
            # Half-written files of a crashed run. Runs may overlap (PostgreSQL) and share the folder, so
            # only the files of writers that are gone: a temporary name carries its writer's process id.
            for stale in self.outbox_dir.glob(".tmp-*"):
                if not _writer_alive(stale.name):
                    stale.unlink(missing_ok=True)
        self.shop = shop
        self.as_of = as_of  # the run's logical time: the payload's custom_args and the .eml Date

    def __repr__(self) -> str:
        return f"OutboxTransport({str(self.outbox_dir)!r})"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        # A crash must not leave a half-written file that looks like a mail: write beside it, then rename.
        # The temporary name is unique per mail (a send id is claimed by one sender at a time) and names
        # the writing process, so a transport starting beside a running one leaves its files alone.
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def send(self, mail: RenderedMail) -> TransportResult:
        try:
            payload = build_payload(mail, self.shop, as_of=self.as_of)
            body = payload_body(payload)
            if self.outbox_dir is None:
                # nothing is written: the header block holds every check composing can fail (eml_head)
                eml_head(payload, send_id=mail.send_id, date=self.as_of)
                eml = None
            else:
                eml = payload_to_eml(payload, send_id=mail.send_id, date=self.as_of)
        except (PayloadError, ValueError) as exc:
            return TransportResult("failed", error=str(exc), attempts=0)
        if self.outbox_dir is not None and eml is not None:
            self._write_atomic(self.outbox_dir / f"{mail.send_id}.json", body)
            self._write_atomic(self.outbox_dir / f"{mail.send_id}.eml", eml)
        return TransportResult("sent", message_id=None, attempts=1)

    def close(self) -> None:
        pass
