"""Which engine the Python steps write (``NACHFASS_ENGINE``) and, for PostgreSQL, where it is.

``NACHFASS_ENGINE``: ``duckdb`` (default) | ``postgres`` | ``spark`` (dbt builds on Spark; the Python steps
keep their tables in PostgreSQL beside it, see ``python_steps_engine`` and ``spark.py``). The PostgreSQL
connection comes from the standard libpq variables: ``PGHOST`` (default 127.0.0.1), ``PGPORT`` (5432),
``PGUSER`` (postgres), ``PGPASSWORD`` (optional) and ``PGDATABASE`` (nachfass). The password is kept out of
every repr, log line and error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENGINE_VAR = "NACHFASS_ENGINE"
ENGINES = ("duckdb", "postgres", "spark")
# the engine the Python steps (ingest, ledger, sending, erasure ...) keep their tables in, per engine; dbt
# runs on each of ENGINES. Spark has no unique keys or row locks for the ledger: PostgreSQL holds it
# (spark.py).
PYTHON_STEPS_ON = {"duckdb": "duckdb", "postgres": "postgres", "spark": "postgres"}
DEFAULT_ENGINE = "duckdb"


class SettingsError(ValueError):
    """A setting has a value the project cannot use; the message is one line and names the variable."""


def engine(env: Mapping[str, str] | None = None) -> str:
    """The configured engine, checked: an unknown name fails with the variable and the allowed values."""
    env = os.environ if env is None else env
    value = (env.get(ENGINE_VAR) or DEFAULT_ENGINE).strip().lower()
    if value not in ENGINES:
        raise SettingsError(
            f"{ENGINE_VAR}={env.get(ENGINE_VAR)!r} is not a known engine; use one of: {', '.join(ENGINES)}"
        )
    return value


def python_steps_engine(env: Mapping[str, str] | None = None) -> str:
    """Where the Python steps keep their tables for the configured engine: DuckDB's file, or PostgreSQL
    (for ``postgres``, and for ``spark``, whose dbt build reads and writes it around the build: spark.py)."""
    return PYTHON_STEPS_ON[engine(env)]


@dataclass(frozen=True)
class PostgresSettings:
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    dbname: str = "nachfass"
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.host:
            raise SettingsError("PGHOST is empty; give the PostgreSQL host (default 127.0.0.1)")
        if not 0 < self.port < 65536:
            raise SettingsError(f"PGPORT={self.port} is not a TCP port (1-65535)")
        if not self.user:
            raise SettingsError("PGUSER is empty; give the PostgreSQL user (default postgres)")
        if not self.dbname:
            raise SettingsError("PGDATABASE is empty; give the database name (default nachfass)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PostgresSettings:
        env = os.environ if env is None else env
        raw_port = env.get("PGPORT") or "5432"
        try:
            port = int(raw_port)
        except ValueError:
            raise SettingsError(f"PGPORT={raw_port!r} is not a number (default 5432)") from None
        return cls(
            host=env.get("PGHOST") or "127.0.0.1",
            port=port,
            user=env.get("PGUSER") or "postgres",
            dbname=env.get("PGDATABASE") or "nachfass",
            password=env.get("PGPASSWORD") or None,
        )

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg2.connect`` (the only place the password leaves this object)."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "application_name": "nachfass",
        }
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs

    def describe(self) -> str:
        """Where, for logs and errors: never the password."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"


@dataclass(frozen=True)
class WarehouseSettings:
    engine: str = DEFAULT_ENGINE
    postgres: PostgresSettings | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WarehouseSettings:
        chosen = engine(env)
        on_postgres = PYTHON_STEPS_ON[chosen] == "postgres"
        return cls(chosen, PostgresSettings.from_env(env) if on_postgres else None)
