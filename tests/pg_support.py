"""PostgreSQL for the engine tests: a copier of the warehouse's source tables from DuckDB and a minimal
`pg_dsn_from_env` fixture (NACHFASS_TEST_PG_DSN or the session's throwaway server). The real loader lives in
nachfass/core; this one only serves the tests that compare dbt's results on both engines.

Types: varchar → text, json → json (the text kept as DuckDB stored it; no model reads these columns, the
payloads the models build are json, not jsonb, so their key order is the model's), decimal(p,s) →
numeric(p,s), list types → PostgreSQL arrays, the rest by name. The database must use the "C" collation
(string order = DuckDB's byte order) and UTC; `create_test_database` creates one so.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import duckdb
import pytest

PG_DSN_ENV = "NACHFASS_TEST_PG_DSN"

_SCALAR_TYPES = {
    "VARCHAR": "text",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "DATE": "date",
    "BOOLEAN": "boolean",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "SMALLINT": "smallint",
    "DOUBLE": "double precision",
    "FLOAT": "real",
    "HUGEINT": "numeric(38,0)",
    "JSON": "json",
    "BLOB": "bytea",
}


def pg_type(duckdb_type: str) -> str:
    """The PostgreSQL type of a DuckDB column type."""
    t = duckdb_type.upper().strip()
    if t.endswith("[]"):
        return pg_type(t[:-2]) + "[]"
    decimal = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", t)
    if decimal:
        return f"numeric({decimal.group(1)},{decimal.group(2)})"
    if t not in _SCALAR_TYPES:
        raise ValueError(f"no PostgreSQL type for DuckDB type {duckdb_type}")
    return _SCALAR_TYPES[t]


def _pg_array_literal(values: Iterable[object]) -> str:
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
        else:
            text = str(value).replace("\\", "\\\\").replace('"', '\\"')
            items.append(f'"{text}"')
    return "{" + ",".join(items) + "}"


def _csv_rows(rows: Iterable[tuple], list_columns: set[int]) -> Iterator[list[object]]:
    for row in rows:
        out: list[object] = []
        for i, value in enumerate(row):
            if value is None:
                out.append(r"\N")
            elif i in list_columns:
                out.append(_pg_array_literal(value))
            elif isinstance(value, bool):
                out.append("true" if value else "false")
            else:
                out.append(value)
        yield out


def copy_warehouse_to_postgres(
    duckdb_path: Path | str, dsn: str, schemas: Iterable[str] = ("raw", "mail")
) -> dict[str, int]:
    """Every table of `schemas` in the DuckDB file, created afresh in PostgreSQL and filled with COPY.
    Returns the rows copied per `schema.table`."""
    import psycopg2

    copied: dict[str, int] = {}
    source = duckdb.connect(str(duckdb_path), read_only=True)
    target = psycopg2.connect(dsn)
    try:
        with target.cursor() as cur:
            for schema in schemas:
                cur.execute(f'create schema if not exists "{schema}"')
                tables = source.execute(
                    "select table_name from information_schema.tables where table_schema = ? "
                    "and table_type = 'BASE TABLE' order by table_name",
                    [schema],
                ).fetchall()
                for (table,) in tables:
                    columns = source.execute(
                        "select column_name, data_type from information_schema.columns "
                        "where table_schema = ? and table_name = ? order by ordinal_position",
                        [schema, table],
                    ).fetchall()
                    ddl = ", ".join(f'"{name}" {pg_type(dtype)}' for name, dtype in columns)
                    cur.execute(f'drop table if exists "{schema}"."{table}" cascade')
                    cur.execute(f'create table "{schema}"."{table}" ({ddl})')
                    list_columns = {i for i, (_, dtype) in enumerate(columns) if dtype.endswith("[]")}
                    rows = source.execute(f'select * from "{schema}"."{table}"').fetchall()
                    buffer = io.StringIO()
                    writer = csv.writer(buffer, lineterminator="\n")
                    writer.writerows(_csv_rows(rows, list_columns))
                    buffer.seek(0)
                    names = ", ".join(f'"{name}"' for name, _ in columns)
                    cur.copy_expert(
                        f'copy "{schema}"."{table}" ({names}) from stdin with (format csv, null \'\\N\')',
                        buffer,
                    )
                    copied[f"{schema}.{table}"] = len(rows)
        target.commit()
    finally:
        target.close()
        source.close()
    return copied


def libpq_env(dsn: str) -> dict[str, str]:
    """PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE of a postgresql:// DSN (what dbt's profile reads)."""
    url = urlparse(dsn)
    env = {
        "PGHOST": url.hostname or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "postgres",
        "PGPASSWORD": url.password or "",
        "PGDATABASE": url.path.lstrip("/") or "nachfass",
    }
    return env


def create_test_database(dsn: str, name: str) -> str:
    """A fresh database `name` on the server of `dsn` with the collation and time zone the models need;
    returns its DSN."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'drop database if exists "{name}"')
            cur.execute(
                f"create database \"{name}\" template template0 encoding 'UTF8' lc_collate 'C' lc_ctype 'C'"
            )
            cur.execute(f"alter database \"{name}\" set timezone to 'UTC'")
    finally:
        conn.close()
    url = urlparse(dsn)
    return url._replace(path=f"/{name}").geturl()


@pytest.fixture(scope="session")
def pg_dsn_from_env(request: pytest.FixtureRequest) -> str:
    """The URL of a PostgreSQL server for the engine tests: env NACHFASS_TEST_PG_DSN (e.g.
    postgresql://postgres@127.0.0.1:55433/postgres) or the session's throwaway server (conftest.py
    ``postgres_server``, which skips without PostgreSQL installed and fails in CI)."""
    dsn = os.environ.get(PG_DSN_ENV)
    if dsn:
        return dsn
    return request.getfixturevalue("postgres_server").url()
