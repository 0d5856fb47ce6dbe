"""Create every table the dbt sources read, so the first dbt run on an empty warehouse works."""

from __future__ import annotations

import duckdb


def prepare_warehouse(conn: duckdb.DuckDBPyConnection) -> None:
    from dagster_project.events.ingest import ensure_events_schema
    from dagster_project.ingest.loader import ensure_raw_schema
    from dagster_project.mail.erasure_schema import ensure_erasure_schema
    from dagster_project.mail.ledger import ensure_ledger
    from dagster_project.mail.outgoing import ensure_outgoing
    from dagster_project.mail.runs import ensure_runs

    ensure_raw_schema(conn)
    ensure_events_schema(conn)
    ensure_ledger(conn)
    ensure_outgoing(conn)
    ensure_erasure_schema(conn)
    ensure_runs(conn)
