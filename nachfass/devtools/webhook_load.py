"""A load generator for the web service's webhook: signed event batches over keep-alive connections.

Used by ``bench/bench_webapp.py`` (figures in docs/benchmarks.md) and the bounded load test in
``tests/test_webapp_load.py``. Each of ``concurrency`` threads keeps one HTTP/1.1 connection and posts
batches of ``events_per_batch`` SendGrid-like events, signed like SendGrid signs them (ECDSA P-256 over
timestamp + body), and records per request the status and the latency. Signing happens outside the timed
part of each request, so latencies measure the server, not the client's signing.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from nachfass.devtools.event_simulator import load_private_key, sign_payload

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


@dataclass
class LoadResult:
    seconds: float = 0.0
    accepted_batches: int = 0
    accepted_events: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    accepted_ids: list[str] = field(default_factory=list)  # sg_event_ids of batches answered 200

    @property
    def events_per_s(self) -> float:
        return self.accepted_events / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    def summary(self) -> str:
        return (
            f"{self.accepted_events:,} events in {self.accepted_batches:,} batches accepted in "
            f"{self.seconds:.2f} s = {self.events_per_s:,.0f} events/s; latency p50 "
            f"{self.percentile_ms(50):.1f} ms, p95 {self.percentile_ms(95):.1f} ms, p99 "
            f"{self.percentile_ms(99):.1f} ms, max {max(self.latencies_ms, default=0):.1f} ms; "
            f"refused {self.refused or 0}, errors {self.errors}"
        )


def _batch(events_per_batch: int, stamp: int) -> tuple[bytes, list[str]]:
    ids = [uuid.uuid4().hex for _ in range(events_per_batch)]
    events = [
        {
            "email": f"kunde{n}@beispiel.example",
            "timestamp": stamp,
            "event": "delivered",
            "sg_event_id": sg_id,
            "sg_message_id": f"{sg_id[:22]}.filter0001.1.0",
            "send_id": f"s_{sg_id[:16]}",
            "campaign": "abandoned_cart",
            "step": "1",
            "variant": "control",
            "smtp-id": f"<{sg_id}@ismtpd0001p1lon1.sendgrid.net>",
            "category": ["abandoned_cart", "abandoned_cart:1"],
        }
        for n, sg_id in enumerate(ids)
    ]
    return json.dumps(events).encode("utf-8"), ids


def run_load(
    webhook_url: str,
    private_key: bytes | str,
    *,
    concurrency: int = 8,
    events_per_batch: int = 50,
    batches: int | None = None,
    duration_s: float | None = None,
    stop: Callable[[], bool] | None = None,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Post signed batches until ``batches`` were sent, ``duration_s`` passed or ``stop()`` says so."""
    if batches is None and duration_s is None and stop is None:
        raise ValueError("give batches, duration_s or stop")
    key = load_private_key(private_key)
    parts = urlsplit(webhook_url)

    def signed() -> tuple[bytes, list[str], str, str]:
        stamp = str(int(time.time()))
        body, ids = _batch(events_per_batch, int(stamp))
        return body, ids, sign_payload(key, body, stamp), stamp

    # A fixed number of batches is signed ahead; open-ended runs sign each batch before its request (outside
    # the timed part), so every batch and event id is unique.
    pool = [signed() for _ in range(batches)] if batches is not None else None
    result = LoadResult()
    lock = threading.Lock()
    counter = iter(range(10**12))
    started = time.perf_counter()
    deadline = started + duration_s if duration_s is not None else None

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        try:
            while True:
                with lock:
                    n = next(counter)
                if batches is not None and n >= batches:
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                if stop is not None and stop():
                    return
                body, ids, signature, stamp = pool[n] if pool is not None else signed()
                headers = {
                    "Content-Type": "application/json",
                    SIGNATURE_HEADER: signature,
                    TIMESTAMP_HEADER: stamp,
                }
                t0 = time.perf_counter()
                try:
                    conn.request("POST", parts.path, body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    time.sleep(0.01)  # the server is gone or busy: do not spin
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
                    with lock:
                        result.errors += 1
                    continue
                elapsed_ms = (time.perf_counter() - t0) * 1000
                with lock:
                    result.latencies_ms.append(elapsed_ms)
                    if status == 200:
                        result.accepted_batches += 1
                        result.accepted_events += len(ids)
                        result.accepted_ids.extend(ids)
                    else:
                        result.refused[status] = result.refused.get(status, 0) + 1
                if response.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, name=f"load-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    return result
