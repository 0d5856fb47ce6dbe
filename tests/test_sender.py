"""deliver() + SendGridTransport + ledger against the local server over real HTTP (no mocks)."""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from datetime import UTC, datetime

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sendgrid_fixtures import API_KEY, SHOP, mails, make_mail

from nachfass.core.mail import ledger
from nachfass.core.mail.message import MailJob, SendResult
from nachfass.core.mail.sender import DeliveryReport, TokenBucket, deliver
from nachfass.core.mail.transport import (
    OutboxTransport,
    SendGridAuthError,
    SendGridTransport,
    SendGridUnavailableError,
    backoff_delay,
    classify_status,
    error_message,
    rate_limit_wait,
)
from nachfass.devtools.sendgrid_server import run_sandbox

AS_OF = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def conn():
    c = duckdb.connect()
    ledger.ensure_ledger(c)
    yield c
    c.close()


def transport(url: str, key: str = API_KEY, **kw) -> SendGridTransport:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_cap", 0.2)
    kw.setdefault("timeout", 5.0)
    return SendGridTransport(key, url, shop=SHOP, **kw)


def rows(conn) -> dict[str, tuple]:
    return {
        r[0]: r[1:]
        for r in conn.execute(
            "select send_id, status, sg_message_id, reason, attempts from mail.sends"
        ).fetchall()
    }


def server_counts(sb) -> Counter:
    return Counter(m["payload"]["custom_args"]["send_id"] for m in sb.messages())


class ListLog:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, msg, *args):
        self.lines.append(msg % args if args else msg)


@pytest.mark.parametrize("reuse", [True, False], ids=["keepalive", "official-client"])
def test_all_sent_once_with_message_ids(conn, reuse):
    with run_sandbox(api_key=API_KEY) as sb:
        log = ListLog()
        report = deliver(
            conn,
            mails(60),
            transport(sb.url, connection_reuse=reuse),
            run_id="r1",
            as_of=AS_OF,
            chunk_size=25,
            concurrency=4,
            log=log,
        )
        assert (report.sent, report.failed, report.unknown, report.skipped) == (60, 0, 0, 0)
        by_id = {m["payload"]["custom_args"]["send_id"]: m["message_id"] for m in sb.messages()}
        got = rows(conn)
        assert len(got) == 60
        for send_id, (status, mid, reason, attempts) in got.items():
            assert status == "sent" and mid == by_id[send_id] and reason is None and attempts == 1
        assert any("60 sent" in line for line in log.lines)
        # Rerun: everything is in the ledger already, nothing goes out again.
        again = deliver(conn, mails(60), transport(sb.url), run_id="r2", as_of=AS_OF)
        assert again.skipped == 60 and again.sent == 0
        assert max(server_counts(sb).values()) == 1
    sql = "select email_hash, as_of, transport, run_id from mail.sends where send_id = ?"
    r = conn.execute(sql, [make_mail(0).send_id]).fetchone()
    assert r[0] == ledger.email_hash(" KUNDE0@Beispiel.example ")
    assert r[1] == datetime(2025, 3, 1, 9, 0) and r[2] == "sendgrid" and r[3] == "r1"


def test_storms_of_429_and_500_end_sent_exactly_once(conn):
    with run_sandbox(api_key=API_KEY, fail_rate_429=0.25, fail_rate_500=0.25, latency_ms=2) as sb:
        report = deliver(
            conn,
            mails(120),
            transport(sb.url, max_attempts=12),
            run_id="r1",
            as_of=AS_OF,
            chunk_size=40,
            concurrency=16,
        )
        assert report.sent == 120, report
        counts = server_counts(sb)
        assert len(counts) == 120 and set(counts.values()) == {1}
        stats = sb.stats()
        assert stats["status_429"] > 0 and stats["status_500"] > 0
        assert set(s for s, *_ in rows(conn).values()) == {"sent"}
        assert conn.execute("select sum(attempts) from mail.sends").fetchone()[0] > 120


