"""dbt refuses a PostgreSQL database that does not sort text in byte order: tie-breaks in the models
(`first_row_per`, `arg_max`, the A/B bucket's ordering) follow text order, so another collation would give
other decisions than DuckDB without any error. `check_engine` (dbt/macros/cross_db.sql) runs before any
model and names the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from dbt_helpers import run_dbt

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        (
            "icu_de",
            "locale_provider icu icu_locale 'de-DE' lc_collate 'C' lc_ctype 'C'",
            "ICU locale provider",
        ),
        ("libc_c", "locale_provider libc lc_collate 'C' lc_ctype 'C'", None),
    ],
)
def test_a_database_that_does_not_sort_in_byte_order_is_refused(
    tmp_path: Path, postgres_server, name: str, options: str, message: str | None
) -> None:
    postgres_server.drop_database(name)
    postgres_server._psql(f"create database {name} template template0 encoding 'UTF8' {options}")
    try:
        result = run_dbt(
            ["run-operation", "check_engine"] if message is None else ["run", "--select", "stg_products"],
            warehouse=tmp_path / "unused.duckdb",
            target_path=tmp_path / "target",
            check=False,
            env={"NACHFASS_ENGINE": "postgres", **postgres_server.env(name)},
        )
    finally:
        postgres_server.drop_database(name)
    output = result.stdout + result.stderr
    if message is None:
        assert result.returncode == 0, output[-3000:]  # byte order: accepted
    else:
        assert result.returncode != 0
        assert f"sorts text with the {message}" in output, output[-3000:]
        assert "lc_collate 'C'" in output  # the message says how to create a database that works
