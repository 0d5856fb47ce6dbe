"""Large batches render in worker processes (nachfass.core.mail.render_pool): the same mails, in the same
order, as the renderer renders itself; a mail that cannot be rendered fails the batch with the renderer's
own error; a small batch never starts a worker."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pytest

from nachfass.core.links import LinkSigner
from nachfass.core.mail import steps
from nachfass.core.mail.candidates import CANDIDATE_COLUMNS
from nachfass.core.mail.message import make_send_id
from nachfass.core.mail.render import MailRenderer, RenderError, sample_jobs
from nachfass.core.mail.render_pool import RenderPool
from nachfass.core.mail.transport import OutboxTransport
from nachfass.core.render_share import SharedRenders
from nachfass.core.shop import load_shop_settings

KEY = "render-pool-test-key-0123456789ab"
TICK = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def _renderer(key: str = KEY) -> MailRenderer:
    return MailRenderer(load_shop_settings(), LinkSigner(key), now=TICK)


def _jobs(n: int):
    """n mails of every sample campaign/step/variant and language, each with its own trigger."""
    samples = sample_jobs(locales=("de-DE", "en-GB"))
    return [
        replace(
            job, trigger_key=f"{job.trigger_key}-{i}-{k}", customer_id=f"C{i}", email=f"kunde{i}@example.org"
        )
        for i in range(n)
        for k, job in enumerate(samples)
    ]


@pytest.fixture(scope="module")
def pool():
    with RenderPool(workers=2, min_batch=10, task_size=7) as pool:
        yield pool


def test_the_workers_render_the_mails_the_renderer_renders(pool):
    jobs = _jobs(3)
    later = TICK.replace(day=25)  # another tick of the same renderer: links and dates follow it
    for renderer in (_renderer(), _renderer().at(later), _renderer(KEY[::-1])):
        assert pool.render_batch(renderer, jobs) == renderer.render_batch(jobs)
    assert pool.pooled_mails == 3 * len(jobs)
    assert _renderer().render_batch(jobs) != _renderer().at(later).render_batch(jobs)


def test_a_mail_that_cannot_be_rendered_fails_the_batch_with_the_renderers_error(pool):
    jobs = _jobs(2)
    bad = len(jobs) - 3
    jobs[bad] = replace(jobs[bad], email="kein empfänger")
    renderer = _renderer()
    with pytest.raises(RenderError) as own:
        renderer.render_batch(jobs)
    with pytest.raises(RenderError) as pooled:
        pool.render_batch(renderer, jobs)
    assert str(pooled.value) == str(own.value) and "recipient address" in str(pooled.value)
    fields = ("campaign", "step", "variant", "template", "send_id")
    assert [getattr(pooled.value, f) for f in fields] == [getattr(own.value, f) for f in fields]
    assert pooled.value.campaign == jobs[bad].campaign


def test_a_small_batch_renders_here_without_starting_workers():
    jobs = _jobs(1)
    with RenderPool(workers=2, min_batch=len(jobs) + 1) as pool:
        assert pool.render_batch(_renderer(), jobs) == _renderer().render_batch(jobs)
        assert pool.pooled_mails == 0 and pool._executor is None


def test_a_backtests_shared_renders_go_through_the_pool(pool):
    jobs = _jobs(2)
    share = SharedRenders(("before", "after"), pool=pool)
    renderers = {side: _renderer() for side in share.sides}
    for side, renderer in renderers.items():
        share.register(side, renderer)
    before = pool.pooled_mails
    got = {side: share.at(side, renderers[side].at(TICK), TICK).render_batch(jobs) for side in share.sides}
    assert got["before"] == got["after"] == _renderer().render_batch(jobs)
    assert pool.pooled_mails - before == len(jobs)  # rendered once, by the workers
    assert share.counts["rendered"] == share.counts["taken"] == len(jobs)


def test_the_signing_key_crosses_to_a_worker_but_never_shows():
    signer = LinkSigner(KEY)
    copy = pickle.loads(pickle.dumps(signer))
    assert copy.same_key(signer) and KEY not in repr(copy)
    error = RenderError("cause", campaign="c", step="s", variant="v", template="t", send_id="x")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) and (again.campaign, again.send_id) == ("c", "x")


def _candidates_warehouse(jobs) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse whose mail_candidates decide ``jobs`` `send` (the render step's input)."""
    conn = duckdb.connect()
    conn.execute("create schema eligibility")
    columns = [
        c for c in CANDIDATE_COLUMNS if c not in ("has_marketing_consent", "payload", "decision", "reason")
    ]
    table = pa.table(
        {
            **{c: pa.array([getattr(j, c) for j in jobs], pa.string()) for c in columns},
            "has_marketing_consent": pa.array([j.has_marketing_consent for j in jobs], pa.bool_()),
            "payload": pa.array([json.dumps(j.payload) for j in jobs], pa.string()),
            "decision": pa.array(["send"] * len(jobs), pa.string()),
            "reason": pa.array(["due"] * len(jobs), pa.string()),
        }
    )
    conn.register("candidates", table)
    conn.execute(
        "create table eligibility.mail_candidates as "
        "select * exclude (payload), payload::json as payload from candidates"
    )
    conn.unregister("candidates")
    return conn