def test_an_address_breaking_the_address_rule_fails_one_mail_rest_sent(conn):
    """The shared address rule (nachfass/core/addresses.py) refuses it before any request; SendGrid's
    own 400 answers are classified by the transport (tests below and test_sendgrid_server.py)."""
    batch = mails(5)
    batch[2] = make_mail(2, to_email="kaputt@localhost")
    with run_sandbox(api_key=API_KEY) as sb:
        report = deliver(conn, batch, transport(sb.url), run_id="r1", as_of=AS_OF, concurrency=2)
        assert (report.sent, report.failed) == (4, 1)
        status, _, reason, attempts = rows(conn)[batch[2].send_id]
        assert status == "failed" and attempts == 0 and "recipient address is not an email address" in reason
        assert len(sb.messages()) == 4


def test_payload_error_fails_without_request(conn):
    with run_sandbox(api_key=API_KEY) as sb:
        bad = make_mail(1, headers={"From": "x@evil.test"})
        report = deliver(conn, [make_mail(0), bad], transport(sb.url), run_id="r1", as_of=AS_OF)
        assert (report.sent, report.failed) == (1, 1)
        assert "reserved" in rows(conn)[bad.send_id][2]
        assert sb.stats()["requests"] == 1


def test_bad_key_raises_and_leaves_nothing_sent(conn):
    wrong = "SG.wrong-key-value-AAAAAAAAAAAAAAAAAAAAAAAA"
    with run_sandbox(api_key=API_KEY) as sb:
        log = ListLog()
        with pytest.raises(SendGridAuthError) as info:
            deliver(
                conn,
                mails(50),
                transport(sb.url, key=wrong),
                run_id="r1",
                as_of=AS_OF,
                chunk_size=20,
                concurrency=4,
                log=log,
            )
        text = f"{info.value} {info.value!r} {info.value.args}"
        assert "SENDGRID_API_KEY" in str(info.value)
        assert wrong not in text and "wrong-key" not in text
        assert sb.messages() == []
        # Claims of mails that were certainly not accepted are released: a corrected key sends them later.
        assert conn.execute("select count(*) from mail.sends").fetchone()[0] == 0
        dump = str(conn.execute("select * from mail.sends").fetchall()) + " ".join(log.lines)
        assert wrong not in dump
        report = deliver(conn, mails(50), transport(sb.url), run_id="r2", as_of=AS_OF)
        assert report.sent == 50


def test_key_never_in_repr_or_invalid_key_errors():
    t = transport("http://127.0.0.1:9", key=API_KEY)
    assert API_KEY not in repr(t) and API_KEY not in str(vars(t).get("host"))
    with pytest.raises(SendGridAuthError, match="SENDGRID_API_KEY") as info:
        SendGridTransport("SG.abc\r\nX-Evil: 1", "http://127.0.0.1:9", shop=SHOP)
    assert "SG.abc" not in str(info.value)
    with pytest.raises(SendGridAuthError, match="SENDGRID_API_KEY"):
        SendGridTransport("", "http://127.0.0.1:9", shop=SHOP)
    # outside ASCII: http.client's encoding error would hold the value; the setting is named instead
    with pytest.raises(SendGridAuthError, match="SENDGRID_API_KEY") as info:
        SendGridTransport("SG.schlüssel-ключ", "http://127.0.0.1:9", shop=SHOP)
    assert "ключ" not in str(info.value) and "schlüssel" not in str(info.value)


@pytest.mark.parametrize("fault", ["drop_after_accept_rate", "drop_rate"])
def test_dropped_connection_is_unknown_and_never_resent(conn, fault):
    with run_sandbox(api_key=API_KEY, **{fault: 0.3}) as sb:
        report = deliver(conn, mails(40), transport(sb.url), run_id="r1", as_of=AS_OF, concurrency=4)
        assert report.unknown > 0 and report.sent + report.unknown == 40
        stored_first = server_counts(sb)
        unknown = {k for k, v in rows(conn).items() if v[0] == "unknown"}
        assert all("not resent" in rows(conn)[k][2] for k in unknown)
        if fault == "drop_after_accept_rate":
            assert unknown <= set(stored_first)  # SendGrid has them; we do not know that
        else:
            assert not unknown & set(stored_first)  # lost, but never twice
        sb.set_faults(**{fault: 0.0})
        again = deliver(conn, mails(40), transport(sb.url), run_id="r2", as_of=AS_OF)
        assert again.skipped == 40 and again.sent == 0
        assert server_counts(sb) == stored_first


