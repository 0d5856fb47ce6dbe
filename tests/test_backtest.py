"""`nachfass backtest` and backlog rollout, end to end on real dbt, DuckDB and two real replays.

Five customers each have a delivered order whose review request fell due 1–5 days before Tuesday
2026-11-24 10:00 UTC; a sixth one's falls due on Wednesday at 12:00. The changed rules take the review
request live on Tuesday at 23:00 Berlin time and drip its backlog, 2 a day, oldest first. Replayed daily
Tuesday to Friday at 10:00 UTC (review requests go out daily at 09:00 shop time):
- current rules: the five backlog mails on Tuesday, the sixth on Thursday;
- changed rules: nothing on Tuesday (not live yet), the two oldest on Wednesday, the next two and the
  sixth (not backlog) on Thursday, the last on Friday.
The estimates' arithmetic is checked against scipy's Wilson interval and Student's t.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from scipy import stats

from nachfass.cli.main import main
from nachfass.core.backtest import (
    BacktestError,
    estimate,
    history_rates,
    rates_for,
    run_backtest,
    wilson_interval,
)
from nachfass.core.schema import ensure_erasure_schema
from nachfass.privacy.copies import registered
from nachfass.privacy.erasure import salted_hash
from tests.dbt_helpers import copy_dbt_project, days, hours, write_exports
from tests.test_scenarios import World

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # Tuesday
LIVE_FROM = "2026-11-24T23:00:00+01:00"


def _query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return conn.execute(sql, params or []).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def backtest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, World, str]:
    root = tmp_path_factory.mktemp("backtest")
    world = World()
    for age in range(1, 6):  # review requests due 1 … 5 days before T0 (delivered 7 days before that)
        cid, _ = world.customer(f"review_{age}")
        delivered = T0 - days(7 + age)
        world.order(cid, delivered - days(3), status="delivered", shipped_at=delivered - days(1),
                    delivered_at=delivered)  # fmt: skip
    cid, _ = world.customer("review_new")
    delivered = T0 + days(1) + hours(2) - days(7)  # due Wednesday 12:00 UTC: after going live
    world.order(cid, delivered - days(3), status="delivered", shipped_at=delivered - days(1),
                delivered_at=delivered)  # fmt: skip
    # erased live before the backtest, still in the shop's exports: an order thank-you due Wednesday
    cid, erased_email = world.customer("erased")
    world.order(cid, T0 + days(1) - hours(1))
    write_exports(root / "landing", world.rows)
    history = root / "history.duckdb"  # the live warehouse: one erasure, no mail performance yet
    conn = duckdb.connect(str(history))
    try:
        ensure_erasure_schema(conn)
        salt = conn.execute("select salt from mail.erasure_salt").fetchone()[0]
        conn.execute("insert into mail.erasures values (?, ?, false)", [salted_hash(salt, erased_email), T0])
    finally:
        conn.close()

    changed = copy_dbt_project(root / "changed")
    review_yml = changed / "models" / "segments" / "review_request.yml"
    text = review_yml.read_text(encoding="utf-8")
    anchor = "          exit_on_order: false\n"
    assert anchor in text
    review_yml.write_text(
        text.replace(
            anchor,
            anchor + f"          rollout:\n            live_from: '{LIVE_FROM}'\n"
            "            backlog: drip\n            drip_per_day: 2\n            drip_order: oldest\n",
            1,
        ),
        encoding="utf-8",
    )
    workdir = root / "work"
    markdown = root / "backtest.md"
    progress = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(progress):
        mp.setenv("NACHFASS_DATA", str(root / "data"))  # where the backtest records its copies
        code = main([
            "backtest", "--rules", str(changed), "--from", T0.isoformat(), "--to", (T0 + days(3)).isoformat(),
            "--every", "1d", "--landing", str(root / "landing"), "--workdir", str(workdir),
            "--history", str(history), "--out", str(markdown),
        ])  # fmt: skip
    (root / "progress.txt").write_text(progress.getvalue(), encoding="utf-8")  # what it printed as it went
    # the erasure will find the copies in the folder the marketer named (nachfass/privacy/copies.py)
    assert registered(root / "data").folders == (workdir.resolve(),)
    assert code == 0, progress.getvalue()[-3000:]
    return workdir / "results.duckdb", world, markdown.read_text(encoding="utf-8")


def _review_sends(results: Path, side: str) -> list[tuple[str, datetime]]:
    return _query(
        results,
        "select customer_id, as_of from backtest.sends where side = ? and campaign = 'review_request' "
        "and status = 'sent' order by as_of, customer_id",
        [side],
    )


@pytest.mark.slow
@pytest.mark.clock
def test_current_rules_send_the_whole_backlog_at_once(backtest) -> None:
    results, world, _ = backtest
    tuesday, thursday = T0.replace(tzinfo=None), (T0 + days(2)).replace(tzinfo=None)
    expected = sorted((world.ids[f"review_{age}"], tuesday) for age in range(1, 6))
    assert _review_sends(results, "before") == [*expected, (world.ids["review_new"], thursday)]


def test_the_mails_are_recorded_but_not_written_unless_asked(backtest) -> None:
    """Without --mail-files each side renders and composes its mails and records them in its ledger as a
    replay into an outbox does, but writes no file (at 100,000 customers ~1 GB a day and side); the
    share-models test below writes them with mail_files=True and compares them."""
    results, _, _ = backtest
    workdir = results.parent
    sent = _query(
        results, "select side, count(*) from backtest.sends where status = 'sent' group by 1 order by 1"
    )
    assert [side for side, n in sent if n > 0] == ["after", "before"]
    assert not [p for p in workdir.rglob("*") if p.suffix == ".eml" or p.name == "outbox"]


@pytest.mark.slow
@pytest.mark.clock
def test_the_drip_sends_two_backlog_mails_a_day_oldest_first(backtest) -> None:
    results, world, _ = backtest
    day = [(T0 + days(n)).replace(tzinfo=None) for n in range(4)]
    expected = [
        (world.ids["review_5"], day[1]),
        (world.ids["review_4"], day[1]),
        (world.ids["review_3"], day[2]),
        (world.ids["review_2"], day[2]),
        (world.ids["review_new"], day[2]),  # not backlog: not counted against the drip
        (world.ids["review_1"], day[3]),
    ]
    assert _review_sends(results, "after") == sorted(expected, key=lambda row: (row[1], row[0]))
    # Tuesday the campaign was not live yet: every due review request waited for live_from
    tuesday = _query(
        results,
        "select customer_id, decision, reason from backtest.decisions where side = 'after' "
        "and campaign = 'review_request' and as_of = ? order by customer_id",
        [day[0]],
    )
    assert tuesday == sorted((world.ids[f"review_{a}"], "defer", "not_live_yet") for a in range(1, 6))


@pytest.mark.slow
@pytest.mark.clock
def test_summary_changes_and_markdown_say_the_same(backtest) -> None:
    results, world, markdown = backtest
    summary = {
        side: row
        for side, *row in _query(
            results,
            "select side, mails, customers, deferrals, backlog_dripped, backlog_skipped, expiries "
            "from backtest.summary where campaign = 'review_request' and step = '1'",
        )
    }
    # mails, customers, deferrals (triggers ever deferred), backlog dripped, backlog skipped, expiries
    assert summary["before"] == [6, 6, 0, 0, 0, 0]
    assert summary["after"] == [6, 6, 5, 3, 0, 0]
    moved = _query(
        results,
        "select customer_id, before, after from backtest.changes where kind = 'moved' "
        "and campaign = 'review_request' order by customer_id",
    )
    assert [row[0] for row in moved] == sorted(world.ids[f"review_{a}"] for a in range(1, 6))
    assert ("sent 2026-11-24 10:00", "sent 2026-11-27 10:00") in {row[1:] for row in moved}
    assert _query(
        results, "select count(*) from backtest.changes where kind <> 'moved' and campaign = 'review_request'"
    ) == [(0,)]
    assert "| review_request | 1 | 6 → 6 | 6 → 6 | 0 → 0 | **0 → 5** |" in markdown
    assert "No history" in markdown
    # every customer-week with mail is counted once per side
    per_week = dict(
        _query(results, "select side, sum(customer_weeks) from backtest.mails_per_week group by 1")
    )
    customers = dict(
        _query(
            results,
            "select side, count(distinct (customer_id, date_trunc('week', as_of))) from backtest.sends "
            "where status = 'sent' group by 1",
        )
    )
    assert per_week == customers


@pytest.mark.slow
@pytest.mark.clock
def test_a_person_the_live_warehouse_erased_gets_no_simulated_mail(backtest) -> None:
    """Both sides carry the history warehouse's erasures: the thank-you due Wednesday is skipped as
    suppressed (until it expires), as live, instead of being counted as a mail the rules would send."""
    results, world, _ = backtest
    erased = world.ids["erased"]
    assert _query(results, "select count(*) from backtest.sends where customer_id = ?", [erased]) == [(0,)]
    decisions = _query(
        results,
        "select distinct side, decision, reason from backtest.decisions "
        "where customer_id = ? and campaign = 'order_thanks'",
        [erased],
    )
    assert {(side, "skip", "suppressed") for side in ("before", "after")} <= set(decisions)
    assert {decision for _, decision, _ in decisions} == {"skip"}  # later: expired
    # the same erasures on both sides, which no tick writes: the suppressions are computed once a tick
    # for both (nachfass.core.tick_share), and still suppress on both
    progress = (results.parent.parent / "progress.txt").read_text(encoding="utf-8")
    shared = next(line for line in progress.splitlines() if "computed once a tick for both sides" in line)
    assert "int_suppressions" in shared.split(": ", 1)[1].split(", ")


# ---- the estimates' arithmetic ----------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (37, 512), (1, 1), (499, 1000)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    low, high = wilson_interval(k, n)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert math.isclose(low, ci.low, abs_tol=1e-9) and math.isclose(high, ci.high, abs_tol=1e-9)


def test_estimates_scale_the_history_rates(tmp_path: Path) -> None:
    history = tmp_path / "history.duckdb"
    revenue_b = [0.0] * 36 + [40.0, 60.0, 80.0, 20.0]
    conn = duckdb.connect(str(history))
    try:
        conn.execute("create schema analytics")
        conn.execute(
            "create table analytics.mail_performance (campaign varchar, variant varchar, "
            "send_status varchar, is_opened boolean, is_clicked boolean, is_converted boolean, "
            "attributed_revenue double)"
        )
        rows = [
            ("cross_sell", "control", "sent", i < 8, i < 3, i < 1, 50.0 if i < 1 else None) for i in range(20)
        ]
        rows += [("cross_sell", "b", "sent", i < 20, i < 10, r > 0, r) for i, r in enumerate(revenue_b)]
        rows += [("cross_sell", "b", "failed", True, True, True, 999.0)]  # not sent: not history
        conn.executemany("insert into analytics.mail_performance values (?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        conn.close()
    rates = history_rates(history)
    basis, b = rates_for(rates, "cross_sell", "b")
    assert basis == "cross_sell/b" and (b.mails, b.opens, b.clicks, b.conversions) == (40, 20, 10, 4)
    # control has 20 < 30 mails of its own: the campaign's 60 mails decide
    basis, whole = rates_for(rates, "cross_sell", "control")
    assert basis == "cross_sell" and (whole.mails, whole.opens, whole.conversions) == (60, 28, 5)
    all_revenue = [50.0] + [0.0] * 19 + revenue_b
    assert math.isclose(whole.revenue_mean, sum(all_revenue) / 60)
    assert math.isclose(whole.revenue_sd, stats.tstd(all_revenue))
    assert rates_for(rates, "review_request", "control") is None

    figures = estimate(200, b)
    assert math.isclose(figures["clicks"].value, 50.0)  # 200 × 10/40
    ci = stats.binomtest(10, 40).proportion_ci(method="wilson")
    assert math.isclose(figures["clicks"].low, 200 * ci.low) and math.isclose(
        figures["clicks"].high, 200 * ci.high
    )
    mean, sem = sum(revenue_b) / 40, stats.sem(revenue_b)
    low, high = stats.t.interval(0.95, 39, loc=mean, scale=sem)
    assert math.isclose(figures["revenue"].value, 200 * mean)
    assert math.isclose(figures["revenue"].low, 200 * max(0.0, low))
    assert math.isclose(figures["revenue"].high, 200 * high)


def test_a_history_held_by_a_running_job_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    history = tmp_path / "live.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect({str(history)!r}); "
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BacktestError, match="one writer"):
            history_rates(history)
    finally:
        holder.kill()
        holder.wait()


def test_no_history_means_no_rates(tmp_path: Path) -> None:
    assert history_rates(tmp_path / "missing.duckdb") == {}
    duckdb.connect(str(tmp_path / "empty.duckdb")).close()
    assert history_rates(tmp_path / "empty.duckdb") == {}


# ---- the win-back wave of docs/marketers.md, as a marketer would add it ------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs" / "marketers.md"


def _docs_block(first_line: str) -> str:
    """The fenced code block of docs/marketers.md that starts with ``first_line``."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index(first_line + "\n")
    return text[start + len(first_line) + 1 : text.index("```", start)]


