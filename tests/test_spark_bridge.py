"""The Spark engine's bridge to PostgreSQL (nachfass/core/warehouse/spark.py), without a JVM: which tables it
moves and which engine each step uses. The data it moves is checked end to end in
tests/test_engines_end_to_end_spark.py (same decisions, ledger and mails as DuckDB; erasure)."""

from __future__ import annotations

import json

import jinja2
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from nachfass.core import paths
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


# --- the incremental push: which tables get only their new loads --------------------------------------

loads_strategy = st.dictionaries(
    st.tuples(st.sampled_from(["a.csv", "b.csv", "c.parquet", "o'brien.csv"]), st.sampled_from(["t1", "t2"])),
    st.integers(min_value=0, max_value=5),
    max_size=6,
)


@given(source=loads_strategy, target=loads_strategy)
def test_a_push_appends_only_when_sparks_copy_is_exactly_some_of_postgres_loads(source, target) -> None:
    """Appending is right iff every load Spark holds is in PostgreSQL with the same rows; then exactly the
    loads Spark lacks are appended, and after the append Spark's loads equal PostgreSQL's."""
    plan = spark.plan_push(target, source)
    is_prefix = all(source.get(load) == rows for load, rows in target.items())
    if not is_prefix:
        assert plan.action == "copied" and "differs" in plan.reason
        return
    missing = {load for load in source if load not in target}
    assert plan.action == ("appended" if missing else "unchanged")
    assert set(plan.loads) == missing
    assert {**target, **{load: source[load] for load in plan.loads}} == source


def test_a_push_copies_whole_what_it_cannot_append_exactly() -> None:
    source = {("a.csv", "t1"): 3, ("b.csv", "t2"): 2}
    target = {("a.csv", "t1"): 3}
    assert spark.plan_push(target, source) == spark.PushPlan("appended", loads=(("b.csv", "t2"),))
    # a row of a load Spark has was deleted in PostgreSQL (an erasure, a cleanup)
    assert spark.plan_push({("a.csv", "t1"): 4}, source).action == "copied"
    # a load Spark has is gone from PostgreSQL (a rebuilt database)
    assert spark.plan_push({("z.csv", "t0"): 1}, source).action == "copied"
    assert spark.plan_push(None, source).reason == "not in Spark yet"
    assert spark.plan_push(target, source, erasures_changed=True).reason.startswith("a person was erased")
    assert spark.plan_push(target, source, same_columns=False).reason == "the columns changed"
    # too many small parquet files: rewritten whole, which compacts them; nothing new: left alone
    assert spark.plan_push(target, source, files=200, max_files=200).action == "copied"
    assert spark.plan_push(source, source, files=500, max_files=200).action == "unchanged"


def test_the_tables_that_grow_by_load_have_a_load_key() -> None:
    from nachfass.core.schema import EVENT_QUARANTINE, QUARANTINE, RAW_TABLES, SENDGRID_EVENTS, SENDS

    for table in [*RAW_TABLES.values(), SENDGRID_EVENTS, QUARANTINE, EVENT_QUARANTINE]:
        assert spark.load_key(c.name for c in table.columns) is not None, table.qualified
    assert spark.load_key(c.name for c in SENDS.columns) is None  # updated in place: always copied whole


def test_the_filter_of_new_loads_quotes_file_names() -> None:
    condition = spark.loads_filter(("_file", "_loaded_at"), [("o'brien.csv", "2026-11-24 10:00:00.000000")])
    assert condition == (
        "(\"_file\", \"_loaded_at\") in (('o''brien.csv', timestamp '2026-11-24 10:00:00.000000'))"
    )


@pytest.mark.parametrize(
    "env",
    [
        {"NACHFASS_DATA": "/srv/nachfass"},
        {
            "NACHFASS_DATA": "/srv/nachfass",
            "NACHFASS_SPARK_MASTER": "spark://master:7077",
            "NACHFASS_SPARK_DRIVER_MEMORY": "6g",
            "NACHFASS_SPARK_WAREHOUSE_DIR": "s3a://bucket/warehouse",
            "NACHFASS_SPARK_METASTORE_DIR": "/srv/metastore_db",
            "NACHFASS_SPARK_SHUFFLE_PARTITIONS": "64",
        },
    ],
)
def test_the_push_and_pull_session_has_the_settings_of_dbts_profile(env: dict[str, str]) -> None:
    """The push and the pull open the catalog dbt builds in, with the same settings (time zone, JSON nulls,
    constraint propagation …): dbt's profile and ``session_settings`` list them by hand, twice."""
    profile = yaml.safe_load((paths.dbt_project_dir() / "profiles.yml").read_text(encoding="utf-8"))
    parameters = next(
        output["server_side_parameters"]
        for project in profile.values()
        for output in project.get("outputs", {}).values()
        if output.get("type") == "spark"
    )
    jinja = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env_var = lambda name, default=None: env.get(name, default)  # noqa: E731 (dbt's env_var)
    rendered = {
        key: jinja.from_string(str(value)).render(env_var=env_var) for key, value in parameters.items()
    }
    assert rendered == spark.session_settings(env)
