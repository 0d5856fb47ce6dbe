"""Every table the Python steps write, in one place: the raw exports, SendGrid events, the send ledger,
the render queue, the run log and the erasure tables. dbt reads them as sources; `prepare_warehouse`
creates them all, so the first dbt run on an empty warehouse works. This module sits below every stage:
it imports only the export contract (the columns of the raw tables), never a stage.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import duckdb

from nachfass.core.contract import TABLES as CONTRACT_TABLES

LEDGER_STATUSES = ("sending", "sent", "failed", "unknown", "holdout")
LEDGER_TRANSPORTS = ("sendgrid", "outbox")

# Engine-neutral column types of the tables below, and how each engine spells them. PostgreSQL's
# ``timestamp`` is naive like DuckDB's: both hold UTC wall-clock values.
ENGINE_TYPES = {
    "duckdb": {
        "text": "varchar",
        "text[]": "varchar[]",
        "bigint": "bigint",
        "integer": "integer",
        "boolean": "boolean",
        "timestamp": "timestamp",
        "decimal": "decimal(18,2)",
        "json": "json",
    },
    "postgres": {
        "text": "text",
        "text[]": "text[]",
        "bigint": "bigint",
        "integer": "integer",
        "boolean": "boolean",
        "timestamp": "timestamp",
        "decimal": "numeric(18,2)",
        "json": "json",
    },
}
# The export contract's column types as neutral types.
CONTRACT_TYPES = {
    "str": "text",
    "email": "text",
    "int": "bigint",
    "decimal": "decimal",
    "bool": "boolean",
    "ts": "timestamp",
}
# DuckDB types of the contract's column types (the raw tables are typed; the loader casts into them).
SQL_TYPES = {name: ENGINE_TYPES["duckdb"][neutral] for name, neutral in CONTRACT_TYPES.items()}


def _sql_list(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


@dataclass(frozen=True)
class Col:
    name: str
    type: str  # a key of ENGINE_TYPES[engine]
    extra: str = ""  # constraints and defaults, the same text on every engine ("not null", "primary key")


@dataclass(frozen=True)
class TableDef:
    """One table as data: every engine renders its DDL from it (``create_sql``, ``add_column_sql``)."""

    schema: str
    name: str
    columns: tuple[Col, ...]
    constraints: tuple[str, ...] = ()  # table constraints, e.g. "unique (campaign, step, trigger_key)"
    added: tuple[Col, ...] = ()  # columns added after the first release: ``alter table ... add column``

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def all_columns(self) -> tuple[Col, ...]:
        return self.columns + self.added

    def create_sql(self, engine: str) -> str:
        types = ENGINE_TYPES[engine]
        parts = [f'"{c.name}" {types[c.type]}{" " + c.extra if c.extra else ""}' for c in self.columns]
        return f"create table if not exists {self.qualified} ({', '.join([*parts, *self.constraints])})"

    def add_column_sql(self, engine: str) -> list[str]:
        types = ENGINE_TYPES[engine]
        return [
            f'alter table {self.qualified} add column if not exists "{c.name}" {types[c.type]}'
            for c in self.added
        ]


def _raw_table(table) -> TableDef:
    cols = tuple(Col(c.name, CONTRACT_TYPES[c.type]) for c in table.columns)
    return TableDef(
        "raw",
        table.name,
        cols
        + (
            Col("_file", "text", "not null"),
            Col("_row", "bigint", "not null"),
            Col("_loaded_at", "timestamp", "not null"),
        ),
        # Optional columns added to the contract later: a warehouse created before gets them (NULL for
        # the rows loaded so far). Inserts name their columns, so the column order does not matter.
        added=cols,
    )


RAW_TABLES: dict[str, TableDef] = {name: _raw_table(t) for name, t in CONTRACT_TABLES.items()}

QUARANTINE = TableDef(
    "raw",
    "quarantine",
    (
        Col("table_name", "text", "not null"),
        Col("source_file", "text", "not null"),
        Col("row_number", "bigint"),  # data record in the file, 1 = first row after the header
        Col("raw_values", "json"),
        Col("reason", "text", "not null"),
        Col("quarantined_at", "timestamp", "not null"),
    ),
    # Added later: the physical line (1 = the header) of a line that could not be parsed.
    added=(Col("line_number", "bigint"),),
)

LOADED_FILES = TableDef(
    "raw",
    "loaded_files",
    (
        Col("table_name", "text", "not null"),
        Col("path", "text", "not null"),
        Col("content_hash", "text", "not null"),
        Col("rows_read", "bigint"),
        Col("rows_loaded", "bigint"),
        Col("rows_quarantined", "bigint"),
        Col("unknown_columns", "text[]"),
        Col("loaded_at", "timestamp", "not null"),
    ),
    ("primary key (path, content_hash)",),
)

REJECTED_FILES = TableDef(
    "raw",
    "rejected_files",
    (
        Col("table_name", "text", "not null"),
        Col("path", "text", "not null"),
        Col("content_hash", "text"),
        Col("message", "text", "not null"),
        Col("rejected_at", "timestamp", "not null"),
    ),
)

# The loader's memory of each landing file's content hash, keyed by the file's size and modification time
# (as git's index and rsync do): a scheduled run hashes only the files that are new or changed, not the
# whole history every 15 minutes (3.1 GB at 1M customers). A cache of the DuckDB loader (the warehouse, or
# the PostgreSQL engine's staging file), so not in ALL_TABLES: nothing reads it but the loader, nothing
# copies it elsewhere, and dropping it costs one hashing of every file.
FILE_DIGESTS = TableDef(
    "raw",
    "landing_file_digests",
    (
        Col("path", "text", "primary key"),
        Col("file_size", "bigint", "not null"),
        Col("file_mtime_ns", "bigint", "not null"),
        Col("content_hash", "text", "not null"),
    ),
)

SENDGRID_EVENTS = TableDef(
    "raw",
    "sendgrid_events",
    (
        Col("sg_event_id", "text", "primary key"),
        Col("event", "text", "not null"),
        Col("email", "text"),
        Col("occurred_at", "timestamp"),  # the event's unix `timestamp`, as UTC
        Col("sg_message_id", "text"),
        Col("message_id", "text"),  # the X-Message-Id part of sg_message_id
        Col("send_id", "text"),  # our custom_args, echoed back by SendGrid
        Col("campaign", "text"),
        Col("step", "text"),
        Col("variant", "text"),
        Col("url", "text"),
        Col("reason", "text"),
        Col("status", "text"),
        Col("bounce_type", "text"),
        Col("is_machine_open", "boolean"),
        Col("useragent", "text"),
        Col("raw", "json"),
        Col("_file", "text", "not null"),
        Col("_loaded_at", "timestamp", "not null"),
    ),
)

EVENT_QUARANTINE = TableDef(
    "raw",
    "event_quarantine",
    (
        Col("source_file", "text", "not null"),
        Col("line_number", "bigint"),  # 1-based line in the file; NULL: the whole file
        Col("sg_event_id", "text"),  # where the line had a usable one
        Col("email", "text"),  # where the line had one (erasure finds the row by it)
        Col("reason", "text", "not null"),
        Col("raw_line", "text"),  # the line, cut at 4 KB, undecodable bytes replaced
        Col("quarantined_at", "timestamp", "not null"),
    ),
)

SENDS = TableDef(
    "mail",
    "sends",
    (
        Col("send_id", "text", "primary key"),
        Col("campaign", "text", "not null"),
        Col("step", "text", "not null"),
        Col("trigger_key", "text", "not null"),
        Col("customer_id", "text"),
        Col("email", "text"),
        Col("email_hash", "text"),
        Col("experiment_id", "text"),
        Col("variant", "text"),
        Col("status", "text", f"not null check (status in ({_sql_list(LEDGER_STATUSES)}))"),
        Col("reason", "text"),
        Col("sg_message_id", "text"),
        Col(
            "transport",
            "text",
            f"check (transport is null or transport in ({_sql_list(LEDGER_TRANSPORTS)}))",
        ),
        Col("run_id", "text"),
        # logical time of the deciding run (UTC): the send time for rules
        Col("as_of", "timestamp", "not null"),
        Col("created_at", "timestamp", "not null"),  # wall clock (UTC), audit only
        Col("updated_at", "timestamp", "not null"),  # wall clock (UTC), audit only
        Col("attempts", "integer", "not null default 0"),
    ),
    ("unique (campaign, step, trigger_key)",),
)

RUNS = TableDef(
    "mail",
    "runs",
    (
        Col("run_id", "text", "primary key"),
        Col("job_name", "text"),
        Col("partition_key", "text"),
        Col("as_of", "timestamp", "not null"),  # the run's logical time (UTC)
        Col("started_at", "timestamp", "not null"),  # wall clock (UTC), audit only
    ),
)

OUTGOING = TableDef(
    "mail",
    "outgoing",
    (
        Col("send_id", "text", "primary key"),
        *(
            Col(name, "text")
            for name in (
                "campaign",
                "step",
                "variant",
                "trigger_key",
                "customer_id",
                "to_email",
                "to_name",
                "subject",
                "html",
                "text",
            )
        ),
        Col("headers", "json"),
        Col("categories", "text[]"),
        Col("is_marketing", "boolean"),
        Col("experiment_id", "text"),
        Col("run_id", "text"),
        Col("rendered_at", "timestamp"),
    ),
)

ERASURES = TableDef(
    "mail",
    "erasures",
    (
        # sha256(salt || lower(email)); the address itself is gone
        Col("email_hash", "text", "primary key"),
        Col("erased_at", "timestamp", "not null"),
        Col("sendgrid_erasure_requested", "boolean", "not null default false"),
    ),
)

ERASURE_SALT = TableDef("mail", "erasure_salt", (Col("salt", "text", "not null"),))

# Every table, in creation order (what ``prepare_warehouse`` creates, on any engine).
ALL_TABLES: tuple[TableDef, ...] = (
    *RAW_TABLES.values(),
    QUARANTINE,
    LOADED_FILES,
    REJECTED_FILES,
    SENDGRID_EVENTS,
    EVENT_QUARANTINE,
    SENDS,
    OUTGOING,
    ERASURES,
    ERASURE_SALT,
    RUNS,
)

LEDGER_DDL = f"create schema if not exists mail;\n{SENDS.create_sql('duckdb')};\n"
RUNS_DDL = f"create schema if not exists mail;\n{RUNS.create_sql('duckdb')};\n"


def new_salt() -> str:
    # Random per warehouse: the hashes cannot be matched against a precomputed table of addresses.
    return secrets.token_hex(16)


def _on_postgres(conn) -> bool:
    """On the PostgreSQL engine (a ``PgConnection``) every ``ensure_*`` creates all tables at once with
    PostgreSQL's DDL (idempotent, safe from several processes); True when it did."""
    if getattr(conn, "engine", None) != "postgres":
        return False
    conn.prepare_schema()  # nachfass.core.warehouse.postgres renders this module's tables for PostgreSQL
    return True


