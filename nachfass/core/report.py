"""The campaign report: one static HTML page with charts (``nachfass report --out DIR``), and the key figures
that the Dagster asset ``analytics/key_figures`` records on every build so they plot over time in the UI.

Everything comes from the analytics tables as dbt built them, at their logical time
(``analytics.build_settings.as_of``): the day axis is the mails' logical send day (``mail.sends.as_of``),
and "the last 7 days" end at that as_of, never at the wall clock, so a report of a replayed or backfilled
warehouse shows what a report on that day would have shown. The charts are plotly figures; plotly.js is
embedded in the page once, so it opens from a file with no network.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

REPORT_FILE = "index.html"
DEFAULT_DAYS = 28
KEY_FIGURE_DAYS = 7
BACKTEST_SCHEMA = "backtest"
BACKTEST_PREVIEW_ROWS = 20

# (column of analytics.campaign_performance summed per day and campaign, chart title)
DAILY_METRICS = (
    ("n_sent", "Sends"),
    ("n_delivered", "Deliveries"),
    ("n_opened", "Opens (unique, human)"),
    ("n_clicked", "Clicks (unique)"),
    ("n_converted", "Conversions"),
    ("revenue", "Attributed revenue (EUR)"),
)
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
FIXED_COLOR, SEQUENTIAL_COLOR = "#1f4e79", "#9aa9b8"


class ReportError(RuntimeError):
    """The warehouse has no analytics to report on (yet)."""


@dataclass(frozen=True)
class ReportData:
    as_of: datetime  # UTC, naive, as the warehouse stores it
    settings: dict
    days: int
    daily: pd.DataFrame
    ab: pd.DataFrame
    figures: dict[str, float | int]
    backtest: list[tuple[str, int, pd.DataFrame]]
    backtest_summary: pd.DataFrame | None = None  # `nachfass backtest`'s backtest.summary, when given

    @property
    def first_day(self) -> date:
        return self.as_of.date() - timedelta(days=self.days - 1)


def _tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    rows = conn.execute("select table_schema, table_name from information_schema.tables").fetchall()
    return {f"{schema}.{name}" for schema, name in rows}


def read_settings(conn: duckdb.DuckDBPyConnection) -> dict:
    """The logical time and settings the analytics models were built with (analytics.build_settings)."""
    needed = {"analytics.build_settings", "analytics.campaign_performance", "analytics.ab_results"}
    missing = sorted(needed - _tables(conn))
    if missing:
        raise ReportError(
            f"the warehouse has no {', '.join(missing)} yet: build the analytics first "
            "(`nachfass run`, or the events/daily job)"
        )
    cursor = conn.execute("select * from analytics.build_settings")
    names = [d[0] for d in cursor.description]
    row = cursor.fetchone()
    if row is None:
        raise ReportError("analytics.build_settings is empty: rebuild the analytics")
    return dict(zip(names, row, strict=True))


def daily_figures(conn: duckdb.DuckDBPyConnection, as_of: datetime, days: int) -> pd.DataFrame:
    """Per send day and campaign: sends, deliveries, opens, clicks, conversions, revenue of the mails sent
    that day (a cohort view: their later opens and orders count for the day they were sent). The holdout
    is left out: it received nothing, and its orders measure uplift, not what the mails earned."""
    frame = conn.execute(
        """
        select sent_date, campaign,
               cast(sum(n_sent) as bigint) as n_sent, cast(sum(n_delivered) as bigint) as n_delivered,
               cast(sum(n_opened) as bigint) as n_opened, cast(sum(n_clicked) as bigint) as n_clicked,
               cast(sum(n_converted) as bigint) as n_converted,
               cast(coalesce(sum(attributed_revenue), 0) as double precision) as revenue
        from analytics.campaign_performance
        where coalesce(variant, '') <> 'holdout'
          and sent_date > cast(? as date) - cast(? as integer) and sent_date <= cast(? as date)
        group by 1, 2
        order by sent_date, campaign
        """,
        [as_of, days, as_of],
    ).df()
    # DuckDB gives datetime64, psycopg2 date objects: one type for the charts on every engine
    frame["sent_date"] = pd.to_datetime(frame["sent_date"])
    return frame


def key_figures(conn: duckdb.DuckDBPyConnection, settings: dict | None = None) -> dict[str, float | int]:
    """The figures worth watching over time: the last 7 send days up to the analytics' as_of, and the state
    of the experiments. Rates are None when their denominator is 0."""
    settings = settings or read_settings(conn)
    daily = daily_figures(conn, settings["as_of"], KEY_FIGURE_DAYS)
    sums = {column: float(daily[column].sum()) if len(daily) else 0.0 for column, _ in DAILY_METRICS}

    def rate(numerator: str, denominator: str) -> float | None:
        return sums[numerator] / sums[denominator] if sums[denominator] else None

    experiments = conn.execute(
        """
        select count(distinct (experiment_id, campaign)),
               count(distinct (experiment_id, campaign)) filter (where has_sample_ratio_mismatch),
               count(*) filter (where is_winner)
        from analytics.ab_results
        """
    ).fetchone()
    return {
        "mails_sent_7d": int(sums["n_sent"]),
        "delivered_7d": int(sums["n_delivered"]),
        "opened_7d": int(sums["n_opened"]),
        "clicked_7d": int(sums["n_clicked"]),
        "conversions_7d": int(sums["n_converted"]),
        "revenue_eur_7d": round(sums["revenue"], 2),
        "delivery_rate_7d": rate("n_delivered", "n_sent"),
        "open_rate_7d": rate("n_opened", "n_delivered"),
        "click_rate_7d": rate("n_clicked", "n_delivered"),
        "conversion_rate_7d": rate("n_converted", "n_sent"),
        "experiments": int(experiments[0]),
        "experiments_with_sample_ratio_mismatch": int(experiments[1]),
        "winning_variants": int(experiments[2]),
    }


def backtest_tables(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, int, pd.DataFrame]]:
    """Tables the backtest left in the schema `backtest`, with their size and first rows."""
    found = []
    for name in sorted(t for t in _tables(conn) if t.startswith(f"{BACKTEST_SCHEMA}.")):
        quoted = ".".join(f'"{part}"' for part in name.split(".", 1))
        n_rows = conn.execute(f"select count(*) from {quoted}").fetchone()[0]
        preview = conn.execute(f"select * from {quoted} limit {BACKTEST_PREVIEW_ROWS}").df()
        found.append((name, int(n_rows), preview))
    return found


def load_report(conn: duckdb.DuckDBPyConnection, days: int = DEFAULT_DAYS) -> ReportData:
    if days < 1:
        raise ReportError("--days must be at least 1")
    settings = read_settings(conn)
    ab = conn.execute(
        "select * from analytics.ab_results order by experiment_id, campaign, step, variant"
    ).df()
    return ReportData(
        as_of=settings["as_of"],
        settings=settings,
        days=days,
        daily=daily_figures(conn, settings["as_of"], days),
        ab=ab,
        figures=key_figures(conn, settings),
        backtest=backtest_tables(conn),
    )


# ---- charts -----------------------------------------------------------------------------------------------


def daily_chart(data: ReportData):
    """Small multiples: one panel per metric, one stacked bar per campaign and send day."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    days = pd.date_range(data.first_day, data.as_of.date(), freq="D")
    fig = make_subplots(
        rows=3,
        cols=2,
        subplot_titles=[title for _, title in DAILY_METRICS],
        shared_xaxes=True,
        vertical_spacing=0.09,
        horizontal_spacing=0.08,
    )
    daily = data.daily.assign(sent_date=pd.to_datetime(data.daily["sent_date"]))
    for number, campaign in enumerate(sorted(daily["campaign"].unique())):
        rows = daily[daily["campaign"] == campaign].set_index("sent_date")
        rows = rows[[column for column, _ in DAILY_METRICS]].reindex(days, fill_value=0)
        for panel, (column, title) in enumerate(DAILY_METRICS):
            fig.add_trace(
                go.Bar(
                    x=days,
                    y=rows[column],
                    name=campaign,
                    legendgroup=campaign,
                    showlegend=panel == 0,
                    marker_color=COLORS[number % len(COLORS)],
                    hovertemplate=f"{campaign}<br>%{{x|%Y-%m-%d}}: %{{y:,}} {title.lower()}<extra></extra>",
                ),
                row=panel // 2 + 1,
                col=panel % 2 + 1,
            )
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(
        barmode="stack",
        height=820,
        margin={"l": 50, "r": 20, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.06},
        bargap=0.15,
    )
    return fig


