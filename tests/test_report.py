"""The campaign report (`nachfass report`) and the key figures on the Dagster asset, on a hand-built
warehouse whose every figure is known: the page's numbers, its charts rendered in headless Chromium
(non-empty, no console message, no network), the backtest placeholder, and the logical time (a mail, an
event or an order after the analytics' as_of shows nowhere)."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dbt_helpers import days, hours, insert_events, insert_sends, load_exports, run_dbt, write_exports

from dagster_project.assets.analytics import KEY_FIGURES, analytics_key_figures
from dagster_project.resources import WarehouseResource
from nachfass.cli.main import main
from nachfass.core.report import ReportError, build_report, key_figures, load_report

AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
D1, D2, D3 = AS_OF - days(5), AS_OF - days(4), AS_OF - days(2)
CART, REVIEW = "cart_reminder_subject_2026_11", "review_request_subject_2026_11"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium not installed (apt-get install chromium)"
)
pytestmark = pytest.mark.slow

# (send day, campaign) → sent, delivered, opened, clicked, converted, revenue: what the page must show
EXPECTED_DAILY = {
    (date(2026, 11, 19), "abandoned_cart"): (4, 4, 2, 1, 1, 80.0),
    (date(2026, 11, 20), "review_request"): (3, 3, 1, 0, 1, 40.0),
    (date(2026, 11, 22), "abandoned_cart"): (2, 2, 1, 1, 1, 25.5),
    (date(2026, 11, 22), "order_thanks"): (2, 1, 0, 0, 0, 0.0),
}

# (campaign, trigger key, customer, send time, experiment, variant)
SENDS = [
    ("abandoned_cart", "K1", "C1", D1, CART, "control"),
    ("abandoned_cart", "K2", "C2", D1, CART, "control"),
    ("abandoned_cart", "K3", "C3", D1, CART, "b"),
    ("abandoned_cart", "K4", "C4", D1, CART, "b"),
    ("abandoned_cart", "K5", "C5", D1, CART, "holdout"),
    ("abandoned_cart", "K10", "C10", D1, CART, "holdout"),
    ("review_request", "R1", "R1", D2, REVIEW, "control"),
    ("review_request", "R2", "R2", D2, REVIEW, "b"),
    ("review_request", "R3", "R3", D2, REVIEW, "b"),
    ("order_thanks", "T1", "T1", D3, None, None),
    ("order_thanks", "T2", "T2", D3, None, None),
    ("abandoned_cart", "K6", "C6", D3, CART, "control"),
    ("abandoned_cart", "K7", "C7", D3, CART, "b"),
    ("abandoned_cart", "K8", "C8", AS_OF - days(40), CART, "control"),  # before the 28 days shown
    ("abandoned_cart", "K9", "C9", AS_OF + days(1), CART, "b"),  # after the as_of: not seen at all
]
# (trigger key, event, time)
EVENTS = [
    *[(key, "delivered", D1 + hours(1)) for key in ("K1", "K2", "K3", "K4")],
    ("K1", "open", D1 + hours(2)),
    ("K3", "open", D1 + hours(2)),
    ("K3", "click", D1 + hours(3)),
    ("K2", "open", AS_OF + hours(2)),  # after the as_of: not counted
    *[(key, "delivered", D2 + hours(1)) for key in ("R1", "R2", "R3")],
    ("R2", "open", D2 + hours(5)),
    ("T1", "delivered", D3 + hours(1)),
    ("K6", "delivered", D3 + hours(1)),
    ("K7", "delivered", D3 + hours(1)),
    ("K7", "open", D3 + hours(2)),
    ("K7", "click", D3 + hours(2)),
    ("K8", "delivered", AS_OF - days(40) + hours(1)),
]
# (customer, amount, time): C3, R1 and C7 convert after their mails; C5 is in the holdout (uplift only); T1
# ordered after a transactional mail (earns nothing); C6 orders after the as_of (not seen)
ORDERS = [
    ("C3", "80.00", D1 + days(1)),
    ("C5", "50.00", D1 + days(1)),
    ("R1", "40.00", D2 + days(2)),
    ("T1", "99.00", D3 + hours(5)),
    ("C7", "25.50", D3 + hours(10)),
    ("C6", "70.00", AS_OF + hours(3)),
]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    path, landing = tmp / "w.duckdb", tmp / "landing"
    customers = sorted({cid for _, _, cid, *_ in SENDS})
    write_exports(
        landing,
        {
            "customers": [
                {"customer_id": cid, "email": f"{cid.lower()}@example.de", "created_at": AS_OF - days(400)}
                for cid in customers
            ],
            "orders": [
                {
                    "order_id": f"O-{cid}",
                    "customer_id": cid,
                    "status": "paid",
                    "total_amount": amount,
                    "currency": "EUR",
                    "placed_at": at,
                }
                for cid, amount, at in ORDERS
            ],
        },
    )
    load_exports(path, landing)
    insert_sends(
        path,
        [
            {
                "campaign": campaign,
                "step": "1",
                "trigger_key": key,
                "customer_id": cid,
                "email": f"{cid.lower()}@example.de",
                "sent_at": at,
                "status": "holdout" if variant == "holdout" else "sent",
            }
            for campaign, key, cid, at, _, variant in SENDS
        ],
    )
    conn = duckdb.connect(str(path))
    conn.executemany(
        "update mail.sends set experiment_id = ?, variant = ? where trigger_key = ?",
        [(experiment, variant, key) for _, key, _, _, experiment, variant in SENDS],
    )
    conn.close()
    campaign_of = {key: (campaign, cid) for campaign, key, cid, *_ in SENDS}
    insert_events(
        path,
        [
            {
                "event": event,
                "email": f"{campaign_of[key][1].lower()}@example.de",
                "occurred_at": at,
                "campaign": campaign_of[key][0],
                "step": "1",
                "trigger_key": key,
            }
            for key, event, at in EVENTS
        ],
    )
    run_dbt(
        ["build", "--select", "+campaign_performance", "+ab_results", "+build_settings"],
        warehouse=path,
        target_path=tmp / "target",
        as_of=AS_OF,
    )
    return path


@pytest.fixture(scope="module")
def page(warehouse, tmp_path_factory) -> Path:
    return build_report(warehouse, tmp_path_factory.mktemp("page"))


def test_daily_figures_per_campaign_and_send_day(warehouse) -> None:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        data = load_report(conn)
        short = load_report(conn, days=3)
    finally:
        conn.close()
    assert data.as_of == AS_OF.replace(tzinfo=None)  # the analytics' logical time, not today
    got = {
        (row.sent_date.date() if hasattr(row.sent_date, "date") else row.sent_date, row.campaign): (
            row.n_sent,
            row.n_delivered,
            row.n_opened,
            row.n_clicked,
            row.n_converted,
            row.revenue,
        )
        for row in data.daily.itertuples()
    }
    assert got == EXPECTED_DAILY
    assert {row.campaign for row in short.daily.itertuples()} == {"abandoned_cart", "order_thanks"}
    assert len(short.daily) == 2  # only 2026-11-22 to 2026-11-24


def test_key_figures_of_the_last_seven_send_days(warehouse) -> None:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        figures = key_figures(conn)
    finally:
        conn.close()
    assert figures == {
        "mails_sent_7d": 11,
        "delivered_7d": 10,
        "opened_7d": 4,
        "clicked_7d": 2,
        "conversions_7d": 3,
        "revenue_eur_7d": 145.5,
        "delivery_rate_7d": pytest.approx(10 / 11),
        "open_rate_7d": pytest.approx(4 / 10),
        "click_rate_7d": pytest.approx(2 / 10),
        "conversion_rate_7d": pytest.approx(3 / 11),
        "experiments": 2,
        "experiments_with_sample_ratio_mismatch": 0,  # too few customers to judge (< 5 expected per arm)
        "winning_variants": 0,
    }


def test_key_figures_are_metadata_of_the_dagster_asset(warehouse) -> None:
    result = dg.materialize(
        [analytics_key_figures], resources={"warehouse": WarehouseResource(path=str(warehouse))}
    )
    assert result.success
    (materialization,) = result.asset_materializations_for_node(analytics_key_figures.op.name)
    assert materialization.asset_key == KEY_FIGURES
    metadata = {name: value.value for name, value in materialization.metadata.items()}
    assert metadata["as_of"] == "2026-11-24T10:00:00Z"
    assert (metadata["mails_sent_7d"], metadata["conversions_7d"], metadata["revenue_eur_7d"]) == (
        11,
        3,
        145.5,
    )
    assert metadata["click_rate_7d"] == pytest.approx(0.2)
    assert "| abandoned_cart | 6 | 6 | 2 | 2 | 105.50 |" in metadata["per_campaign_7d"]


def test_page_shows_the_figures_and_the_experiments(page) -> None:
    text = page.read_text(encoding="utf-8")
    assert "As of 2026-11-24 10:00 UTC" in text
    assert "send days\n2026-10-28 to 2026-11-24" in text
    assert '<div class="value">11</div><div class="label">Mails sent</div>' in text
    assert '<div class="value">145.50 EUR</div>' in text
    for chart in ("chart-daily", "chart-ab-0-conversion", "chart-ab-1-conversion"):
        assert f'id="{chart}"' in text
    assert "cart_reminder_subject_2026_11" in text and "review_request_subject_2026_11" in text
    assert "step 1: control vs holdout (uplift of mailing)" in text
    assert 'id="backtest-empty"' in text
    # offline: nothing is loaded from anywhere (plotly.js is inside the page)
    assert not re.search(r"<script[^>]+src=", text) and "<link" not in text


def test_backtest_tables_appear_side_by_side(warehouse, tmp_path) -> None:
    copy = tmp_path / "with_backtest.duckdb"
    shutil.copy(warehouse, copy)
    conn = duckdb.connect(str(copy))
    conn.execute("create schema backtest")
    conn.execute(
        "create table backtest.campaign_summary as select * from (values "
        "('abandoned_cart', 'current', 120), ('abandoned_cart', 'changed', 150)) t(campaign, rules, mails)"
    )
    conn.close()
    text = build_report(copy, tmp_path / "out").read_text(encoding="utf-8")
    assert 'id="backtest-empty"' not in text
    assert "backtest.campaign_summary <small>(2 rows)</small>" in text
    assert "<td>changed</td>" in text and "<td>150</td>" in text


def test_cli_writes_the_page_and_explains_a_missing_build(warehouse, tmp_path, capsys) -> None:
    assert main(["report", "--warehouse", str(warehouse), "--out", str(tmp_path / "r"), "--days", "7"]) == 0
    assert (tmp_path / "r" / "index.html").exists()
    assert "Campaign report:" in capsys.readouterr().out
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    assert main(["report", "--warehouse", str(empty), "--out", str(tmp_path / "e")]) == 1
    assert "build the analytics first" in capsys.readouterr().err
    with pytest.raises(ReportError, match="no warehouse"):
        build_report(tmp_path / "missing.duckdb", tmp_path / "m")


def test_an_unreachable_postgres_warehouse_is_one_line_without_the_password(
    tmp_path, capsys, monkeypatch
) -> None:
    """On the postgres engine the report and the backtest's rates read PostgreSQL: a server that does not
    answer stops them with one line naming it, never the password, and nothing is written."""
    from nachfass.core.backtest import LIVE_WAREHOUSE, BacktestError, history_rates

    for name, value in {
        "NACHFASS_ENGINE": "postgres",
        "PGHOST": "127.0.0.1",
        "PGPORT": "1",
        "PGPASSWORD": "s3cret-pw",
    }.items():
        monkeypatch.setenv(name, value)
    assert main(["report", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("report: cannot connect to PostgreSQL at postgresql://") and "127.0.0.1:1" in err
    assert "s3cret-pw" not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    with pytest.raises(BacktestError, match="cannot read the history's rates") as raised:
        history_rates(LIVE_WAREHOUSE)
    assert "s3cret-pw" not in str(raised.value)


# ---- in the browser ----------------------------------------------------------------------------------------


def _chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium with console messages on stderr and a dead proxy, so any network request fails
    (and shows as a console message)."""
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000",
        f"--user-data-dir={profile}", *extra, url,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def _console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@needs_chromium