@pytest.mark.slow  # not in CI's shifted-clock pass: the backtest fixture's three tests cover the clock there
def test_the_docs_win_back_wave_drips_the_dormant_base_best_customers_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nachfass.devtools.datagen.generate import generate_exports

    landing = tmp_path / "landing"
    generate_exports(landing, customers=300, seed=5, as_of=T0 + days(3))
    changed = copy_dbt_project(tmp_path / "changed")
    segment_yml = _docs_block("# dbt/models/segments/winback_wave.yml")
    assert "drip_per_day: 400" in segment_yml
    segments = changed / "models" / "segments"
    # the docs' wave, with a drip that fits 300 customers: 4 a day
    (segments / "winback_wave.yml").write_text(
        segment_yml.replace("drip_per_day: 400", "drip_per_day: 4"), encoding="utf-8"
    )
    (segments / "winback_wave.sql").write_text(
        _docs_block("-- dbt/models/segments/winback_wave.sql"), encoding="utf-8"
    )
    templates = tmp_path / "templates"
    shutil.copytree(REPO_ROOT / "mail_templates", templates)
    for lang in ("de", "en"):
        subjects = templates / lang / "subjects.yaml"
        block = _docs_block(f"# mail_templates/{lang}/subjects.yaml")
        subjects.write_text(subjects.read_text(encoding="utf-8") + block, encoding="utf-8")
    monkeypatch.setenv("NACHFASS_TEMPLATES", str(templates))
    monkeypatch.setenv("NACHFASS_DATA", str(tmp_path / "data"))
    workdir = tmp_path / "work"
    code = main([
        "backtest", "--rules", str(changed), "--from", T0.isoformat(), "--to", (T0 + days(3)).isoformat(),
        "--every", "1d", "--landing", str(landing), "--workdir", str(workdir),
        "--history", str(tmp_path / "no-history.duckdb"), "--out", str(tmp_path / "wave.md"),
    ])  # fmt: skip
    assert code == 0
    results = workdir / "results.duckdb"
    assert _query(results, "select count(*) from backtest.decisions where campaign = 'winback_wave' "
                  "and side = 'before'") == [(0,)]  # fmt: skip
    rows = _query(
        results,
        "select as_of, decision, reason, customer_id from backtest.decisions "
        "where side = 'after' and campaign = 'winback_wave' order by as_of, customer_id",
    )
    ticks = sorted({row[0] for row in rows})
    assert ticks == [(T0 + days(n)).replace(tzinfo=None) for n in range(4)]
    first = [row for row in rows if row[0] == ticks[0]]
    # Tuesday the wave is not live yet: every row waits for live_from (or is past its expiry already)
    reasons = {(d, r) for _, d, r, _ in first}
    assert ("defer", "not_live_yet") in reasons and reasons <= {
        ("defer", "not_live_yet"),
        ("skip", "expired"),
    }
    after = workdir / "after" / "warehouse.duckdb"
    revenue = dict(
        _query(
            after,
            "select customer_id, sum(total_amount) filter (where not is_cancelled_or_returned) "
            "from staging.stg_orders group by 1",
        )
    )
    for tick in ticks[1:]:
        sent = [c for t, d, _, c in rows if t == tick and d == "send"]
        waiting = [c for t, _, r, c in rows if t == tick and r == "backlog_drip"]
        assert len(sent) == 4 and waiting, f"{tick}: {len(sent)} sent, {len(waiting)} waiting"
        assert min(revenue[c] or 0 for c in sent) >= max(revenue[c] or 0 for c in waiting)


