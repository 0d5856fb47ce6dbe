"""Event simulator: turns the mails the local SendGrid sandbox accepted into signed Event Webhook posts.

It closes the demo loop without SendGrid: read ``GET {sandbox_url}/_sandbox/messages``, invent
plausible events per recipient (processed, delivered/bounce/dropped, opens incl. privacy-proxy opens,
clicks, unsubscribes, spam reports) at per-variant rates, and POST them in batches to the web service,
signed with ECDSA P-256 exactly as SendGrid signs (base64 DER signature over ``timestamp + body``).

Deterministic: for a given seed the same message always yields the same events with the same
``sg_event_id``s, so running it twice only re-delivers duplicates (which the ingest dedups, as it must
for SendGrid's at-least-once delivery). Event times follow the mail's logical send time (its ``as_of``
custom arg) and the observation moment ``now``, never the wall clock.

CLI::

    nachfass simulate-events --write-keypair webhook_key.pem   # once
    nachfass simulate-events --sandbox-url http://127.0.0.1:3030 \\
        --webhook-url http://127.0.0.1:8025/webhooks/sendgrid --private-key-file webhook_key.pem --seed 1
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# Rates are shares of recipients (open/click/unsubscribe/spamreport: of delivered recipients; a click
# implies an open). Roughly what German e-commerce follow-up mails see.
DEFAULT_RATES: dict[str, float] = {
    "dropped": 0.005,  # SendGrid refused to send (e.g. address on its suppression list)
    "bounce": 0.02,  # of those not dropped
    "blocked_share": 0.3,  # share of bounces that are type "blocked" (soft), the rest "bounce" (hard)
    "open": 0.35,  # unique human opens
    "machine_open": 0.15,  # privacy-proxy opens (Apple MPP), independent of human opens
    "click": 0.08,  # unique clicks, <= open
    "unsubscribe": 0.005,
    "spamreport": 0.001,
}
# Without an observation moment (`now`), events spread over this long after each mail's logical send.
DEFAULT_HORIZON_S = 3 * 86400
# SendGrid flushes a batch at 768 KB or 30 s; stay below the size in bytes too.
MAX_BATCH_BYTES = 700 * 1024

_USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4",
    "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537",
)
_MACHINE_USER_AGENT = "Mozilla/5.0"


class SimulatorError(RuntimeError):
    """The sandbox or the webhook answered something the simulator cannot work with."""


# ---- keys and signatures ------------------------------------------------------------------------------


def generate_keypair() -> tuple[bytes, str]:
    """A fresh P-256 key pair: (private key as PEM bytes, public key as base64 DER SubjectPublicKeyInfo).

    The public half is what SendGrid shows as "Verification Key" (``SENDGRID_WEBHOOK_PUBLIC_KEY``).
    """
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(der).decode("ascii")


def load_private_key(private_key: ec.EllipticCurvePrivateKey | bytes | str) -> ec.EllipticCurvePrivateKey:
    """Accept a key object or PEM text/bytes."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key
    pem = private_key.encode("ascii") if isinstance(private_key, str) else private_key
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the webhook signing key must be an EC (P-256) private key")
    return key


