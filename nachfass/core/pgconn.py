"""A PostgreSQL connection that speaks the small part of DuckDB's Python API the Python steps use.

The render and send steps, the run log and the checks were written against a DuckDB connection:
``conn.execute(sql, params).fetchall()``, ``?`` placeholders, explicit ``begin``/``commit``, a cursor
that streams with ``fetchmany``, and ``register(name, arrow_table)`` to insert a batch with one
``insert ... select``. :class:`PgConnection` offers exactly that over psycopg2, so the same step code runs
on both engines, and SQL written for the steps stays in the common subset of the two dialects. Where the
engines must differ (the ledger's concurrency, bulk loads), the engine-specific module is used instead.

- ``?`` placeholders become psycopg2's ``%s`` (outside quoted strings and identifiers); a literal ``%`` is
  escaped.
- The connection runs in autocommit mode, so a statement outside ``begin``/``commit`` commits at once,
  as in DuckDB.
- ``register`` creates a temporary table from an Arrow table (the session's own; gone at ``unregister``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from nachfass.core.warehouse.settings import PostgresSettings


def translate(sql: str) -> str:
    """DuckDB's ``?`` placeholders → psycopg2's ``%s``; literal ``%`` doubled. Quotes are respected."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        elif ch == "%":
            out.append("%%")
        else:
            out.append(ch)
    return "".join(out)


_ARROW_TYPES = (
    (pa.types.is_string, "text"),
    (pa.types.is_large_string, "text"),
    (pa.types.is_boolean, "boolean"),
    (pa.types.is_integer, "bigint"),
    (pa.types.is_floating, "double precision"),
    (pa.types.is_timestamp, "timestamp"),
    (pa.types.is_date, "date"),
    (pa.types.is_decimal, "numeric"),
    (pa.types.is_null, "text"),
)


def _pg_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _pg_type(arrow_type.value_type) + "[]"
    for check, name in _ARROW_TYPES:
        if check(arrow_type):
            return name
    raise TypeError(f"no PostgreSQL type for Arrow type {arrow_type}")


class PgCursor:
    """A psycopg2 cursor with DuckDB's chaining: ``execute`` returns the cursor itself."""

    def __init__(self, raw_cursor) -> None:
        self._cur = raw_cursor

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> PgCursor:
        self._cur.execute(translate(sql), tuple(params or ()))
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        self._cur.executemany(translate(sql), [tuple(r) for r in rows])
        return self

    @property
    def description(self):
        return self._cur.description

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed (DuckDB answers an insert/update/delete with a count row)."""
        return self._cur.rowcount

    def fetchall(self) -> list[tuple]:
        return self._cur.fetchall() if self._cur.description is not None else []

    def fetchone(self) -> tuple | None:
        return self._cur.fetchone() if self._cur.description is not None else None

    def fetchmany(self, size: int) -> list[tuple]:
        return self._cur.fetchmany(size) if self._cur.description is not None else []

    def df(self):
        """The result as a pandas DataFrame (DuckDB's ``.df()``)."""
        import pandas as pd

        names = [d[0] for d in self._cur.description]
        return pd.DataFrame.from_records(self._cur.fetchall(), columns=names)

    fetchdf = df

    def close(self) -> None:
        self._cur.close()


class PgConnection:
    engine = "postgres"

    def __init__(self, raw) -> None:
        self.raw = raw  # the psycopg2 connection (autocommit), for engine-specific modules
        self._registered: set[str] = set()
        self._schema_ready = False

    @classmethod
    def open(cls, settings: PostgresSettings | None = None) -> PgConnection:
        """An autocommit connection in UTC to the database of the libpq variables (or ``settings``)."""
        from nachfass.core.warehouse.postgres import connect

        return cls(connect(settings))

    def prepare_schema(self) -> None:
        """Create every table of nachfass.core.schema if missing (once per connection)."""
        if not self._schema_ready:
            from nachfass.core.warehouse.postgres import prepare_warehouse

            prepare_warehouse(self.raw)
            self._schema_ready = True

    def cursor(self) -> PgCursor:
        return PgCursor(self.raw.cursor())

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> PgCursor:
        return self.cursor().execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> PgCursor:
        return self.cursor().executemany(sql, rows)

    def register(self, name: str, table: pa.Table) -> None:
        """A temporary table ``name`` holding the Arrow table's rows (replaced if registered before)."""
        from psycopg2 import sql as pgsql
        from psycopg2.extras import execute_values

        columns = pgsql.SQL(", ").join(
            pgsql.SQL("{} {}").format(pgsql.Identifier(f.name), pgsql.SQL(_pg_type(f.type)))
            for f in table.schema
        )
        with self.raw.cursor() as cur:
            cur.execute(pgsql.SQL("drop table if exists {}").format(pgsql.Identifier(name)))
            cur.execute(pgsql.SQL("create temporary table {} ({})").format(pgsql.Identifier(name), columns))
            if table.num_rows:
                rows = list(
                    zip(*(table.column(i).to_pylist() for i in range(table.num_columns)), strict=True)
                )
                execute_values(
                    cur,
                    pgsql.SQL("insert into {} values %s").format(pgsql.Identifier(name)).as_string(cur),
                    rows,
                    page_size=1000,
                )
        self._registered.add(name)

    def unregister(self, name: str) -> None:
        import psycopg2.extensions
        from psycopg2 import sql as pgsql

        self._registered.discard(name)
        if self.raw.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INERROR:
            return  # the failed transaction's rollback drops it (it was created inside)
        with self.raw.cursor() as cur:
            cur.execute(pgsql.SQL("drop table if exists {}").format(pgsql.Identifier(name)))

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