def _create(conn: duckdb.DuckDBPyConnection, table: TableDef) -> None:
    if _on_postgres(conn):
        return
    conn.execute(f"create schema if not exists {table.schema}")
    conn.execute(table.create_sql("duckdb"))
    for statement in table.add_column_sql("duckdb"):
        conn.execute(statement)


def ensure_raw_schema(conn: duckdb.DuckDBPyConnection) -> None:
    for table in (*RAW_TABLES.values(), QUARANTINE, LOADED_FILES, REJECTED_FILES, FILE_DIGESTS):
        _create(conn, table)


def ensure_events_schema(conn: duckdb.DuckDBPyConnection) -> None:
    ensure_raw_schema(conn)
    _create(conn, SENDGRID_EVENTS)
    _create(conn, EVENT_QUARANTINE)


def ensure_ledger(conn: duckdb.DuckDBPyConnection) -> None:
    """Create schema ``mail`` and table ``mail.sends`` if missing (idempotent; dbt reads it as a source)."""
    if not _on_postgres(conn):
        conn.execute(LEDGER_DDL)


def ensure_outgoing(conn: duckdb.DuckDBPyConnection) -> None:
    _create(conn, OUTGOING)


def ensure_runs(conn: duckdb.DuckDBPyConnection) -> None:
    if not _on_postgres(conn):
        conn.execute(RUNS_DDL)


def ensure_erasure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    _create(conn, ERASURES)
    _create(conn, ERASURE_SALT)
    if not conn.execute("select count(*) from mail.erasure_salt").fetchone()[0]:
        conn.execute("insert into mail.erasure_salt values (?)", [new_salt()])


def prepare_warehouse(conn: duckdb.DuckDBPyConnection) -> None:
    """Create every table above if missing (idempotent)."""
    if _on_postgres(conn):
        return
    ensure_raw_schema(conn)
    ensure_events_schema(conn)
    ensure_ledger(conn)
    ensure_outgoing(conn)
    ensure_erasure_schema(conn)
    ensure_runs(conn)