@pytest.mark.slow
def test_the_report_shows_both_rule_sets_side_by_side(backtest, tmp_path: Path) -> None:
    import json
    import re

    from nachfass.core.report import build_report

    results, _, _ = backtest
    # the after side's replay warehouse has the analytics a report needs (built at the first tick)
    page = build_report(results.parent / "after" / "warehouse.duckdb", tmp_path, backtest=results)
    text = page.read_text(encoding="utf-8")
    assert 'id="chart-backtest"' in text and 'id="backtest-empty"' not in text
    assert "backtest.summary <small>" in text and "backtest.changes <small>" in text
    # the chart's data: review_request's six mails on both sides, named by rule set
    figure = json.loads(re.search(r'Plotly\.newPlot\(\s*"chart-backtest",\s*(\[.*?\]),\s*\{', text, re.S)[1])
    mails = {trace["name"]: dict(zip(trace["x"], trace["y"], strict=True)) for trace in figure}
    assert mails["current rules"]["review_request 1"] == 6
    assert mails["changed rules"]["review_request 1"] == 6


@pytest.mark.slow
def test_a_side_whose_rules_fail_stops_the_backtest_with_its_own_error(tmp_path: Path) -> None:
    """The sides replay at once: the side that fails names the error (not the side it cancelled), and no
    comparison is written."""
    world = World()
    cid, _ = world.customer("someone")
    world.order(cid, T0 - days(3), status="delivered", shipped_at=T0 - days(2), delivered_at=T0 - days(1))
    write_exports(tmp_path / "landing", world.rows)
    broken = copy_dbt_project(tmp_path / "broken")
    sql = broken / "models" / "segments" / "review_request.sql"
    sql.write_text(sql.read_text(encoding="utf-8").replace("from delivered", "from no_such_table", 1))
    with pytest.raises(BacktestError, match=r"the after replay failed: dbt build failed") as failure:
        run_backtest(
            rules=str(broken),
            landing=tmp_path / "landing",
            start=T0,
            end=T0 + days(1),
            every=days(1),
            workdir=tmp_path / "work",
            history=None,
            progress=lambda _line: None,
        )
    assert "no_such_table" in str(failure.value) and "cancelled before the tick" not in str(failure.value)
    assert "\x1b[" not in str(failure.value), "dbt's colour codes would garble the message in logs"
    assert not (tmp_path / "work" / "results.duckdb").exists()


