"""Which engine holds the warehouse: one setting for dbt and the Python steps.

``NACHFASS_ENGINE`` = ``duckdb`` (default: the file ``$NACHFASS_WAREHOUSE``, no server) or ``postgres``
(a PostgreSQL 15+ database, reached with the standard libpq variables ``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGPASSWORD``, ``PGDATABASE``). dbt's ``profiles.yml`` picks its target from the same variable, so dbt
and Python never look at different warehouses. ``spark`` builds the dbt project on Spark and keeps the Python
steps' tables (ledger, events, exports) in PostgreSQL beside it (nachfass/core/warehouse/spark.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nachfass.core.warehouse.settings import ENGINE_VAR as ENV_ENGINE  # noqa: F401 (re-exported)
from nachfass.core.warehouse.settings import (
    ENGINES,  # noqa: F401 (re-exported)
    PostgresSettings,
    python_steps_engine,
)
from nachfass.core.warehouse.settings import SettingsError as EngineError  # noqa: F401 (re-exported)
from nachfass.core.warehouse.settings import engine as engine_setting


def current_engine() -> str:
    """The engine the Python steps use for the setting, checked (one-line error naming the variable and the
    choices): ``duckdb`` or ``postgres`` (also for ``spark``, whose ledger lives in PostgreSQL)."""
    return python_steps_engine()


def dbt_engine() -> str:
    """The engine dbt builds the models on (``NACHFASS_ENGINE`` as given: duckdb, postgres or spark)."""
    return engine_setting()


def describe() -> str:
    """Where the warehouse is, for logs and messages (never the password)."""
    if current_engine() == "postgres":
        where = f"PostgreSQL {PostgresSettings.from_env().describe()}"
        return f"Spark (dbt) with {where}" if dbt_engine() == "spark" else where
    from nachfass.core import paths

    return f"DuckDB file {paths.warehouse_path()}"


@contextlib.contextmanager
def connect(
    read_only: bool = False, *, duckdb_path: Path | None = None, engine_name: str | None = None
) -> Iterator[Any]:
    """A connection to the warehouse the setting (or ``engine_name``) names: DuckDB's own, or a
    DuckDB-shaped PostgreSQL one (nachfass/core/pgconn.py) that runs the steps' SQL unchanged."""
    if (engine_name or current_engine()) == "postgres":
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


@contextlib.contextmanager
def staging(path: Path, *, log=None, timeout_s: float = 900.0, poll_s: float = 0.5) -> Iterator[Any]:
    """The local DuckDB file the PostgreSQL engine parses exports in (nachfass/core/warehouse/postgres.py).

    One process at a time, like any DuckDB file: a run whose ingest overlaps another's on the same machine
    waits for it (its files are then already loaded and are not parsed twice)."""
    import time

    import duckdb

    from nachfass.core import duckdb_config

    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    waited = False
    while True:
        try:
            conn = duckdb_config.connect(path)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            if not waited and log is not None:
                log(f"another run is loading exports into {path}; waiting for it")
            waited = True
            time.sleep(poll_s)
    try:
        yield conn
    finally:
        conn.close()