QUEUE = "select * exclude (rendered_at) from mail.outgoing order by send_id"


def test_the_render_step_queues_what_it_queues_without_workers(pool, monkeypatch):
    # several chunks, the workers rendering ahead of the one being written away
    monkeypatch.setattr(steps, "RENDER_CHUNK", 9)
    jobs = _jobs(3)
    queues = []
    for renderer in (_renderer(), pool.bind(_renderer())):
        conn = _candidates_warehouse(jobs)
        per_step, _ = steps.render_due_mails(conn, renderer, run_id="r", as_of=TICK, campaigns=[])
        assert sum(per_step.values()) == len(jobs)
        queues.append(conn.execute(QUEUE).fetchall())
    assert queues[0] == queues[1] and len(queues[1]) == len(jobs)


def test_a_mail_that_cannot_be_rendered_leaves_the_queue_empty(pool, monkeypatch):
    monkeypatch.setattr(steps, "RENDER_CHUNK", 9)
    jobs = _jobs(3)
    jobs[-2] = replace(jobs[-2], email="kein empfänger")  # in the last chunk
    conn = _candidates_warehouse(jobs)
    with pytest.raises(RenderError, match="recipient address"):
        steps.render_due_mails(conn, pool.bind(_renderer()), run_id="r", as_of=TICK, campaigns=[])
    assert conn.execute("select count(*) from mail.outgoing").fetchone() == (0,)


LEDGER = (
    "select send_id, campaign, step, trigger_key, customer_id, email, variant, status, reason, run_id, as_of "
    "from mail.sends order by send_id"
)


def test_a_replays_one_pass_sends_what_the_queued_steps_send(pool, monkeypatch, tmp_path):
    """A replay's tick renders and sends in one pass (no mail.outgoing queue): the same ledger rows and
    the same outbox files as the render step followed by the send step."""
    monkeypatch.setattr(steps, "RENDER_CHUNK", 9)
    jobs = _jobs(3)
    ledgers, files = [], []
    for one_pass in (False, True):
        conn = _candidates_warehouse(jobs)
        outbox = tmp_path / f"outbox-{one_pass}"
        transport = OutboxTransport(outbox, shop=load_shop_settings(), as_of=TICK)
        renderer = pool.bind(_renderer())
        if one_pass:
            outcome = steps.render_and_send_due_mails(
                conn, renderer, transport, run_id="r", as_of=TICK, campaigns=[]
            )
        else:
            steps.render_due_mails(conn, renderer, run_id="r", as_of=TICK, campaigns=[])
            outcome = steps.send_queued_mails(conn, transport, run_id="r", as_of=TICK, campaigns=[])
        assert outcome.report.sent == len(jobs)
        assert conn.execute("select count(*) from mail.outgoing").fetchone() == (0,)
        ledgers.append(conn.execute(LEDGER).fetchall())
        files.append({path.name: path.read_bytes() for path in outbox.iterdir()})
    assert ledgers[0] == ledgers[1] and len(ledgers[1]) == len(jobs)
    assert files[0] == files[1] and len(files[1]) == 2 * len(jobs)


def test_a_mail_that_cannot_be_rendered_stops_the_one_pass_and_leaves_no_claim_open(pool, monkeypatch):
    monkeypatch.setattr(steps, "RENDER_CHUNK", 9)
    jobs = _jobs(3)
    jobs[-2] = replace(jobs[-2], email="kein empfänger")  # in the last chunk
    conn = _candidates_warehouse(jobs)
    transport = OutboxTransport(None, shop=load_shop_settings(), as_of=TICK)
    with pytest.raises(RenderError, match="recipient address"):
        steps.render_and_send_due_mails(
            conn, pool.bind(_renderer()), transport, run_id="r", as_of=TICK, campaigns=[]
        )
    statuses = dict(conn.execute("select status, count(*) from mail.sends group by 1").fetchall())
    assert "sending" not in statuses  # every claimed mail was settled before the error went up
    failing = make_send_id(jobs[-2].campaign, jobs[-2].step, jobs[-2].trigger_key)
    assert conn.execute("select count(*) from mail.sends where send_id = ?", [failing]).fetchone() == (0,)
