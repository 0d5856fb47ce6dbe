"""Ingest assets: landing folder → DuckDB ``raw`` tables (one asset key per export table)."""

import dagster as dg

from dagster_project.resources import LandingResource, RunClockResource, ShopResource, WarehouseResource
from nachfass.core import engine
from nachfass.core.contract import EXPORT_TABLES
from nachfass.core.ingest import load_landing, summarize
from nachfass.core.schema import prepare_warehouse
from nachfass.core.warehouse.postgres import push_tables

RAW_KEYS = {table: dg.AssetKey(["raw", table]) for table in EXPORT_TABLES}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key,
            group_name="ingest",
            description=f"Shop export `{table}` as loaded (append-only).",
            kinds={"duckdb"},
        )
        for table, key in RAW_KEYS.items()
    ],
    can_subset=True,
)
def raw_exports(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    landing: LandingResource,
    shop: ShopResource,
    clock: RunClockResource,
):
    """Load new export files (each file once, by path + content hash); quarantine rows and lines that break
    the export contract; reject unreadable files or files with a broken header without marking them loaded.
    The run's as_of is the exports' arrival: timestamps more than a day later are quarantined."""
    tables = [t for t, key in RAW_KEYS.items() if key in context.selected_asset_keys]
    landing_dir = landing.resolved_path()
    as_of = clock.resolve(context)
    if warehouse.engine() == "postgres":
        # DuckDB parses and checks the exports in a local staging file (the same loader, the same
        # quarantine), then the newly loaded files are copied to PostgreSQL in one transaction
        # (nachfass/core/warehouse/postgres.py).
        with engine.staging(warehouse.staging_path(), log=context.log.warning) as duck:
            prepare_warehouse(duck)
            reports = load_landing(
                duck, landing_dir, shop_tz=shop.settings().timezone, tables=tables, as_of=as_of
            )
            with warehouse.connect() as conn:
                prepare_warehouse(conn)
                pushed = push_tables(duck, conn.raw, tables=tables)
                totals = {t: conn.execute(f"select count(*) from raw.{t}").fetchone()[0] for t in tables}
        context.log.info(f"copied {pushed.files} new files to {warehouse.describe()}")
    else:
        with warehouse.connect() as conn:
            prepare_warehouse(conn)
            reports = load_landing(
                conn, landing_dir, shop_tz=shop.settings().timezone, tables=tables, as_of=as_of
            )
            totals = {t: conn.execute(f"select count(*) from raw.{t}").fetchone()[0] for t in tables}
    for report in reports:
        if report.status == "rejected":
            context.log.error(f"rejected {report.path}: {report.message}")
        elif report.status == "loaded":
            context.log.info(
                f"loaded {report.path}: read {report.rows_read}, loaded {report.rows_loaded}, "
                f"quarantined {report.rows_quarantined}"
                + (f"; ignored unknown columns {report.unknown_columns}" if report.unknown_columns else "")
            )
            if report.lines_rejected or report.rows_orphaned:
                context.log.warning(f"{report.path}: {report.message}")
    per_table = summarize(reports)
    for table in tables:
        stats = per_table.get(table, {})
        files = [r for r in reports if r.table == table and r.status != "skipped"]
        yield dg.MaterializeResult(
            asset_key=RAW_KEYS[table],
            metadata={
                "landing_folder": dg.MetadataValue.path(str(landing_dir / table)),
                "files_loaded": stats.get("files_loaded", 0),
                "files_rejected": stats.get("files_rejected", 0),
                "files_already_loaded": stats.get("files_skipped", 0),
                "rows_read": stats.get("rows_read", 0),
                "rows_loaded": stats.get("rows_loaded", 0),
                "rows_quarantined": stats.get("rows_quarantined", 0),
                "lines_rejected": stats.get("lines_rejected", 0),
                "rows_orphaned": stats.get("rows_orphaned", 0),
                "rows_in_table": dg.MetadataValue.int(int(totals[table])),
                "files": dg.MetadataValue.md(
                    "\n".join(
                        [
                            "| file | status | read | loaded | quarantined | note |",
                            "|---|---|---|---|---|---|",
                        ]
                        + [
                            f"| {r.path.rsplit('/', 1)[-1]} | {r.status} | {r.rows_read} | {r.rows_loaded} | "
                            f"{r.rows_quarantined} | {r.message} |"
                            for r in files
                        ]
                    )
                    if files
                    else "no new files"
                ),
            },
        )
