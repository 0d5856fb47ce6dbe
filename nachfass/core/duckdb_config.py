"""How the project opens its DuckDB warehouse: one memory limit for Python and dbt alike.

``NACHFASS_DUCKDB_MEMORY_LIMIT`` (e.g. ``2GiB``, ``1500MB``, ``50%``; default ``80%``, DuckDB's own
default) caps the memory DuckDB's buffer manager uses in every warehouse connection the project opens (the
Dagster steps, the replay) and in dbt (``dbt/profiles.yml`` reads the same variable). Above the limit
DuckDB spills sorts, joins, windows and temporary tables to ``<warehouse>.tmp/`` next to the file instead
of growing: the ingest of 300,000 customers' exports peaks at 1.15 GiB with ``1GiB`` instead of 3.4 GiB,
for ~12 % more time (docs/benchmarks.md). Python objects (the address rule's cache, rendered mails) are
not counted, so leave some room above the limit.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb

ENV_MEMORY_LIMIT = "NACHFASS_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "80%"
_LIMIT = re.compile(r"^\s*\d+(\.\d+)?\s*(%|[KMGT]i?B)\s*$", re.IGNORECASE)


def memory_limit() -> str:
    """The configured limit, checked: a number with %, KB/MB/GB/TB or KiB/MiB/GiB/TiB."""
    value = os.environ.get(ENV_MEMORY_LIMIT) or DEFAULT_MEMORY_LIMIT
    if not _LIMIT.match(value):
        raise ValueError(f"{ENV_MEMORY_LIMIT}={value!r} is not a memory size: use e.g. 2GiB, 1500MB or 50%")
    return value.strip()


def connect(path: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse file with the project's settings."""
    limit = memory_limit()  # a bad value stops here, before the file is opened
    conn = duckdb.connect(str(path), read_only=read_only)
    conn.execute(f"set memory_limit = '{limit}'")
    return conn
