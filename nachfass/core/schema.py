"""Every table the Python steps write, in one place: the raw exports, SendGrid events, the send ledger,
the render queue, the run log and the erasure tables. dbt reads them as sources; `prepare_warehouse`
creates them all, so the first dbt run on an empty warehouse works. This module sits below every stage:
it imports only the export contract (the columns of the raw tables), never a stage.
"""

from __future__ import annotations

import secrets

import duckdb

from nachfass.core.contract import TABLES as CONTRACT_TABLES

# DuckDB types of the contract's column types (the raw tables are typed; the loader casts into them).
SQL_TYPES = {
    "str": "varchar",
    "email": "varchar",
    "int": "bigint",
    "decimal": "decimal(18,2)",
    "bool": "boolean",
    "ts": "timestamp",
}

LEDGER_STATUSES = ("sending", "sent", "failed", "unknown", "holdout")
LEDGER_TRANSPORTS = ("sendgrid", "outbox")


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


LEDGER_DDL = f"""
create schema if not exists mail;
create table if not exists mail.sends (
    send_id       varchar primary key,
    campaign      varchar not null,
    step          varchar not null,
    trigger_key   varchar not null,
    customer_id   varchar,
    email         varchar,
    email_hash    varchar,
    experiment_id varchar,
    variant       varchar,
    status        varchar not null check (status in ({_sql_list(LEDGER_STATUSES)})),
    reason        varchar,
    sg_message_id varchar,
    transport     varchar check (transport is null or transport in ({_sql_list(LEDGER_TRANSPORTS)})),
    run_id        varchar,
    as_of         timestamp not null,   -- logical time of the deciding run (UTC): the send time for rules
    created_at    timestamp not null,   -- wall clock (UTC), audit only
    updated_at    timestamp not null,   -- wall clock (UTC), audit only
    attempts      integer not null default 0,
    unique (campaign, step, trigger_key)
);
"""

RUNS_DDL = """
create schema if not exists mail;
create table if not exists mail.runs (
    run_id        varchar primary key,
    job_name      varchar,
    partition_key varchar,
    as_of         timestamp not null,   -- the run's logical time (UTC)
    started_at    timestamp not null    -- wall clock (UTC), audit only
);
"""


def ensure_raw_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("create schema if not exists raw")
    for table in CONTRACT_TABLES.values():
        cols = ", ".join(f'"{c.name}" {SQL_TYPES[c.type]}' for c in table.columns)
        conn.execute(
            f"create table if not exists raw.{table.name} ({cols}, _file varchar not null, "
            "_row bigint not null, _loaded_at timestamp not null)"
        )
        # Optional columns added to the contract later: a warehouse created before gets them (NULL for
        # the rows loaded so far). Inserts name their columns, so the column order does not matter.
        for c in table.columns:
            conn.execute(
                f'alter table raw.{table.name} add column if not exists "{c.name}" {SQL_TYPES[c.type]}'
            )
    conn.execute(
        """
        create table if not exists raw.quarantine (
            table_name varchar not null,
            source_file varchar not null,
            row_number bigint,          -- data record in the file, 1 = first row after the header
            raw_values json,
            reason varchar not null,
            quarantined_at timestamp not null
        )
        """
    )
    # Added later: the physical line (1 = the header) of a line that could not be parsed.
    conn.execute("alter table raw.quarantine add column if not exists line_number bigint")
    conn.execute(
        """
        create table if not exists raw.loaded_files (
            table_name varchar not null,
            path varchar not null,
            content_hash varchar not null,
            rows_read bigint, rows_loaded bigint, rows_quarantined bigint,
            unknown_columns varchar[],
            loaded_at timestamp not null,
            primary key (path, content_hash)
        )
        """
    )
    conn.execute(
        """
        create table if not exists raw.rejected_files (
            table_name varchar not null, path varchar not null, content_hash varchar,
            message varchar not null, rejected_at timestamp not null
        )
        """
    )


def ensure_events_schema(conn: duckdb.DuckDBPyConnection) -> None:
    ensure_raw_schema(conn)
    conn.execute(
        """
        create table if not exists raw.sendgrid_events (
            sg_event_id varchar primary key,
            event varchar not null,
            email varchar,
            occurred_at timestamp,          -- the event's unix `timestamp`, as UTC
            sg_message_id varchar,
            message_id varchar,             -- the X-Message-Id part of sg_message_id
            send_id varchar,                -- our custom_args, echoed back by SendGrid
            campaign varchar,
            step varchar,
            variant varchar,
            url varchar,
            reason varchar,
            status varchar,
            bounce_type varchar,
            is_machine_open boolean,
            useragent varchar,
            raw json,
            _file varchar not null,
            _loaded_at timestamp not null
        )
        """
    )
    conn.execute(
        """
        create table if not exists raw.event_quarantine (
            source_file varchar not null,
            line_number bigint,             -- 1-based line in the file; NULL: the whole file
            sg_event_id varchar,            -- where the line had a usable one
            email varchar,                  -- where the line had one (erasure finds the row by it)
            reason varchar not null,
            raw_line varchar,               -- the line, cut at 4 KB, undecodable bytes replaced
            quarantined_at timestamp not null
        )
        """
    )


def ensure_ledger(conn: duckdb.DuckDBPyConnection) -> None:
    """Create schema ``mail`` and table ``mail.sends`` if missing (idempotent; dbt reads it as a source)."""
    conn.execute(LEDGER_DDL)


def ensure_outgoing(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("create schema if not exists mail")
    conn.execute(
        """
        create table if not exists mail.outgoing (
            send_id varchar primary key, campaign varchar, step varchar, variant varchar, trigger_key varchar,
            customer_id varchar, to_email varchar, to_name varchar, subject varchar, html varchar,
            text varchar, headers json, categories varchar[], is_marketing boolean, experiment_id varchar,
            run_id varchar, rendered_at timestamp
        )
        """
    )


def ensure_runs(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(RUNS_DDL)


def ensure_erasure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("create schema if not exists mail")
    conn.execute(
        """
        create table if not exists mail.erasures (
            email_hash varchar primary key,   -- sha256(salt || lower(email)); the address itself is gone
            erased_at timestamp not null,
            sendgrid_erasure_requested boolean not null default false
        )
        """
    )
    conn.execute("create table if not exists mail.erasure_salt (salt varchar not null)")
    if not conn.execute("select count(*) from mail.erasure_salt").fetchone()[0]:
        # Random per warehouse: the hashes cannot be matched against a precomputed table of addresses.
        conn.execute("insert into mail.erasure_salt values (?)", [secrets.token_hex(16)])


def prepare_warehouse(conn: duckdb.DuckDBPyConnection) -> None:
    """Create every table above if missing (idempotent)."""
    ensure_raw_schema(conn)
    ensure_events_schema(conn)
    ensure_ledger(conn)
    ensure_outgoing(conn)
    ensure_erasure_schema(conn)
    ensure_runs(conn)
