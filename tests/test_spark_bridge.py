"""The Spark engine's bridge to PostgreSQL (nachfass/core/warehouse/spark.py), without a JVM: which tables it
moves and which engine each step uses. The data it moves is checked end to end in
tests/test_engines_end_to_end.py (same decisions, ledger and mails as DuckDB; erasure)."""

from __future__ import annotations

import json

import pytest

from nachfass.core.warehouse import spark
from nachfass.core.warehouse.settings import (
    PostgresSettings,
    SettingsError,
    WarehouseSettings,
    python_steps_engine,
)


def test_every_dbt_source_is_pushed(dbt_manifest) -> None:
    """A source added to the dbt project (in any yml file) is a table Spark must get before the build."""
    manifest = json.loads(dbt_manifest.read_text(encoding="utf-8"))
    in_manifest = {(node["schema"], node["identifier"]) for node in manifest["sources"].values()}
    assert set(spark.source_tables()) == in_manifest
    assert ("mail", "sends") in in_manifest  # the ledger is among them: caps and suppressions read it


def test_the_pulled_models_are_what_the_python_steps_read() -> None:
    built = {
        "eligibility": ["mail_candidates"],
        "analytics": ["suppressions", "ab_results"],
        "intermediate": ["int_carts", "int_consent_state"],
        "staging": ["stg_orders", "stg_customers"],
        "segments": ["abandoned_cart"],
    }
    assert spark.pulled_models(built) == [
        ("eligibility", "mail_candidates"),
        ("analytics", "ab_results"),
        ("analytics", "suppressions"),
        ("intermediate", "int_consent_state"),
        ("staging", "stg_orders"),
    ]
    assert spark.pulled_models({}) == []  # nothing built yet: nothing pulled, no error


@pytest.mark.parametrize(
    ("engine", "steps_on"), [("duckdb", "duckdb"), ("postgres", "postgres"), ("spark", "postgres")]
)
def test_the_python_steps_keep_their_tables_in_postgres_beside_spark(engine: str, steps_on: str) -> None:
    env = {"NACHFASS_ENGINE": engine, "PGHOST": "db.internal", "PGPASSWORD": "s3cret"}
    assert python_steps_engine(env) == steps_on
    settings = WarehouseSettings.from_env(env)
    assert (settings.postgres is not None) == (steps_on == "postgres")
    if settings.postgres is not None:
        assert "s3cret" not in repr(settings) and settings.postgres.describe().endswith(
            "@db.internal:5432/nachfass"
        )


def test_a_missing_jdbc_driver_is_one_line_naming_the_package(tmp_path) -> None:
    with pytest.raises(SettingsError) as caught:
        spark.jdbc_jar({"NACHFASS_SPARK_JDBC_JAR": str(tmp_path / "missing.jar")})
    assert "apt-get install libpostgresql-jdbc-java" in str(caught.value) and "\n" not in str(caught.value)


def test_the_jdbc_password_stays_out_of_the_url_and_the_scrubbed_errors() -> None:
    settings = PostgresSettings(host="db", port=5433, user="u", dbname="shop", password="pa55word")
    url, properties = spark._jdbc(settings)
    assert url == "jdbc:postgresql://db:5433/shop" and properties["password"] == "pa55word"
    assert spark._scrub("FATAL: password pa55word rejected", settings) == "FATAL: password *** rejected"