def _comparison_label(row: pd.Series) -> str:
    label = f"step {row['step']}: {row['variant']} vs {row['baseline_variant']}"
    return label + " (uplift of mailing)" if row["baseline_variant"] == "holdout" else label


def comparison_chart(rows: pd.DataFrame, metric: str):
    """Each comparison with its baseline: the estimate, the fixed-horizon 95 % interval (dark, inner) and the
    always-valid 95 % interval (light, outer). `metric`: 'conversion' (percentage points) or 'revenue'
    (EUR per assigned customer)."""
    import plotly.graph_objects as go

    if metric == "conversion":
        scale, unit = 100.0, "pp"
        estimate, fixed, sequential = "conversion_rate_diff", "diff_ci95", "diff_seq_ci95"
    else:
        scale, unit = 1.0, "EUR"
        estimate, fixed = "revenue_per_customer_diff", "revenue_diff_ci95"
        sequential = "revenue_diff_seq_ci95"
    compared = rows[rows["baseline_variant"].notna() & rows[estimate].notna()]
    labels = [_comparison_label(row) for _, row in compared.iterrows()]
    diff = compared[estimate].astype(float) * scale
    fig = go.Figure()
    for name, prefix, color, thickness, symbol in (
        ("always-valid 95 % interval", sequential, SEQUENTIAL_COLOR, 9, "line-ns-open"),
        ("fixed-horizon 95 % interval", fixed, FIXED_COLOR, 3, "diamond"),
    ):
        low = compared[f"{prefix}_low"].astype(float) * scale
        high = compared[f"{prefix}_high"].astype(float) * scale
        fig.add_trace(
            go.Scatter(
                x=diff,
                y=labels,
                mode="markers",
                name=name,
                marker={"color": color, "size": 11, "symbol": symbol},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": (high - diff).fillna(0).tolist(),
                    "arrayminus": (diff - low).fillna(0).tolist(),
                    "color": color,
                    "thickness": thickness,
                    "width": 0,
                },
                customdata=list(zip(low.round(3), high.round(3), strict=True)),
                hovertemplate=f"%{{y}}<br>%{{x:.3f}} {unit} [%{{customdata[0]}}, %{{customdata[1]}}]"
                f"<extra>{name}</extra>",
            )
        )
    fig.add_vline(x=0, line_dash="dot", line_color="#444")
    title = (
        "Conversion rate difference (percentage points)"
        if metric == "conversion"
        else "Revenue per assigned customer, difference (EUR)"
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=140 + 55 * max(len(labels), 1),
        margin={"l": 20, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.25 if len(labels) < 3 else -0.12},
        yaxis={"automargin": True, "autorange": "reversed"},
        xaxis={"zeroline": False, "title": unit},
    )
    return fig