def test_read_timeout_is_unknown(conn):
    with run_sandbox(api_key=API_KEY, timeout_rate=1.0, timeout_s=1.5) as sb:
        report = deliver(conn, mails(3), transport(sb.url, timeout=0.5), run_id="r1", as_of=AS_OF)
        got = rows(conn)
        assert report.unknown == 3, (report, got)
        assert {v[0] for v in got.values()} == {"unknown"}
        assert all("timed out" in v[2] and "not resent" in v[2] for v in got.values()), got
        assert len(sb.messages()) == 3


def test_gateway_504_is_unknown_not_retried():
    assert classify_status(504) == "unknown" and classify_status(502) == "unknown"


def test_unreachable_raises_and_releases_claims(conn):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    with pytest.raises(SendGridUnavailableError, match="unreachable"):
        deliver(
            conn,
            mails(10),
            transport(f"http://127.0.0.1:{port}", max_attempts=3),
            run_id="r1",
            as_of=AS_OF,
            concurrency=2,
        )
    assert conn.execute("select count(*) from mail.sends").fetchone()[0] == 0


def test_crashed_rows_become_unknown_and_are_not_sent(conn):
    crashed = make_mail(0)
    assert ledger.claim(conn, crashed, run_id="dead", as_of=AS_OF, transport_name="sendgrid")
    with run_sandbox(api_key=API_KEY) as sb:
        report = deliver(conn, mails(3), transport(sb.url), run_id="r1", as_of=AS_OF)
        assert report.recovered == 1 and report.skipped == 1 and report.sent == 2
        assert rows(conn)[crashed.send_id][:3] == ("unknown", None, ledger.CRASH_REASON)
        assert crashed.send_id not in server_counts(sb)


def test_holdout_is_never_sent(conn):
    m = make_mail(0)
    job = MailJob(
        campaign=m.campaign,
        step=m.step,
        variant="holdout",
        trigger_key=m.trigger_key,
        customer_id=m.customer_id,
        email=m.to_email,
        first_name="Jörg",
        last_name=None,
        salutation=None,
        locale="de-DE",
        consent_policy="required",
        has_marketing_consent=True,
        experiment_id="exp1",
    )
    assert ledger.record_holdout(conn, job, "r0", AS_OF)
    assert not ledger.record_holdout(conn, job, "r0", AS_OF)
    with run_sandbox(api_key=API_KEY) as sb:
        report = deliver(conn, [m], transport(sb.url), run_id="r1", as_of=AS_OF)
        assert report.skipped == 1 and sb.messages() == []
    assert rows(conn)[m.send_id][0] == "holdout"


def test_ledger_claim_finish_semantics(conn):
    m = make_mail(0)
    assert ledger.claim(conn, m, run_id="r", as_of=AS_OF, transport_name="sendgrid")
    assert not ledger.claim(conn, m, run_id="r2", as_of=AS_OF, transport_name="sendgrid")
    assert ledger.finish(conn, m.send_id, SendResult("sent", "mid-1"))
    assert not ledger.finish(conn, m.send_id, SendResult("failed", error="late"))  # outcome is final
    assert ledger.release_many(conn, [m.send_id], run_id="r") == 0  # only 'sending' rows can be released
    dup = [make_mail(1), make_mail(1), make_mail(2)]
    assert [
        x.trigger_key for x in ledger.claim_many(conn, dup, run_id="r", as_of=AS_OF, transport_name="outbox")
    ] == ["cart-000001", "cart-000002"]
    assert ledger.recover_crashed(conn) == 2
    assert ledger.recover_crashed(conn) == 0
    ledger.ensure_ledger(conn)  # idempotent
    with pytest.raises(duckdb.ConstraintException):
        conn.execute("update mail.sends set status = 'bogus'")


def test_outbox_through_deliver(conn, tmp_path):
    report = deliver(conn, mails(5), OutboxTransport(tmp_path, shop=SHOP), run_id="r1", as_of=AS_OF)
    assert report.sent == 5 and report.transport == "outbox"
    assert len(list(tmp_path.glob("*.eml"))) == 5 and len(list(tmp_path.glob("*.json"))) == 5
    assert conn.execute("select distinct transport, sg_message_id from mail.sends").fetchall() == [
        ("outbox", None)
    ]


