"""Shared fixtures: an isolated warehouse/landing/outbox per test, and a parsed dbt manifest.

`DbtProject.prepare_if_dev()` does nothing under pytest, so the session parses the dbt project itself
before any test imports the Dagster definitions.
"""

from __future__ import annotations

import errno
import os
import select
import time
from pathlib import Path

import pytest

# CI runs the suite a second time under libfaketime (.ci/run). Its clock_nanosleep wrapper sometimes turns
# the absolute deadline of Python's time.sleep into an invalid timespec (EINVAL). Sleep the same time with
# select() then; patched here, before any project module takes time.sleep as a default argument.
UNDER_FAKETIME = "faketime" in os.environ.get("LD_PRELOAD", "")
if UNDER_FAKETIME:
    _clock_sleep = time.sleep

    def _sleep(seconds: float) -> None:
        try:
            _clock_sleep(seconds)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            select.select([], [], [], seconds)

    time.sleep = _sleep
from tests_support import DBT_DIR  # noqa: E402 (after the sleep patch)

# The suite runs in two processes (README: `pytest -n 2`, pytest-xdist) with the scheduler below: each file
# goes whole to one process, so its module fixtures are built once, and the files go out in the order of
# LONGEST_FIRST (minutes each, measured in CI), then alphabetically: a long file started last would keep
# one process busy while the other idles. The Spark files share one unit and so run one after the other:
# each starts JVMs in local[2] mode, and two at once took 40 % longer each.
SPARK_FILES = ("test_dbt_spark.py", "test_engines_end_to_end_spark.py")
LONGEST_FIRST = (
    *SPARK_FILES,
    "test_backtest.py",
    "test_multi_day.py",
    "test_engines_end_to_end.py",
    "test_replay.py",
    "test_erasure.py",
    "test_feedback_loop.py",
    "test_dagster_dev.py",
    "test_end_to_end.py",
    "test_dbt_engines.py",
    "test_ninth_campaign.py",
    "test_secrets.py",
    "test_cli_run.py",
    "test_diff.py",
    "test_lint.py",
    "test_erasure_postgres.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order stays


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent with -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadFileScheduling

    class FilesInOrder(LoadFileScheduling):
        """A file per unit, the Spark files together, handed out in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return "spark" if path.rsplit("/", 1)[-1] in SPARK_FILES else path

    config.option.loadscopereorder = False  # xdist would sort the units by their number of tests
    return FilesInOrder(config, log)


SECRET_ENV = (
    "SENDGRID_API_KEY",
    "SENDGRID_API_HOST",
    "NACHFASS_LINK_SIGNING_KEY",
    "SENDGRID_WEBHOOK_PUBLIC_KEY",
)


@pytest.fixture(scope="session")
def dbt_manifest() -> Path:
    """The project's manifest, parsed with the registry's vars. The suite runs in parallel processes
    (pytest-xdist): the parse takes a file lock, and a process that finds a manifest of the same inputs
    there uses it instead of rewriting it while another process reads it."""
    from dagster_project.dbt_project import prepare_dbt_manifest

    prepare_dbt_manifest()
    return DBT_DIR / "target" / "manifest.json"


@pytest.fixture(scope="module")
def duckdb_run(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path) -> dict:
    """The engines' end-to-end tests' reference, once per test file: one `nachfass run` on DuckDB from the
    exports the other engine gets too (tests/engines_e2e_support.py)."""
    from engines_e2e_support import reference_run

    return reference_run(tmp_path_factory.mktemp("engines_e2e"))


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point Python and dbt at a fresh warehouse, landing folder and outbox in tmp_path; no secrets set."""
    locations = {
        "warehouse": tmp_path / "warehouse.duckdb",
        "landing": tmp_path / "landing",
        "outbox": tmp_path / "outbox",
    }
    locations["landing"].mkdir()
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(locations["warehouse"]))
    monkeypatch.setenv("NACHFASS_LANDING", str(locations["landing"]))
    monkeypatch.setenv("NACHFASS_OUTBOX", str(locations["outbox"]))
    monkeypatch.setenv("NACHFASS_DATA", str(tmp_path / "data"))  # previews and other run files
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    return locations


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster for the session (tests on the PostgreSQL engine skip without one).

    CI installs Debian's ``postgresql`` (.ci/run); set NACHFASS_REQUIRE_POSTGRES=1 to fail instead of skip.
    """
    from nachfass.devtools import pgserver

    try:
        server = pgserver.start()
    except pgserver.PostgresUnavailable as exc:
        if os.environ.get("NACHFASS_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL engine not tested: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def spark_runtime(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The settings of a Spark warehouse of the session's own (dbt's profile output ``spark``, see
    tests/spark_support.py). Tests on Spark skip without java or pyspark (``pip install -e '.[spark]'``);
    set NACHFASS_REQUIRE_SPARK=1 to fail instead of skip."""
    from tests.spark_support import spark_available, spark_env

    missing = spark_available()
    if missing:
        if os.environ.get("NACHFASS_REQUIRE_SPARK") == "1":
            pytest.fail(f"Spark engine required (NACHFASS_REQUIRE_SPARK=1) but {missing}")
        pytest.skip(f"Spark engine not tested: {missing}")
    return spark_env(tmp_path_factory.mktemp("spark"))


@pytest.fixture
def pg_env(
    postgres_server, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> dict[str, str]:
    """A fresh database of its own for this test, selected for Python and dbt through the environment."""
    import re

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    postgres_server.drop_database(name)
    postgres_server.create_database(name)
    env = {"NACHFASS_ENGINE": "postgres", **postgres_server.env(name)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    postgres_server.drop_database(name)