def backtest_chart(summary: pd.DataFrame):
    """A backtest's two rule sets side by side per campaign and step: mails, and the estimated revenue with
    its 95 % interval where the history gives one."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    summary = summary.assign(label=summary["campaign"] + " " + summary["step"].astype(str))
    labels = sorted(summary["label"].unique())
    has_revenue = "est_revenue" in summary and summary["est_revenue"].notna().any()
    titles = ["Mails", "Estimated attributed revenue (EUR)"] if has_revenue else ["Mails"]
    fig = make_subplots(rows=len(titles), cols=1, subplot_titles=titles, vertical_spacing=0.12)
    for index, (side, name) in enumerate((("before", "current rules"), ("after", "changed rules"))):
        rows = summary[summary["side"] == side].set_index("label").reindex(labels)
        color = COLORS[index]
        fig.add_trace(
            go.Bar(x=labels, y=rows["mails"].fillna(0).tolist(), name=name, marker_color=color),
            row=1,
            col=1,
        )
        if has_revenue:
            value = rows["est_revenue"].astype(float)
            fig.add_trace(
                go.Bar(
                    x=labels,
                    y=value.fillna(0).tolist(),
                    name=name,
                    marker_color=color,
                    showlegend=False,
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": (rows["est_revenue_high"].astype(float) - value).fillna(0).tolist(),
                        "arrayminus": (value - rows["est_revenue_low"].astype(float)).fillna(0).tolist(),
                    },
                ),
                row=2,
                col=1,
            )
    fig.update_layout(
        barmode="group",
        height=320 * len(titles),
        margin={"l": 20, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": 1.08},
    )
    return fig


# ---- the page ---------------------------------------------------------------------------------------------


def _number(value, digits: int = 0, percent: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if percent:
        return f"{value * 100:.{digits}f} %"
    return f"{value:,.{digits}f}"


def _p(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return "< 0.0001" if value < 0.0001 else f"{value:.4f}"


def _figure_html(fig, div_id: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False, "responsive": True},
    )


def _tiles(figures: dict) -> str:
    tiles = (
        ("Mails sent", _number(figures["mails_sent_7d"])),
        ("Delivered", _number(figures["delivery_rate_7d"], 1, percent=True)),
        ("Opened (of delivered)", _number(figures["open_rate_7d"], 1, percent=True)),
        ("Clicked (of delivered)", _number(figures["click_rate_7d"], 1, percent=True)),
        ("Conversions", _number(figures["conversions_7d"])),
        ("Attributed revenue", f"{_number(figures['revenue_eur_7d'], 2)} EUR"),
    )
    return "".join(
        f'<div class="tile"><div class="value">{html.escape(value)}</div>'
        f'<div class="label">{html.escape(label)}</div></div>'
        for label, value in tiles
    )


def _srm_note(rows: pd.DataFrame, srm_alpha: float) -> str:
    arms = rows.drop_duplicates("variant")
    first = rows.iloc[0]
    if pd.isna(first["srm_p_value"]):
        return (
            '<p class="note">Sample ratio: not checked (the experiment is no longer configured in the '
            "segment YAML).</p>"
        )
    split = "; ".join(
        f"{html.escape(str(arm['variant']))} {_number(arm['srm_observed_share'], 1, percent=True)} "
        f"(configured {_number(arm['srm_expected_share'], 1, percent=True)})"
        for _, arm in arms.iterrows()
    )
    statistic = f"chi-square {_number(first['srm_chi_square'], 2)}, p = {_p(first['srm_p_value'])}"
    if bool(first["has_sample_ratio_mismatch"]):
        return (
            f'<p class="alert">Sample-ratio mismatch (p &lt; {srm_alpha}): customers per arm: {split}; '
            f"{statistic}. The arms are not what the assignment should give, so the comparisons below are "
            "not trustworthy and no winner is declared until the cause is found (docs/analysts.md).</p>"
        )
    return f'<p class="note">Sample ratio OK: customers per arm: {split}; {statistic}.</p>'


AB_TABLE_COLUMNS = (
    ("step", "step", None),
    ("variant", "variant", None),
    ("n_assigned", "assigned", 0),
    ("n_customers", "customers", 0),
    ("n_sent", "sent", 0),
    ("n_delivered", "delivered", 0),
    ("n_opened", "opened", 0),
    ("n_clicked", "clicked", 0),
    ("n_converted", "converted", 0),
    ("conversion_rate", "conversion", "percent"),
    ("revenue_per_customer", "EUR / customer", 2),
    ("lift", "lift", "percent"),
    ("p_value", "p (fixed)", "p"),
    ("seq_p_value", "p (always valid)", "p"),
    ("seq_p_value_holm", "p (always valid, Holm)", "p"),
    ("revenue_p_value", "p revenue (Welch)", "p"),
    ("is_winner", "winner", "bool"),
)


def _ab_table(rows: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in AB_TABLE_COLUMNS)
    body = []
    for _, row in rows.iterrows():
        cells = []
        for column, _, kind in AB_TABLE_COLUMNS:
            value = row[column]
            if kind is None:
                text = str(value)
            elif kind == "percent":
                text = _number(None if pd.isna(value) else float(value), 1, percent=True)
            elif kind == "p":
                text = _p(None if pd.isna(value) else float(value))
            elif kind == "bool":
                text = "yes" if bool(value) else ""
            else:
                text = _number(None if pd.isna(value) else float(value), kind)
            cells.append(f"<td>{html.escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table class="ab"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _ab_section(data: ReportData) -> str:
    if data.ab.empty:
        return '<p class="note">No experiment has assigned anyone yet.</p>'
    parts = []
    for number, ((experiment, campaign), rows) in enumerate(
        data.ab.groupby(["experiment_id", "campaign"], sort=True)
    ):
        parts.append(f"<h3>{html.escape(str(experiment))} <small>({html.escape(str(campaign))})</small></h3>")
        parts.append(_srm_note(rows, data.settings["ab_srm_alpha"]))
        compared = rows[rows["baseline_variant"].notna()]
        if compared["conversion_rate_diff"].notna().any():
            parts.append(_figure_html(comparison_chart(rows, "conversion"), f"chart-ab-{number}-conversion"))
        else:
            parts.append(
                '<p class="note">No comparison yet: a variant or its baseline has no one assigned.</p>'
            )
        if compared["revenue_diff_ci95_low"].notna().any():
            parts.append(_figure_html(comparison_chart(rows, "revenue"), f"chart-ab-{number}-revenue"))
        else:
            parts.append(
                '<p class="note">Revenue per customer: no interval yet (needs at least 5 customers on each '
                "side and some spread in what they spent).</p>"
            )
        parts.append(_ab_table(rows))
    return "\n".join(parts)


def _backtest_section(data: ReportData) -> str:
    parts = []
    if data.backtest_summary is not None and not data.backtest_summary.empty:
        parts.append(
            '<p class="meta">The last <code>nachfass backtest</code>: the same period replayed with the '
            "current and with the changed rules (docs/marketers.md).</p>"
        )
        parts.append(_figure_html(backtest_chart(data.backtest_summary), "chart-backtest"))
    if not data.backtest:
        return (
            '<p class="note" id="backtest-empty">No backtest tables in this warehouse yet. A backtest '
            "(replaying a period under the current and a changed rule) writes its tables to the schema "
            "<code>backtest</code>; their comparisons appear here side by side.</p>"
        )
    for name, n_rows, preview in data.backtest:
        shown = f"first {len(preview)} of {n_rows:,} rows" if n_rows > len(preview) else f"{n_rows:,} rows"
        parts.append(f"<h3>{html.escape(name)} <small>({shown})</small></h3>")
        table = preview.to_html(index=False, classes="backtest", border=0, na_rep="–")
        parts.append(f'<div class="scroll">{table}</div>')
    return "\n".join(parts)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5rem; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
.meta { color: #555; margin-top: 0; }
.tiles { display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }
.tile { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 1rem; min-width: 150px; }
.tile .value { font-size: 1.4rem; font-weight: 600; } .tile .label { color: #555; font-size: 0.85rem; }
.scroll { overflow-x: auto; margin: 0.8rem 0 1.5rem; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { padding: 0.25rem 0.5rem; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
.note { color: #444; background: #f5f7fa; padding: 0.6rem 0.8rem; border-radius: 4px; }
.alert { color: #7a1010; background: #fdecec; padding: 0.6rem 0.8rem; border-radius: 4px; font-weight: 600; }
"""