def test_console_messages_are_seen(tmp_path) -> None:
    """The check below can fail: a page with a script error is caught."""
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>notDefined();</script></body></html>", encoding="utf-8")
    messages = _console_messages(_chromium(broken.as_uri(), tmp_path / "profile", "--dump-dom").stderr)
    assert any("notDefined" in m for m in messages)


def _bar_heights(svg: str) -> list[float]:
    heights = []
    for y0, y1 in re.findall(r'<g class="point"><path d="M[\d.]+,([\d.]+)V([\d.]+)H', svg):
        heights.append(abs(float(y1) - float(y0)))
    return heights


def _error_bar_widths(svg: str) -> list[float]:
    return [
        abs(float(x2) - float(x1))
        for x1, x2 in re.findall(r'class="xerror" d="M([-\d.]+),[-\d.]+v0m0,-0H([-\d.]+)', svg)
    ]


def _chart(dom: str, div_id: str) -> str:
    start = dom.index(f'<div id="{div_id}"')
    end = dom.find('<div id="chart-', start + 1)
    return dom[start : end if end > 0 else len(dom)]


@needs_chromium
def test_page_renders_its_charts_in_chromium(page, tmp_path) -> None:
    rendered = _chromium(page.as_uri(), tmp_path / "profile", "--dump-dom")
    assert _console_messages(rendered.stderr) == []
    dom = rendered.stdout
    # one bar per non-zero (day, campaign, metric) of the data: 6 + 5 + 6 + 2
    daily = _chart(dom, "chart-daily")
    assert 'class="main-svg"' in daily
    nonzero = sum(value > 0 for row in EXPECTED_DAILY.values() for value in row)
    assert sum(h > 0.5 for h in _bar_heights(daily)) == nonzero == 19
    # the cart experiment: b vs control and control vs holdout, each with two non-empty intervals
    cart = _chart(dom, "chart-ab-0-conversion")
    widths = _error_bar_widths(cart)
    assert len(widths) == 4 and all(w > 1 for w in widths), widths
    assert len(re.findall(r'class="point plotly-customdata"', cart)) == 4


@needs_chromium
def test_page_screenshot_is_not_blank(page, tmp_path) -> None:
    shot = tmp_path / "report.png"
    _chromium(
        page.as_uri(),
        tmp_path / "profile",
        "--window-size=1250,2400",
        "--hide-scrollbars",
        f"--screenshot={shot}",
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000


def test_undefined_intervals_stay_empty(warehouse) -> None:
    """Review experiment: control 1 of 1 converted, b 0 of 2: no spread on either side, so no always-valid
    interval or p-value (rather than one made up from the [-1, 1] bounds)."""
    conn = duckdb.connect(str(warehouse), read_only=True)
    row = conn.execute(
        "select conversion_rate_diff, diff_seq_ci95_low, diff_seq_ci95_high, seq_p_value, is_winner "
        "from analytics.ab_results where experiment_id = ? and variant = 'b'",
        [REVIEW],
    ).fetchone()
    conn.close()
    assert row == (pytest.approx(-1.0), None, None, None, False)