@pytest.mark.slow
def test_models_shared_by_both_rule_sets_change_no_decision(tmp_path: Path) -> None:
    """The sides of an in-memory backtest compute the models both rule sets share once a tick
    (nachfass.core.tick_share). With the cart delay changed from 60 to 30 minutes, the order and cart models
    are shared, the cart reminders' segment and mail_candidates are not, and every decision, send and
    table the sides leave, and every mail, is the same as when each side computes and renders everything
    itself, every model whole at every tick (no int_carts updated from the tick before)."""
    world = World()
    for n in range(4):  # carts left 30 … 3 h 30 before the end: the changed rule reminds them earlier
        cid, _ = world.customer(f"cart_{n}")
        world.cart(cid, T0 + hours(0.5 + n))
    cid, _ = world.customer("buyer")
    world.order(cid, T0 + hours(2))  # an order thank-you in the period
    cid, _ = world.customer("reviewer")
    # its review request falls due at 07:30, after the build before the ticks (07:00): the daily tick
    # (08:00) builds the segment with it, the 15-minute ticks after it read that build
    delivered = T0 - days(7) - hours(2.5)
    world.order(cid, delivered - days(3), status="delivered", shipped_at=delivered - days(1),
                delivered_at=delivered)  # fmt: skip
    write_exports(tmp_path / "landing", world.rows)
    changed = copy_dbt_project(tmp_path / "changed")
    cart_yml = changed / "models" / "segments" / "abandoned_cart.yml"
    text = cart_yml.read_text(encoding="utf-8")
    assert "delay_minutes: 60 " in text
    cart_yml.write_text(text.replace("delay_minutes: 60 ", "delay_minutes: 30 ", 1), encoding="utf-8")

    lines: dict[bool, list[str]] = {True: [], False: []}
    for share in (True, False):
        # six ticks, 07:00 … 12:00 UTC: the daily schedule fires at the second (09:00 Berlin), so the
        # daily campaigns' segments are built at an even tick and read at the odd ones after it, and the
        # last tick's shared tables are in the even ticks' copy (tick_share keeps one copy per parity)
        run_backtest(
            rules=str(changed),
            landing=tmp_path / "landing",
            start=T0 - hours(3),
            end=T0 + hours(2),
            every=hours(1),
            workdir=tmp_path / f"share_{share}",
            history=None,
            progress=lines[share].append,
            in_memory=True,
            share_models=share,
            mail_files=True,
            tick_deltas=share,  # without sharing, every tick model computed whole at every tick too
        )
    shared_line = next(line for line in lines[True] if "computed once a tick for both sides" in line)
    shared = set(shared_line.split(": ", 1)[1].split(", "))
    # int_suppressions too: it reads the erasures beside the ledger, the same on both sides (copies of one
    # prepared warehouse) and written by no tick
    assert {
        "int_orders", "int_carts", "int_product_recommendations", "order_thanks", "int_suppressions"
    } <= shared  # fmt: skip
    assert not shared & {"abandoned_cart", "mail_candidates", "stg_sends", "int_mail_engagement"}
    assert not any("computed once a tick" in line for line in lines[False])
    # the carts, orders, customers, order gaps and consent states updated from tick to tick
    # (replay.build_tick_model) with sharing, computed whole without
    updated = next(line for line in lines[True] if "updated from tick to tick" in line)
    assert set(updated.split(": ", 1)[1].split(", ")) == {
        "int_carts",
        "stg_customers",
        "stg_orders",
        "int_orders",
        "int_customer_order_gaps",
        "int_consent_state",
    }
    assert not any("updated from tick to tick" in line for line in lines[False])
    # the mail both sides send alike (the review request) rendered once; the cart reminders, whose
    # campaign settings differ, by each side
    rendered = next(line for line in lines[True] if "mails rendered:" in line)
    assert rendered.endswith("as the other had rendered them: 1"), rendered
    assert not any("mails rendered:" in line for line in lines[False])

    def results(share: bool, sql: str) -> list[tuple]:
        return _query(tmp_path / f"share_{share}" / "results.duckdb", sql)

    decisions = "select * from backtest.decisions order by all"
    sends = (
        "select side, campaign, step, trigger_key, customer_id, variant, status, reason, as_of "
        "from backtest.sends order by all"
    )
    for sql in (decisions, sends):
        assert results(True, sql) == results(False, sql)
    review_decisions = results(
        True,
        "select distinct as_of, decision from backtest.decisions where campaign = 'review_request' "
        "and side = 'before' order by all",
    )
    assert [(moment.hour, decision) for moment, decision in review_decisions][:2] == [
        (8, "send"),
        (9, "skip"),
    ], review_decisions  # sent at the daily tick, then known as sent
    cart_sends = results(
        True,
        "select side, min(as_of) from backtest.sends where campaign = 'abandoned_cart' group by 1 order by 1",
    )
    assert len(cart_sends) == 2 and cart_sends[0][1] < cart_sends[1][1], (
        "after (30 min) reminds before before"
    )
    # both warehouses left whole (the shared tables copied into the after side's, the views pinned), and
    # the same mails in the outboxes
    for side in ("before", "after"):
        for table in ("intermediate.int_carts", "intermediate.int_orders", "segments.abandoned_cart",
                      "staging.stg_sends"):  # fmt: skip
            # recorded_at: the wall clock of the ledger row, for audit only
            wall_clock = " exclude (recorded_at)" if table == "staging.stg_sends" else ""
            sql = f"select *{wall_clock} from {table} order by all"
            got = _query(tmp_path / "share_True" / side / "warehouse.duckdb", sql)
            assert got, (side, table)
            assert got == _query(tmp_path / "share_False" / side / "warehouse.duckdb", sql), (side, table)
        outboxes = [tmp_path / f"share_{share}" / side / "outbox" for share in (True, False)]
        mails = [{p.name: p.read_bytes() for p in outbox.rglob("*.json")} for outbox in outboxes]
        assert mails[0] and mails[0] == mails[1], side