def render_report(data: ReportData) -> str:
    """The page as one HTML string, plotly.js included."""
    from plotly.offline import get_plotlyjs

    settings = data.settings
    as_of = f"{data.as_of:%Y-%m-%d %H:%M} UTC"
    if data.daily.empty:
        daily = f'<p class="note">No mails sent between {data.first_day} and {data.as_of.date()}.</p>'
    else:
        daily = _figure_html(daily_chart(data), "chart-daily")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Nachfass campaign report, as of {html.escape(as_of)}</title>
<style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<h1>Campaign report</h1>
<p class="meta">As of {html.escape(as_of)} (the logical time the analytics were built at) · send days
{data.first_day} to {data.as_of.date()} · attribution window {settings["attribution_window_days"]} days ·
always-valid intervals tuned for {settings["ab_sequential_tuning_n"]:,} compared units</p>

<section id="key-figures">
<h2>The last {KEY_FIGURE_DAYS} send days</h2>
<div class="tiles">{_tiles(data.figures)}</div>
</section>

<section id="daily">
<h2>Per campaign and day</h2>
<p class="meta">Mails by logical send day; their deliveries, opens, clicks, conversions and revenue count for
the day they were sent, up to the as_of. Holdout customers (not mailed) are left out here.</p>
{daily}
</section>