def sign_payload(private_key: ec.EllipticCurvePrivateKey | bytes | str, body: bytes, timestamp: str) -> str:
    """SendGrid's signature: base64 of the DER ECDSA-SHA256 signature over ``timestamp + body``."""
    key = load_private_key(private_key)
    signature = key.sign(timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode("ascii")


# ---- event generation ---------------------------------------------------------------------------------


def _rates_for(rates: Mapping[str, Mapping[str, float]] | None, variant: str) -> dict[str, float]:
    merged = dict(DEFAULT_RATES)
    if rates:
        merged.update(rates.get("*", {}))  # "*" applies to every variant
        merged.update(rates.get(variant, {}))
    merged["click"] = min(merged["click"], merged["open"])
    return merged


def _event_id(seed: int, *parts: object) -> str:
    # 22 url-safe characters like SendGrid's, derived from the seed so reruns repeat them exactly.
    digest = hashlib.sha256("|".join([str(seed), *map(str, parts)]).encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


def _parse_time(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _links(payload: Mapping[str, Any]) -> list[str]:
    """Links in the HTML part, to make click events point at something the mail really contained."""
    urls: list[str] = []
    for part in payload.get("content") or []:
        if part.get("type") == "text/html":
            urls += re.findall(r'href="(https?://[^"]+)"', str(part.get("value", "")))
    # Clicks on unsubscribe links are not what "click" means for analytics.
    urls = [u.replace("&amp;", "&") for u in urls if "/u/" not in u and "/o/" not in u]
    return urls or ["https://www.example.com/"]


def _recipients(payload: Mapping[str, Any]) -> list[tuple[str, dict[str, str]]]:
    base_args = {str(k): str(v) for k, v in (payload.get("custom_args") or {}).items()}
    found: list[tuple[str, dict[str, str]]] = []
    for personalization in payload.get("personalizations") or []:
        args = {
            **base_args,
            **{str(k): str(v) for k, v in (personalization.get("custom_args") or {}).items()},
        }
        for to in personalization.get("to") or []:
            if to.get("email"):
                found.append((str(to["email"]), args))
    return found


def _recipient_events(
    *,
    seed: int,
    message_id: str,
    index: int,
    email: str,
    args: Mapping[str, str],
    categories: list[str],
    links: list[str],
    sent_ts: int,
    horizon: int,
    r: Mapping[str, float],
) -> list[dict[str, Any]]:
    # One RNG per recipient, seeded by identity: results do not depend on message order or count. Our
    # send id (custom_args) is stable across runs where the server's message id is random, so prefer it.
    identity = args.get("send_id") or message_id
    rng = random.Random(f"{seed}|{identity}|{index}|{email}")
    sg_message_id = f"{message_id}.filter0001.{index + 1:05d}.0"
    campaign = args.get("campaign", "")
    counters: Counter[str] = Counter()
    out: list[dict[str, Any]] = []

    def at(delay_s: float) -> int:
        # Monotone squeeze of [0, inf) into [0, horizon): every event lies after the send and before
        # `now`, and which events exist does not depend on `now`.
        return sent_ts + int(horizon * delay_s / (delay_s + horizon)) if horizon else sent_ts

    def emit(kind: str, timestamp: int, **fields: Any) -> None:
        counters[kind] += 1
        event: dict[str, Any] = dict(args)  # custom_args come back as top-level keys
        event.update(
            {
                "email": email,
                "timestamp": timestamp,
                "event": kind,
                "sg_event_id": _event_id(seed, message_id, index, kind, counters[kind]),
                "sg_message_id": sg_message_id,
                "smtp-id": f"<{message_id}@sandbox.nachfass.local>",
                "category": categories or ([campaign] if campaign else []),
            }
        )
        event.update(fields)
        out.append(event)

    t = rng.uniform(0.5, 3)
    if rng.random() < r["dropped"]:
        emit("dropped", at(t), reason="Bounced Address", status="5.0.0")
        return out
    emit("processed", at(t))
    t += rng.uniform(1, 30)
    if rng.random() < r["bounce"]:
        if rng.random() < r["blocked_share"]:
            emit(
                "bounce",
                at(t),
                type="blocked",
                status="5.7.1",
                reason="550 5.7.1 Message rejected due to local policy",
            )
        else:
            emit(
                "bounce",
                at(t),
                type="bounce",
                status="5.1.1",
                reason="550 5.1.1 The email account that you tried to reach does not exist",
            )
        return out
    delivered_at = t
    emit("delivered", at(t), response="250 2.0.0 OK")
    if rng.random() < r["machine_open"]:
        emit(
            "open",
            at(delivered_at + rng.uniform(5, 120)),
            sg_machine_open=True,
            useragent=_MACHINE_USER_AGENT,
            ip="17.58.0.1",
        )
    draw_open, draw_click = rng.random(), rng.random()
    if draw_open < r["open"]:
        useragent = rng.choice(_USER_AGENTS)
        ip = f"203.0.113.{rng.randint(1, 254)}"
        t = delivered_at + rng.expovariate(1 / 7200)  # mean 2 h to the first open
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            emit("open", at(t), sg_machine_open=False, useragent=useragent, ip=ip)
            t += rng.expovariate(1 / 3600)
        # P(click | open) = click / open, so the unconditional click rate is `click`.
        if r["open"] > 0 and draw_click < r["click"] / r["open"]:
            for _ in range(rng.choice((1, 1, 2))):
                t += rng.uniform(5, 300)
                emit("click", at(t), url=rng.choice(links), useragent=useragent, ip=ip)
    if rng.random() < r["unsubscribe"]:
        emit("unsubscribe", at(delivered_at + rng.uniform(60, 86400)))
    if rng.random() < r["spamreport"]:
        emit("spamreport", at(delivered_at + rng.uniform(60, 86400)))
    return out


def generate_events(
    messages: Iterable[Mapping[str, Any]],
    *,
    rates: Mapping[str, Mapping[str, float]] | None = None,
    seed: int = 1,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The events SendGrid could have reported for these sandbox messages, sorted by timestamp.

    Times follow the mail's logical send time: the ``as_of`` custom arg the send step puts on every mail
    (the server's receipt time only for mails without it). ``now`` is the moment the events are observed:
    every event lies between the send and ``now``; without it, within ``DEFAULT_HORIZON`` of the send. The
    wall clock plays no part, so a replayed or backdated run gets events in its own time.
    """
    now_ts = int(now.timestamp()) if now is not None else None
    events: list[dict[str, Any]] = []
    for message in messages:
        message_id = str(message["message_id"])
        payload = message.get("payload") or {}
        categories = [str(c) for c in payload.get("categories") or []]
        links = _links(payload)
        for index, (email, args) in enumerate(_recipients(payload)):
            sent_ts = math.ceil(_parse_time(args.get("as_of") or message.get("received_at")))
            horizon = DEFAULT_HORIZON_S if now_ts is None else max(now_ts - sent_ts, 0)
            events += _recipient_events(
                seed=seed,
                message_id=message_id,
                index=index,
                email=email,
                args=args,
                categories=categories,
                links=links,
                sent_ts=sent_ts,
                horizon=horizon,
                r=_rates_for(rates, args.get("variant", "control")),
            )
    # Stable sort: ties keep generation order, so the output is deterministic.
    events.sort(key=lambda e: e["timestamp"])
    return events


# ---- HTTP ---------------------------------------------------------------------------------------------


def fetch_messages(sandbox_url: str, timeout: float = 30) -> list[dict[str, Any]]:
    url = sandbox_url.rstrip("/") + "/_sandbox/messages"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.loads(response.read())
    except (urllib.error.URLError, ValueError) as exc:
        raise SimulatorError(f"could not read {url}: {exc}") from exc
    if not isinstance(data, list):
        raise SimulatorError(f"{url} did not answer a JSON list")
    return data


def _batches(events: list[dict[str, Any]], batch_size: int) -> Iterable[bytes]:
    batch: list[bytes] = []
    size = 2
    for event in events:
        encoded = json.dumps(event, separators=(",", ":")).encode("utf-8")
        if batch and (len(batch) >= batch_size or size + len(encoded) + 1 > MAX_BATCH_BYTES):
            yield b"[" + b",".join(batch) + b"]"
            batch, size = [], 2
        batch.append(encoded)
        size += len(encoded) + 1
    if batch:
        yield b"[" + b",".join(batch) + b"]"


def post_events(
    webhook_url: str,
    events: list[dict[str, Any]],
    private_key: ec.EllipticCurvePrivateKey | bytes | str,
    *,
    batch_size: int = 500,
    clock: Callable[[], float] = time.time,
    timeout: float = 30,
) -> int:
    """POST the events in signed batches like SendGrid does; returns the number of batches sent."""
    key = load_private_key(private_key)
    sent = 0
    for body in _batches(events, batch_size):
        # Signed at send time (wall clock), not at event time: the receiver checks a replay window.
        timestamp = str(int(clock()))
        request = urllib.request.Request(
            webhook_url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "SendGrid Event API (nachfass simulator)",
                SIGNATURE_HEADER: sign_payload(key, body, timestamp),
                TIMESTAMP_HEADER: timestamp,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise SimulatorError(f"webhook answered {exc.code} for batch {sent + 1}") from None
        except urllib.error.URLError as exc:
            raise SimulatorError(f"could not reach the webhook {webhook_url}: {exc.reason}") from None
        sent += 1
    return sent


def simulate(
    sandbox_url: str,
    webhook_url: str,
    private_key: ec.EllipticCurvePrivateKey | bytes | str,
    *,
    rates: Mapping[str, Mapping[str, float]] | None = None,
    seed: int = 1,
    now: datetime | None = None,
    batch_size: int = 500,
    clock: Callable[[], float] = time.time,
) -> dict[str, int]:
    """Fetch the sandbox's messages, generate their events, post them signed. Returns counts:
    ``messages``, ``recipients``, ``events``, ``batches`` and one count per event type."""
    messages = fetch_messages(sandbox_url)
    events = generate_events(messages, rates=rates, seed=seed, now=now)
    batches = post_events(webhook_url, events, private_key, batch_size=batch_size, clock=clock)
    counts: dict[str, int] = {
        "messages": len(messages),
        "recipients": sum(len(_recipients(m.get("payload") or {})) for m in messages),
        "events": len(events),
        "batches": batches,
    }
    counts.update(Counter(e["event"] for e in events))
    return counts


def write_keypair(path: Path) -> str:
    """A new private key (PEM, mode 600) at ``path``, which must not exist; returns the public key
    (base64 DER, SENDGRID_WEBHOOK_PUBLIC_KEY)."""
    pem, public_b64 = generate_keypair()
    path.touch(mode=0o600, exist_ok=False)
    path.write_bytes(pem)
    return public_b64


def run(
    sandbox_url: str,
    webhook_url: str,
    private_key_file: Path,
    *,
    seed: int = 1,
    rates_file: Path | None = None,
    batch_size: int = 500,
) -> int:
    """`nachfass simulate-events`: post the events, print their counts; 1 with the reason on failure."""
    try:
        key = load_private_key(private_key_file.read_bytes())
        rates = json.loads(rates_file.read_text(encoding="utf-8")) if rates_file else None
        counts = simulate(sandbox_url, webhook_url, key, rates=rates, seed=seed, batch_size=batch_size)
    except (OSError, ValueError, SimulatorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(counts, sort_keys=True))
    return 0
