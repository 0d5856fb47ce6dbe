"""The warehouse engine behind the Python steps: DuckDB (the default, code in ``nachfass.core``) or
PostgreSQL (``postgres.py``), chosen by ``NACHFASS_ENGINE`` (``settings.py``)."""

from __future__ import annotations

from types import ModuleType


def ledger_module(engine_name: str | None = None) -> ModuleType:
    """The send ledger's functions for an engine (default: ``NACHFASS_ENGINE``): both modules have the same
    names and signatures (claim_many, finish_many, release_many, record_holdouts, recover, ...)."""
    from nachfass.core.warehouse.settings import python_steps_engine

    name = engine_name or python_steps_engine()
    if name == "postgres":
        from nachfass.core.warehouse import pg_ledger

        return pg_ledger
    if name == "duckdb":
        from nachfass.core.mail import ledger

        return ledger
    raise ValueError(f"no ledger for engine {name!r}")


class _PostgresLedger:
    """``pg_ledger``'s functions called with the steps' connection (a ``PgConnection``: its psycopg2
    connection is what the ledger takes)."""

    def __getattr__(self, name: str):
        from nachfass.core.warehouse import pg_ledger

        function = getattr(pg_ledger, name)

        def call(conn, *args, **kwargs):
            return function(getattr(conn, "raw", conn), *args, **kwargs)

        return call


def ledger_for(conn) -> ModuleType | _PostgresLedger:
    """The ledger functions for this connection's engine: the steps pass their connection unchanged."""
    if getattr(conn, "engine", None) == "postgres":
        return _PostgresLedger()
    from nachfass.core.mail import ledger

    return ledger