<section id="ab">
<h2>A/B experiments</h2>
<p class="meta">Each variant against control, control against the holdout (the uplift of mailing at all).
Dark: fixed-horizon 95 % interval, valid for one look at a sample size fixed in advance. Light: always-valid
95 % interval, valid however often you look. A winner needs the always-valid, Holm-adjusted p below
{settings["ab_alpha"]}, at least {settings["ab_min_sends_per_variant"]:,} assigned on both sides and no
sample-ratio mismatch.</p>
{_ab_section(data)}
</section>

<section id="backtest">
<h2>Backtest comparisons, side by side</h2>
{_backtest_section(data)}
</section>
</body>
</html>
"""


def build_report(
    warehouse: Path | None, out_dir: Path, days: int = DEFAULT_DAYS, *, backtest: Path | None = None
) -> Path:
    """Write DIR/index.html from the warehouse (opened read-only) and return its path: a DuckDB file, or
    None for the engine's own (PostgreSQL on the postgres and spark engines, where the runs keep the
    analytics). ``backtest``: the results of `nachfass backtest` (its results.duckdb), shown side by side
    when the file exists."""
    if warehouse is None:
        from nachfass.core import engine

        with engine.connect(read_only=True) as conn:
            data = load_report(conn, days)
    else:
        if not Path(warehouse).exists():
            raise ReportError(f"no warehouse at {warehouse}")
        conn = duckdb.connect(str(warehouse), read_only=True)
        try:
            data = load_report(conn, days)
        finally:
            conn.close()
    if backtest is not None and Path(backtest).is_file():
        conn = duckdb.connect(str(backtest), read_only=True)
        try:
            if f"{BACKTEST_SCHEMA}.summary" in _tables(conn):
                data = replace(
                    data,
                    backtest_summary=conn.execute("select * from backtest.summary").df(),
                    backtest=[*data.backtest, *backtest_tables(conn)],
                )
        finally:
            conn.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / REPORT_FILE
    page.write_text(render_report(data), encoding="utf-8")
    return page
