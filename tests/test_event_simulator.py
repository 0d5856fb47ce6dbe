"""The event simulator: deterministic events, signed like SendGrid, accepted by the real web service."""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sendgrid.helpers.eventwebhook import EventWebhook

from nachfass.cli.main import main
from nachfass.devtools import event_simulator
from nachfass.devtools.event_simulator import (
    SimulatorError,
    generate_events,
    generate_keypair,
    sign_payload,
    simulate,
)
from nachfass.web.app import run_webapp

NOW = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
SENT = NOW - timedelta(days=2)


def message(i: int, variant: str = "control", campaign: str = "cross_sell") -> dict:
    return {
        "message_id": f"msg{i:06d}",
        "received_at": (SENT + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
        "payload": {
            "from": {"email": "service@gartenglueck.example"},
            "subject": "Passend zu Ihrer Bestellung",
            "personalizations": [{"to": [{"email": f"kunde{i}@example.com"}]}],
            "content": [
                {"type": "text/plain", "value": "Hallo"},
                {
                    "type": "text/html",
                    "value": '<a href="https://shop.example/p/1?utm_source=n&amp;utm_medium=email">P</a>'
                    '<a href="https://mail.example/u/tok">Abmelden</a>',
                },
            ],
            "custom_args": {"send_id": f"send-{i}", "campaign": campaign, "step": "1", "variant": variant},
            "categories": [campaign],
        },
    }


class _FakeSandbox(BaseHTTPRequestHandler):
    messages: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802
        if self.path != "/_sandbox/messages":
            self.send_error(404)
            return
        body = json.dumps(self.server.messages).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def sandbox() -> Iterator[tuple[str, list[dict]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeSandbox)
    server.messages = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.messages  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def test_sign_payload_verifies_with_sendgrids_helper() -> None:
    private, public = generate_keypair()
    body = '[{"event":"open","email":"ä@example.com"}]'.encode()
    signature = sign_payload(private, body, "1790000000")
    helper = EventWebhook(public)
    assert helper.verify_signature(body.decode("utf-8"), signature, "1790000000")
    assert not helper.verify_signature(body.decode("utf-8"), signature, "1790000001")


def test_events_are_deterministic_for_a_seed() -> None:
    messages = [message(i, variant="b" if i % 2 else "control") for i in range(300)]
    first = generate_events(messages, seed=7, now=NOW)
    again = generate_events(messages, seed=7, now=NOW)
    other = generate_events(messages, seed=8, now=NOW)
    assert first == again
    assert [e["sg_event_id"] for e in first] != [e["sg_event_id"] for e in other]
    # Which events exist does not depend on `now` (reruns only re-deliver the same sg_event_ids).
    later = generate_events(messages, seed=7, now=NOW + timedelta(days=5))
    assert sorted(e["sg_event_id"] for e in later) == sorted(e["sg_event_id"] for e in first)
    # ... nor on the order in which the sandbox lists the messages.
    reversed_ids = {e["sg_event_id"] for e in generate_events(messages[::-1], seed=7, now=NOW)}
    assert reversed_ids == {e["sg_event_id"] for e in first}


def test_event_times_follow_the_logical_send_time_not_the_receipt() -> None:
    """A mail sent by a run as of last year (replay, backfill) gets events in that run's time, however
    late the local server received it; without `now`, within the default horizon after that send."""
    logical = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
    messages = [message(i) for i in range(100)]
    for msg in messages:
        msg["payload"]["custom_args"]["as_of"] = logical.strftime("%Y-%m-%dT%H:%M:%SZ")
    observed = logical + timedelta(hours=6)
    events = generate_events(messages, seed=2, now=observed)
    assert events and all(logical.timestamp() <= e["timestamp"] <= observed.timestamp() for e in events)
    unbounded = generate_events(messages, seed=2)
    horizon = logical.timestamp() + event_simulator.DEFAULT_HORIZON_S
    assert all(logical.timestamp() <= e["timestamp"] <= horizon for e in unbounded)
    # the same events either way: only their times depend on the observation moment
    assert {e["sg_event_id"] for e in events} == {e["sg_event_id"] for e in unbounded}


def test_event_shape() -> None:
    messages = [message(i) for i in range(200)]
    events = generate_events(messages, seed=1, now=NOW)
    assert len({e["sg_event_id"] for e in events}) == len(events)
    kinds = Counter(e["event"] for e in events)
    assert kinds["processed"] + kinds["dropped"] == 200
    by_message = {m["message_id"]: m for m in messages}
    for event in events:
        msg_id = event["sg_message_id"].split(".filter0001.")[0]
        assert msg_id in by_message
        sent = datetime.fromisoformat(by_message[msg_id]["received_at"]).timestamp()
        assert sent <= event["timestamp"] <= NOW.timestamp()
        assert isinstance(event["timestamp"], int)
        custom = by_message[msg_id]["payload"]["custom_args"]
        assert {k: event[k] for k in custom} == custom
        assert event["email"] == by_message[msg_id]["payload"]["personalizations"][0]["to"][0]["email"]
        assert event["category"][0] == "cross_sell"
        if event["event"] == "open":
            assert isinstance(event["sg_machine_open"], bool)
        if event["event"] == "click":
            assert event["url"].startswith("https://shop.example/p/1?")
            assert "&utm_medium" in event["url"]
        if event["event"] == "bounce":
            assert event["type"] in ("bounce", "blocked")
    # Per recipient, the order is processed < delivered <= opens/clicks.
    first_seen: dict[tuple[str, str], int] = {}
    for event in events:
        first_seen.setdefault((event["sg_message_id"], event["event"]), event["timestamp"])
    for (mid, kind), ts in first_seen.items():
        if kind in ("open", "click", "delivered"):
            assert first_seen[(mid, "processed")] <= ts
        if kind == "click":
            assert first_seen[(mid, "delivered")] <= ts


def test_rates_are_roughly_respected() -> None:
    rates = {
        "control": {"open": 0.30, "click": 0.08, "machine_open": 0.10},
        "b": {"open": 0.50, "click": 0.20, "machine_open": 0.10},
    }
    n = 4000
    messages = [message(i, variant="b" if i % 2 else "control") for i in range(n)]
    events = generate_events(messages, rates=rates, seed=3, now=NOW)
    delivered: dict[str, set[str]] = defaultdict(set)
    opened: dict[str, set[str]] = defaultdict(set)
    clicked: dict[str, set[str]] = defaultdict(set)
    machine: dict[str, set[str]] = defaultdict(set)
    for e in events:
        key = e["sg_message_id"]
        if e["event"] == "delivered":
            delivered[e["variant"]].add(key)
        elif e["event"] == "open":
            (machine if e["sg_machine_open"] else opened)[e["variant"]].add(key)
        elif e["event"] == "click":
            clicked[e["variant"]].add(key)
    for variant, expected in rates.items():
        d = len(delivered[variant])
        assert d > 0.95 * n / 2
        assert len(opened[variant]) / d == pytest.approx(expected["open"], abs=0.03)
        assert len(clicked[variant]) / d == pytest.approx(expected["click"], abs=0.02)
        assert len(machine[variant]) / d == pytest.approx(expected["machine_open"], abs=0.02)
        assert clicked[variant] <= opened[variant]


def test_simulate_posts_signed_batches_the_webapp_accepts(
    tmp_path: Path, sandbox: tuple[str, list[dict]]
) -> None:
    sandbox_url, messages = sandbox
    messages.extend(message(i, variant="b" if i % 3 else "control") for i in range(120))
    private, public = generate_keypair()
    with run_webapp(tmp_path, public, None) as app:
        counts = simulate(
            sandbox_url, f"{app.url}/webhooks/sendgrid", private, seed=5, now=NOW, batch_size=100
        )
        files = sorted((tmp_path / "sendgrid_events").glob("*.ndjson"))
    assert counts["messages"] == counts["recipients"] == 120
    assert counts["batches"] == len(files) >= 2
    stored = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(stored) == counts["events"]
    assert stored == generate_events(messages, seed=5, now=NOW)
    assert counts["processed"] + counts.get("dropped", 0) == 120


def test_simulate_with_the_wrong_key_is_refused(tmp_path: Path, sandbox: tuple[str, list[dict]]) -> None:
    sandbox_url, messages = sandbox
    messages.append(message(1))
    with run_webapp(tmp_path, generate_keypair()[1], None) as app, pytest.raises(SimulatorError, match="403"):
        simulate(sandbox_url, f"{app.url}/webhooks/sendgrid", generate_keypair()[0], now=NOW)
    assert list((tmp_path / "sendgrid_events").iterdir()) == []


def test_cli_writes_a_keypair_and_runs(
    tmp_path: Path, sandbox: tuple[str, list[dict]], capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "webhook_key.pem"
    assert main(["simulate-events", "--write-keypair", str(key_file)]) == 0
    public = capsys.readouterr().out.strip()
    assert key_file.stat().st_mode & 0o077 == 0  # the private key is not world-readable
    sandbox_url, messages = sandbox
    messages.extend(message(i) for i in range(5))
    with run_webapp(tmp_path / "landing", public, None) as app:
        argv = ["--sandbox-url", sandbox_url, "--webhook-url", f"{app.url}/webhooks/sendgrid"]
        assert main(["simulate-events", *argv, "--private-key-file", str(key_file), "--seed", "2"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["messages"] == 5 and counts["batches"] == 1
