"""The closed loop: generate → send to the local SendGrid-compatible server → signed events → webhook
receiver → event ingest → analytics. Unsubscribes and hard bounces stop later mails."""

from __future__ import annotations

import re
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from dagster_project.resources import parse_as_of
from nachfass.cli.main import run_job
from nachfass.core.links import LinkSigner
from nachfass.devtools.datagen.generate import generate_exports
from nachfass.devtools.event_simulator import generate_keypair, post_events, simulate
from nachfass.devtools.sendgrid_server import run_sandbox
from nachfass.web.app import run_webapp

AS_OF = parse_as_of("2026-11-24T10:00:00Z")
KEY = "SG.loop-test-key"
LINK_KEY = "link-signing-key-for-the-loop-test"
pytestmark = [pytest.mark.slow, pytest.mark.clock]

SESSION_HEADER = (
    "event_id,session_id,customer_id,is_logged_in,event_type,cart_id,product_id,quantity,"
    "unit_price,currency,occurred_at"
)


def query(warehouse: Path, sql: str, params: list | None = None) -> list[tuple]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        return conn.execute(sql, params or []).fetchall()
    finally:
        conn.close()


def new_cart(landing: Path, name: str, customer_id: str, at) -> str:
    """A fresh logged-in abandoned cart for the customer, as a new export file."""
    cart_id = f"K-{name}"
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = landing / "session_events" / f"zz-{name}.csv"
    path.write_text(
        f"{SESSION_HEADER}\nE-{name},S-{name},{customer_id},true,add_to_cart,{cart_id},"
        f"P0001,1,19.90,EUR,{stamp}\n",
        encoding="utf-8",
    )
    return cart_id