def _fail_from(project: Path, model: str, moment: datetime, message: str) -> None:
    """Make ``model`` of ``project`` fail at every as_of from ``moment`` on (not in the build before the
    ticks, which is as of the period's start)."""
    path = next(project.joinpath("models").rglob(f"{model}.sql"))
    text = path.read_text(encoding="utf-8")
    fails = (
        f"where case when {{{{ as_of() }}}} >= {{{{ utc_timestamp_literal('{moment.isoformat()}') }}}}"
        f" then error('{message}') else true end"
    )
    # the final select, plain or the segments' (macro segment_rows: a select from final, too)
    ending = next(
        e for e in ("select * from final\n", "{{ segment_rows('final', campaign) }}\n") if e in text
    )
    text = text.replace(ending, f"{ending}{fails}\n")
    # a model updated from tick to tick (replay.build_tick_model) fails in its update too
    text = re.sub(r"(left join final on [^\n]+\n)", lambda match: f"{match.group(1)}{fails}\n", text)
    path.write_text(text, encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["shared", "after"])
def test_a_model_failing_mid_backtest_stops_both_sides_and_names_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A model that fails at the third tick, either one both rule sets share (computed once for both,
    tick_share) or one only the changed rules have: the backtest stops with the cause and the side, the
    other side is cancelled rather than left waiting, no results are written and the locks are free."""
    import threading

    from nachfass.core import file_lock

    world = World()
    for n in range(3):
        cid, _ = world.customer(f"cart_{n}")
        world.cart(cid, T0 - hours(2 - n))
    if where == "shared":  # a cart filled after the second tick: the third tick's update of int_carts has a
        cid, _ = world.customer("cart_late")  # row to fail on (replay.build_tick_model)
        world.cart(cid, T0 + hours(1.5))
    write_exports(tmp_path / "landing", world.rows)
    changed = copy_dbt_project(tmp_path / "changed")
    cart_yml = changed / "models" / "segments" / "abandoned_cart.yml"
    text = cart_yml.read_text(encoding="utf-8")
    cart_yml.write_text(text.replace("delay_minutes: 60 ", "delay_minutes: 30 ", 1), encoding="utf-8")
    if where == "shared":  # the same change in the current rules and in the changed ones: still shared
        current = copy_dbt_project(tmp_path / "current")
        for project in (current, changed):
            _fail_from(project, "int_carts", T0 + hours(2), "boom in the carts")
        monkeypatch.setenv("NACHFASS_DBT_PROJECT", str(current))
    else:  # only the changed rules' own cart reminders fail
        _fail_from(changed, "abandoned_cart", T0 + hours(2), "boom in the reminders")
    lines: list[str] = []
    workdir = tmp_path / "work"
    with pytest.raises(BacktestError) as failed:
        run_backtest(
            rules=str(changed),
            landing=tmp_path / "landing",
            start=T0,
            end=T0 + hours(5),
            every=hours(1),
            workdir=workdir,
            history=None,
            progress=lines.append,
            in_memory=True,
        )
    message = str(failed.value)
    tick = (T0 + hours(2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if where == "shared":
        assert any("computed once a tick for both sides" in line and "int_carts" in line for line in lines)
        assert "computing the models both sides share failed" in message
        assert (
            f"the model int_carts failed at the tick {tick}: " in message and "boom in the carts" in message
        )
    else:
        assert message.startswith("the after replay failed")
        assert f"the model abandoned_cart failed at the tick {tick}: " in message
        assert "boom in the reminders" in message
    assert "cancelled" not in message  # the cause, not the side it stopped
    ticked = {
        side: [line for line in lines if line.startswith(f"[{side}] tick ")] for side in ("before", "after")
    }
    # the failing side stopped at the third tick; the other one finishes at most the tick it is on, at most
    # two ahead (tick_share computes a tick's shared models once every side is done with the tick two
    # before, so with the failing side done with two ticks the other may finish the fourth); with shared
    # models failing, neither starts the third
    counts = {side: len(ticks) for side, ticks in ticked.items()}
    assert (
        counts == {"before": 2, "after": 2}
        if where == "shared"
        else (counts["after"] == 2 and counts["before"] <= 4)
    ), ticked
    assert not (workdir / "results.duckdb").exists()
    assert not any(t.name.startswith(("backtest", "backtest-shared")) for t in threading.enumerate())
    for lock in (workdir / "results.duckdb", workdir / "before" / "warehouse.duckdb"):
        with file_lock.hold(file_lock.lock_path(lock)):  # free: the next backtest or erasure can go on
            pass