def test_rate_limit_is_respected(conn):
    with run_sandbox(api_key=API_KEY) as sb:
        t0 = time.monotonic()
        report = deliver(
            conn, mails(60), transport(sb.url), run_id="r1", as_of=AS_OF, concurrency=8, rate_limit_per_s=100
        )
        elapsed = time.monotonic() - t0
        assert report.sent == 60
        assert elapsed >= (60 - 10) / 100 * 0.9  # burst of 10, then 100/s
        assert report.as_metadata()["rate_limit_per_s"] == 100


def test_the_outbox_is_not_held_to_the_api_rate_limit(conn, tmp_path):
    # SendGrid's request rate is the send step's default (600/s); writing files is not bound by it. Held
    # to 1/s, these 40 mails would take 39 s.
    report = deliver(
        conn, mails(40), OutboxTransport(tmp_path, shop=SHOP), run_id="r1", as_of=AS_OF, rate_limit_per_s=1
    )
    assert report.sent == 40 and len(list(tmp_path.glob("*.eml"))) == 40
    assert report.rate_limit_per_s is None and report.as_metadata()["rate_limit_per_s"] is None
    assert report.seconds < 20


def test_report_metadata():
    r = DeliveryReport(transport="sendgrid", run_id="r", sent=9, failed=1, seconds=2.0)
    assert r.rate == 5.0 and r.as_metadata()["mails_per_s"] == 5.0


def test_logger_compatible(conn, caplog, tmp_path):
    with caplog.at_level(logging.INFO):
        deliver(
            conn,
            mails(2),
            OutboxTransport(tmp_path, shop=SHOP),
            run_id="r",
            as_of=AS_OF,
            log=logging.getLogger("nachfass.test"),
        )
    assert "2 sent" in caplog.text


# --- pure policy functions -------------------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=-5, max_value=10_000),
    base=st.floats(0.001, 10),
    cap=st.floats(0.01, 300),
    rand=st.floats(0, 1),
)
def test_backoff_bounded(attempt, base, cap, rand):
    d = backoff_delay(attempt, base=base, cap=cap, rand=rand)
    assert 0 <= d <= cap + 1e-9
    assert d <= base * 2 ** min(max(attempt, 0), 60) + 1e-9


@given(attempt=st.integers(0, 30), base=st.floats(0.01, 1), cap=st.floats(1, 60))
def test_backoff_ceiling_monotonic(attempt, base, cap):
    assert backoff_delay(attempt, base=base, cap=cap, rand=1.0) <= backoff_delay(
        attempt + 1, base=base, cap=cap, rand=1.0
    )


@given(status=st.integers(100, 599))
def test_classification_total_and_safe(status):
    kind = classify_status(status)
    assert kind in {"sent", "failed", "retry", "rate_limited", "auth", "unknown"}
    # Retrying is only allowed for answers that say the mail was not accepted.
    if kind in ("retry", "rate_limited"):
        assert status == 429 or (500 <= status < 600 and status not in (502, 504))
    if 200 <= status < 300:
        assert kind == "sent"
    if status in (400, 413):
        assert kind == "failed"


@given(
    reset=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.text(max_size=10)),
    now=st.floats(0, 2e9),
    max_wait=st.floats(0, 600),
)
def test_rate_limit_wait_bounded(reset, now, max_wait):
    w = rate_limit_wait({"X-RateLimit-Reset": str(reset)}, now, max_wait=max_wait)
    assert w is None or 0 <= w <= max_wait


@given(rate=st.floats(1, 1000), steps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200))
def test_token_bucket_never_exceeds_rate(rate, steps):
    clock = [0.0]
    bucket = TokenBucket(rate, burst=5, clock=lambda: clock[0], sleep=lambda s: None)
    granted_at = []
    for dt in steps:
        clock[0] += dt
        granted_at.append(clock[0] + bucket.reserve())
    # Over any prefix, grants by time t never exceed burst + rate * t.
    for i, t in enumerate(sorted(granted_at)):
        assert i + 1 <= 5 + rate * t + 1e-6


def test_error_message_formats():
    assert (
        error_message(b'{"errors":[{"message":"m","field":"f"},{"message":"n"}]}', 400)
        == "SendGrid 400: f: m; n"
    )
    assert error_message(b"oops", 500) == "SendGrid 500: oops"
    assert error_message(b"", 413) == "SendGrid 413"