class WorldClock:
    """The loop's one clock: the web service stamps consent events and checks webhook signatures with it,
    and the simulator signs with it, so the test world lives in logical time on any calendar day."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def timestamp(self) -> float:
        return self.now.timestamp()


@pytest.fixture
def loop(workspace, dbt_manifest, monkeypatch):
    monkeypatch.setenv("NACHFASS_LINK_SIGNING_KEY", LINK_KEY)
    generate_exports(workspace["landing"], customers=400, seed=11, as_of=AS_OF)
    private_key, public_key = generate_keypair()
    clock = WorldClock(AS_OF + timedelta(hours=1))
    with (
        run_sandbox(api_key=KEY) as sandbox,
        run_webapp(
            workspace["landing"], public_key=public_key, link_signer=LinkSigner(LINK_KEY), now=clock
        ) as web,
    ):
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", sandbox.url)
        assert run_job(AS_OF.isoformat())
        yield {**workspace, "sandbox": sandbox, "web": web, "private_key": private_key, "clock": clock}


def test_events_flow_into_ab_results_and_duplicates_count_once(loop) -> None:
    warehouse, sandbox = loop["warehouse"], loop["sandbox"]
    webhook = f"{loop['web'].url}/webhooks/sendgrid"
    rates = {"*": {"open": 0.6, "click": 0.3, "bounce": 0.0, "dropped": 0.0}}
    loop["clock"].now = AS_OF + timedelta(hours=6)
    counts = simulate(
        sandbox.url,
        webhook,
        loop["private_key"],
        rates=rates,
        seed=3,
        now=AS_OF + timedelta(hours=6),
        clock=loop["clock"].timestamp,
    )
    assert counts["messages"] == len(sandbox.messages()) > 0
    events_dir = loop["landing"] / "sendgrid_events"
    assert run_job((AS_OF + timedelta(hours=8)).isoformat(), job_name="events_job")

    # the same events delivered again (SendGrid retries) change nothing
    simulate(
        sandbox.url,
        webhook,
        loop["private_key"],
        rates=rates,
        seed=3,
        now=AS_OF + timedelta(hours=6),
        clock=loop["clock"].timestamp,
    )
    assert len(list(events_dir.glob("*.ndjson"))) >= 2
    assert run_job((AS_OF + timedelta(hours=8)).isoformat(), job_name="events_job")

    n_events = query(warehouse, "select count(*) from raw.sendgrid_events")[0][0]
    assert n_events == counts["events"]  # deduplicated on sg_event_id
    # per experiment and variant: ab_results against the ledger and the stored events
    ab = {
        (row[0], row[1]): row[2:]
        for row in query(
            warehouse,
            "select experiment_id, variant, n_assigned, n_sent, n_delivered, n_opened, n_clicked "
            "from analytics.ab_results where step = '1'",
        )
    }
    ledger = {
        (row[0], row[1]): row[2]
        for row in query(
            warehouse,
            "select experiment_id, variant, count(*) from mail.sends where experiment_id is not null "
            "and status = 'sent' and step = '1' group by all",
        )
    }
    expected = {
        (row[0], row[1]): row[2:]
        for row in query(
            warehouse,
            """
        select s.experiment_id, s.variant,
               count(distinct s.send_id) filter (where e.event = 'delivered'),
               count(distinct s.send_id) filter (where e.event = 'open' and not e.is_machine_open),
               count(distinct s.send_id) filter (where e.event = 'click')
        from mail.sends s join raw.sendgrid_events e on e.send_id = s.send_id
        where s.experiment_id is not null and s.step = '1' group by all""",
        )
    }
    assert ledger, "the experiments must have sent mails"
    for key, n_sent in ledger.items():
        assert ab[key][1] == n_sent
        assert ab[key][2:] == expected.get(key, (0, 0, 0))
    for key, row in ab.items():
        if key[1] == "holdout":
            assert row[1] == 0 and row[0] > 0  # assigned but never sent


def test_one_click_unsubscribe_stops_the_next_run(loop) -> None:
    landing, warehouse, sandbox = loop["landing"], loop["warehouse"], loop["sandbox"]
    marketing = [m for m in sandbox.messages() if "List-Unsubscribe" in m["payload"].get("headers", {})]
    assert marketing, "a marketing mail must have been sent"
    payload = marketing[0]["payload"]
    email = payload["personalizations"][0]["to"][0]["email"]
    token = re.search(r"/u/([A-Za-z0-9_.-]+)>", payload["headers"]["List-Unsubscribe"]).group(1)
    request = urllib.request.Request(
        f"{loop['web'].url}/u/{token}", data=b"List-Unsubscribe=One-Click", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # RFC 8058 one-click
        assert answer.status == 200
    customer_id = query(warehouse, "select customer_id from mail.sends where email = ?", [email])[0][0]
    later = AS_OF + timedelta(days=1)
    cart_id = new_cart(landing, "unsub", customer_id, later - timedelta(hours=2))
    assert run_job(later.isoformat())
    decision = query(
        warehouse, "select decision, reason from eligibility.mail_candidates where trigger_key = ?", [cart_id]
    )
    assert decision == [("skip", "no_consent")]
    assert not [
        m
        for m in sandbox.messages()
        if m["payload"]["personalizations"][0]["to"][0]["email"] == email
        and m["payload"]["custom_args"].get("trigger_key") == cart_id
    ]


def test_hard_bounce_suppresses_the_address(loop) -> None:
    landing, warehouse, sandbox = loop["landing"], loop["warehouse"], loop["sandbox"]
    message = sandbox.messages()[0]
    email = message["payload"]["personalizations"][0]["to"][0]["email"]
    bounce = {
        "email": email,
        "event": "bounce",
        "type": "bounce",
        "reason": "550 5.1.1 user unknown",
        "timestamp": int((AS_OF + timedelta(hours=1)).timestamp()),
        "sg_event_id": "bounce-test-1",
        "sg_message_id": f"{message['message_id']}.filter0001",
        **message["payload"]["custom_args"],
    }
    post_events(
        f"{loop['web'].url}/webhooks/sendgrid", [bounce], loop["private_key"], clock=loop["clock"].timestamp
    )
    customer_id = query(warehouse, "select customer_id from mail.sends where email = ?", [email])[0][0]
    later = AS_OF + timedelta(days=1)
    cart_id = new_cart(landing, "bounce", customer_id, later - timedelta(hours=2))
    assert run_job(later.isoformat())
    assert query(
        warehouse, "select suppression_reason from analytics.suppressions where email = ?", [email]
    ) == [("hard_bounce",)]
    decision = query(
        warehouse, "select decision, reason from eligibility.mail_candidates where trigger_key = ?", [cart_id]
    )
    assert decision == [("skip", "suppressed")]
