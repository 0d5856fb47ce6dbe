"""The two sides of a backtest render a mail they send alike once (nachfass.core.render_share): each side
gets exactly the mail its own renderer renders, a campaign whose settings differ is rendered by each side,
and a mail that cannot be rendered fails both."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nachfass.core.campaigns import load_campaigns
from nachfass.core.links import LinkSigner
from nachfass.core.mail.message import MailJob, RenderedMail
from nachfass.core.mail.render import MailRenderer, RenderError, sample_jobs
from nachfass.core.render_share import SharedRenders
from nachfass.core.shop import load_shop_settings

KEY = "render-share-test-key-0123456789"
TICK = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
SIDES = ("before", "after")


def _renderer(campaigns=None, key: str = KEY) -> MailRenderer:
    return MailRenderer(load_shop_settings(), LinkSigner(key), now=TICK, campaigns=campaigns)


def _jobs(n: int) -> list[MailJob]:
    """n mails of every sample campaign/step/variant, each to another customer."""
    samples = sample_jobs(locales=("de-DE", "en-GB"))
    return [
        replace(job, trigger_key=f"{job.trigger_key}-{i}", customer_id=f"C{i}", email=f"kunde{i}@example.org")
        for i in range(n)
        for job in samples
    ]


def _render_both(share: SharedRenders, renderers: dict[str, MailRenderer], jobs: dict[str, list[MailJob]]):
    """Both sides at once, each in its thread, as a backtest's sides run."""
    for side in SIDES:
        share.register(side, renderers[side])
    got: dict[str, list[RenderedMail] | BaseException] = {}
    start = threading.Barrier(len(SIDES))

    def run(side: str) -> None:
        start.wait()
        try:
            got[side] = share.at(side, renderers[side].at(TICK), TICK).render_batch(jobs[side])
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            got[side] = exc

    threads = [threading.Thread(target=run, args=(side,)) for side in SIDES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return got


def test_a_mail_both_sides_send_alike_is_rendered_once_and_is_what_each_side_renders() -> None:
    renderers = {side: _renderer() for side in SIDES}
    jobs = _jobs(6)
    # the after side sends a cart reminder with another payload (a changed segment) and one mail fewer
    changed = next(i for i, job in enumerate(jobs) if job.campaign == "abandoned_cart")
    after = list(jobs)
    after[changed] = replace(jobs[changed], payload={**jobs[changed].payload, "total_amount": "1.00"})
    del after[-1]
    share = SharedRenders(SIDES)
    got = _render_both(share, renderers, {"before": jobs, "after": after})

    own = _renderer()
    assert got["before"] == own.render_batch(jobs)
    assert got["after"] == own.render_batch(after)
    assert got["after"][changed] != got["before"][changed]
    # each mail both send alike rendered by one side, taken by the other; the two that differ by each own
    alike = len(jobs) - 2
    assert share.counts["taken"] == alike
    assert share.counts["rendered"] == alike + 3
    assert share.counts["own"] == 0


def test_a_campaign_whose_settings_differ_is_rendered_by_each_side(tmp_path: Path) -> None:
    campaigns = load_campaigns()
    other = dict(campaigns)
    cart = campaigns["abandoned_cart"]
    other["abandoned_cart"] = cart.model_copy(update={"priority": (cart.priority or 1) + 1})
    renderers = {"before": _renderer(campaigns), "after": _renderer(other)}
    jobs = _jobs(2)
    share = SharedRenders(SIDES)
    got = _render_both(share, renderers, {side: jobs for side in SIDES})

    carts = sum(job.campaign == "abandoned_cart" for job in jobs)
    assert carts and share.counts["own"] == 2 * carts
    assert share.counts["taken"] == len(jobs) - carts
    assert got["before"] == got["after"] == _renderer().render_batch(jobs)


def test_another_link_key_shares_nothing() -> None:
    renderers = {"before": _renderer(), "after": _renderer(key=KEY[::-1])}
    jobs = _jobs(1)
    share = SharedRenders(SIDES)
    got = _render_both(share, renderers, {side: jobs for side in SIDES})
    assert share.counts["taken"] == 0
    assert got["after"] == renderers["after"].render_batch(jobs)


@pytest.mark.parametrize("bad_at", [0, -1])
def test_a_mail_that_cannot_be_rendered_fails_both_sides(bad_at: int) -> None:
    jobs = _jobs(2)
    jobs[bad_at] = replace(jobs[bad_at], email="kein empfänger")
    share = SharedRenders(SIDES)
    got = _render_both(share, {side: _renderer() for side in SIDES}, {side: jobs for side in SIDES})
    for side in SIDES:
        assert isinstance(got[side], RenderError), got[side]
        assert "recipient address" in str(got[side])


def test_a_mail_only_one_side_sends_is_held_only_until_the_other_side_moves_on() -> None:
    """A month of ticks must not pile up the mails one rule set sends and the other never takes."""
    renderers = {side: _renderer() for side in SIDES}
    jobs = _jobs(1)
    share = SharedRenders(SIDES)
    for side in SIDES:
        share.register(side, renderers[side])
    later = TICK.replace(hour=10)
    share.at("after", renderers["after"].at(TICK), TICK).render_batch(jobs[:1])
    share.at("before", renderers["before"].at(TICK), TICK).render_batch(jobs[1:])
    assert share.held == len(jobs)  # each side's mails held for the other, which may still take them
    share.at("after", renderers["after"].at(later), later)
    assert share.held == 1  # after has gone past TICK: only its own mail is held, before may still take it
    # before, behind, takes after's mail and renders one more of TICK, which no side would take: not held
    mails = share.at("before", renderers["before"].at(TICK), TICK).render_batch(jobs[:2])
    assert mails == renderers["before"].render_batch(jobs[:2])
    assert share.held == 0 and share.counts["taken"] == 1
    share.at("before", renderers["before"].at(later), later)
    assert share.held == 0
