"""One memory limit for DuckDB, set once (NACHFASS_DUCKDB_MEMORY_LIMIT), respected by the project's own
warehouse connections and by dbt; a value that is not a size stops before anything is opened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dagster_project.resources import WarehouseResource
from nachfass.core.duckdb_config import ENV_MEMORY_LIMIT, memory_limit

REPO_ROOT = Path(__file__).resolve().parents[1]


def _limit_of(conn) -> str:
    return conn.execute("select current_setting('memory_limit')").fetchone()[0]


def test_the_warehouse_connection_takes_the_configured_limit(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(ENV_MEMORY_LIMIT, "1GiB")
    with WarehouseResource(path=str(tmp_path / "w.duckdb")).connect() as conn:
        assert _limit_of(conn) == "1.0 GiB"
    monkeypatch.setenv(ENV_MEMORY_LIMIT, "512MiB")
    with WarehouseResource(path=str(tmp_path / "w.duckdb")).connect(read_only=True) as conn:
        assert _limit_of(conn) == "512.0 MiB"


def test_without_a_setting_duckdbs_default_applies(tmp_path, monkeypatch) -> None:
    import duckdb

    monkeypatch.delenv(ENV_MEMORY_LIMIT, raising=False)
    plain = duckdb.connect()
    try:
        with WarehouseResource(path=str(tmp_path / "w.duckdb")).connect() as conn:
            assert _limit_of(conn) == _limit_of(plain)
    finally:
        plain.close()


@pytest.mark.parametrize("value", ["2 GB of RAM", "lots", "-1", "12", "1e9B"])
def test_a_value_that_is_not_a_size_is_refused_before_opening(tmp_path, monkeypatch, value) -> None:
    monkeypatch.setenv(ENV_MEMORY_LIMIT, value)
    with (
        pytest.raises(ValueError, match=ENV_MEMORY_LIMIT),
        WarehouseResource(path=str(tmp_path / "w.duckdb")).connect(),
    ):
        pass
    assert not (tmp_path / "w.duckdb").exists()


@pytest.mark.parametrize("value", ["2GiB", "1500MB", "50%", " 3 GB ", "0.5TiB"])
def test_sizes_are_accepted(monkeypatch, value) -> None:
    monkeypatch.setenv(ENV_MEMORY_LIMIT, value)
    assert memory_limit() == value.strip()


@pytest.mark.slow
def test_dbt_runs_under_the_same_limit(tmp_path) -> None:
    env = {
        **os.environ,
        ENV_MEMORY_LIMIT: "768MiB",
        "NACHFASS_WAREHOUSE": str(tmp_path / "w.duckdb"),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    code = (
        "import sys; from nachfass.cli.main import main; raise SystemExit(main(['dbt', 'show', '--inline', "
        "\"select current_setting('memory_limit') as m\", '--output', 'json', '--quiet', "
        f"'--target-path', {str(tmp_path / 'target')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    shown = json.loads(result.stdout[result.stdout.index("{") :])
    assert shown["show"] == [{"m": "768.0 MiB"}]
