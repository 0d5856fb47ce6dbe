"""Which engine holds the warehouse: one setting for dbt and the Python steps.

``NACHFASS_ENGINE`` = ``duckdb`` (default: the file ``$NACHFASS_WAREHOUSE``, no server) or ``postgres``
(a PostgreSQL 15+ database, reached with the standard libpq variables ``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGPASSWORD``, ``PGDATABASE``). dbt's ``profiles.yml`` picks its target from the same variable, so dbt
and Python never look at different warehouses. ``spark`` is reserved (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENV_ENGINE = "NACHFASS_ENGINE"
ENGINES = ("duckdb", "postgres")
DEFAULT_ENGINE = "duckdb"


class EngineError(ValueError):
    """The engine setting names no engine this project runs on."""


def current_engine() -> str:
    value = (os.environ.get(ENV_ENGINE) or DEFAULT_ENGINE).strip().lower()
    if value not in ENGINES:
        raise EngineError(
            f"{ENV_ENGINE}={value!r} is not an engine this project runs on: use one of {', '.join(ENGINES)}"
        )
    return value


# The defaults dbt/profiles.yml uses too: Python and dbt must reach the same database.
PG_DEFAULTS = {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "postgres", "PGDATABASE": "nachfass"}


def postgres_params() -> dict[str, str]:
    """host, port, user and dbname for psycopg2; the password stays in PGPASSWORD, which libpq reads itself,
    so it is never held, logged or shown by the project."""
    values = {name: os.environ.get(name) or default for name, default in PG_DEFAULTS.items()}
    return {
        "host": values["PGHOST"],
        "port": values["PGPORT"],
        "user": values["PGUSER"],
        "dbname": values["PGDATABASE"],
    }


def describe() -> str:
    """Where the warehouse is, for logs and messages (never the password)."""
    if current_engine() == "postgres":
        p = postgres_params()
        return f"PostgreSQL database {p['dbname']!r} at {p['host']}:{p['port']} as {p['user']}"
    from nachfass.core import paths

    return f"DuckDB file {paths.warehouse_path()}"


@contextlib.contextmanager
def connect(read_only: bool = False, *, duckdb_path: Path | None = None) -> Iterator[Any]:
    """A connection to the warehouse the setting names: DuckDB's own, or a DuckDB-shaped PostgreSQL one
    (nachfass/core/pgconn.py) that runs the steps' SQL unchanged."""
    if current_engine() == "postgres":
        from nachfass.core.pgconn import PgConnection

        with PgConnection.open() as conn:
            yield conn
        return
    from nachfass.core import duckdb_config, paths

    db = duckdb_path or paths.warehouse_path()
    if not read_only:
        db.parent.mkdir(parents=True, exist_ok=True)
    conn = duckdb_config.connect(db, read_only=read_only)
    try:
        yield conn
    finally:
        conn.close()
