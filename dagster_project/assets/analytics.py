"""What Dagster adds after the analytics dbt models: the key figures of the campaign report as metadata of
the asset ``analytics/key_figures``, so the Dagster UI plots them over its materializations (asset page →
Plots). The figures are those of ``nachfass report`` (nachfass/core/report.py), read from the tables dbt
just built, at their logical time."""

import dagster as dg

from dagster_project.resources import WarehouseResource
from nachfass.core.report import KEY_FIGURE_DAYS, daily_figures, key_figures, read_settings

AB_RESULTS = dg.AssetKey(["analytics", "ab_results"])
CAMPAIGN_PERFORMANCE = dg.AssetKey(["analytics", "campaign_performance"])
BUILD_SETTINGS = dg.AssetKey(["analytics", "build_settings"])
KEY_FIGURES = dg.AssetKey(["analytics", "key_figures"])


@dg.asset(
    key=KEY_FIGURES,
    group_name="analytics",
    deps=[CAMPAIGN_PERFORMANCE, AB_RESULTS, BUILD_SETTINGS],
    description=f"Key figures of the last {KEY_FIGURE_DAYS} send days up to the analytics' as_of (mails, "
    "delivery, open, click and conversion rates, attributed revenue) and the experiments' state, as "
    "metadata that plots over time. Stores nothing; `nachfass report` draws the same figures as charts.",
)
def analytics_key_figures(warehouse: WarehouseResource) -> dg.MaterializeResult:
    with warehouse.connect(read_only=True) as conn:
        settings = read_settings(conn)
        figures = key_figures(conn, settings)
        per_campaign = (
            daily_figures(conn, settings["as_of"], KEY_FIGURE_DAYS)
            .groupby("campaign")[["n_sent", "n_delivered", "n_clicked", "n_converted", "revenue"]]
            .sum()
        )
    metadata: dict[str, dg.MetadataValue] = {
        "as_of": dg.MetadataValue.text(f"{settings['as_of']:%Y-%m-%dT%H:%M:%S}Z"),
        # a rate without a denominator is left out (a gap in the plot), never drawn as 0
        **{
            name: dg.MetadataValue.int(value) if isinstance(value, int) else dg.MetadataValue.float(value)
            for name, value in figures.items()
            if value is not None
        },
    }
    if not per_campaign.empty:
        lines = [
            "| campaign | sent | delivered | clicked | conversions | revenue (EUR) |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        lines += [
            f"| {campaign} | {row.n_sent:,.0f} | {row.n_delivered:,.0f} | {row.n_clicked:,.0f} | "
            f"{row.n_converted:,.0f} | {row.revenue:,.2f} |"
            for campaign, row in per_campaign.iterrows()
        ]
        metadata["per_campaign_7d"] = dg.MetadataValue.md("\n".join(lines))
    return dg.MaterializeResult(metadata=metadata)
