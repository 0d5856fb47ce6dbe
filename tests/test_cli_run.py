"""`nachfass run` as an operator types it: the exit code says whether the job succeeded."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime

import duckdb
import pytest

from nachfass.cli.main import main
from nachfass.devtools.datagen.generate import generate_exports

AS_OF = "2026-11-24T10:00:00Z"


@pytest.mark.slow
@pytest.mark.clock
def test_ingest_job_exits_0_on_a_fresh_warehouse(workspace, dbt_manifest, capsys) -> None:
    """Issue 12, item 8: the summary used to query eligibility.mail_candidates, which ingest_job does not
    build, and the command exited 1 after a successful run."""
    generate_exports(workspace["landing"], customers=60, seed=3, as_of=datetime(2026, 11, 24, 10, tzinfo=UTC))
    code = main(["run", "--job", "ingest_job", "--as-of", AS_OF])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "files loaded" in out
    assert "mail_candidates" not in out  # not built by this job, so not summarised


def test_a_mistyped_engine_stops_the_run_before_anything_starts(workspace, monkeypatch, capsys) -> None:
    monkeypatch.setenv("NACHFASS_ENGINE", "postgress")
    assert main(["run", "--as-of", AS_OF]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "NACHFASS_ENGINE='postgress' is not a known engine; use one of: duckdb, postgres, spark"
    )
    assert not workspace["warehouse"].exists()  # nothing was opened or written


def test_spark_without_its_jdbc_driver_stops_the_run_before_anything_starts(
    workspace, monkeypatch, capsys, tmp_path
) -> None:
    """NACHFASS_ENGINE=spark reads and writes the ledger's PostgreSQL over JDBC: a missing driver stops the
    run with one line naming the package, before any table is opened (java and pyspark are checked the
    same way; this test passes with or without them: the run stops on whichever is missing first)."""
    from nachfass.core.warehouse.settings import engine, python_steps_engine

    monkeypatch.setenv("NACHFASS_ENGINE", "spark")
    monkeypatch.setenv("NACHFASS_SPARK_JDBC_JAR", str(tmp_path / "no-such-driver.jar"))
    assert engine() == "spark" and python_steps_engine() == "postgres"
    assert main(["run", "--as-of", AS_OF]) == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("NACHFASS_ENGINE=spark "), message
    assert any(hint in message for hint in ("libpostgresql-jdbc-java", "openjdk-17", "pip install")), message
    assert not workspace["warehouse"].exists()


@pytest.mark.slow
@pytest.mark.clock
def test_a_scheduled_slot_runs_from_the_command_line(workspace, dbt_manifest, capsys) -> None:
    """`nachfass run --partition` crashed with a TypeError before any step: Dagster 1.13's
    JobDefinition.validate_partition_key wants a loading context. A slot's run decides as of its end."""
    generate_exports(workspace["landing"], customers=60, seed=3, as_of=datetime(2026, 11, 24, 10, tzinfo=UTC))
    code = main(["run", "--job", "frequent_mails_job", "--partition", "2026-11-24-11:00"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "files loaded" in out and "mail_candidates" in out


FREQUENT = {"abandoned_cart", "checkout_recovery", "order_thanks", "shipping_update"}
DAILY = {"review_request", "cross_sell", "reactivation", "support_followup"}


def _warehouse_state(path, carts: bool = True) -> dict:
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = {
            f"{schema}.{name}"
            for schema, name in conn.sql(
                "select table_schema, table_name from information_schema.tables"
            ).fetchall()
        }
        segments = {}
        for campaign in FREQUENT | DAILY:
            if f"segments.{campaign}" in tables:
                rows = conn.sql(f"select * from segments.{campaign} order by all").fetchall()
                segments[campaign] = hashlib.sha256(repr(rows).encode()).hexdigest()
        carts = conn.sql("select * from intermediate.int_carts order by all").fetchall() if carts else None
        return {
            "tables": tables,
            "segments": segments,
            "carts": hashlib.sha256(repr(carts).encode()).hexdigest(),
            "candidates": dict(
                conn.sql("select campaign, count(*) from eligibility.mail_candidates group by 1").fetchall()
            ),
            "targets": {
                kind
                for (kind,) in conn.sql(
                    "select distinct target_type from intermediate.int_product_recommendations"
                ).fetchall()
            },
            "order_lines": {
                o for (o,) in conn.sql("select order_id from intermediate.int_order_lines").fetchall()
            },
            # the orders the daily order mails are about, and whether each shows its lines
            "daily_orders": {
                campaign: dict(
                    conn.sql(
                        "select trigger_key, json_array_length(payload->'items') > 0 "
                        f"from segments.{campaign}"
                    ).fetchall()
                )
                for campaign in ("review_request", "cross_sell")
                if f"segments.{campaign}" in tables
            },
        }


@pytest.mark.slow
def test_a_15_minute_run_builds_only_what_its_campaigns_need(workspace, dbt_manifest) -> None:
    """The 15-minute job sends the time-critical campaigns; it leaves the daily campaigns' segments, the
    models only they need and their recommendation targets to the runs that send them (at 1M customers
    ~15 s of every 15-minute run), while `mail_candidates` keeps deciding over every campaign. The daily
    job leaves the 15-minute campaigns' the same way."""
    generate_exports(
        workspace["landing"], customers=300, seed=5, as_of=datetime(2026, 11, 24, 10, tzinfo=UTC)
    )
    # the warehouse's first run is a 15-minute one: the daily campaigns' segments were never built
    assert main(["run", "--job", "frequent_mails_job", "--partition", "2026-11-24-11:00"]) == 0
    first = _warehouse_state(workspace["warehouse"])
    assert set(first["segments"]) == FREQUENT
    assert "intermediate.int_customer_order_gaps" not in first["tables"]
    assert set(first["candidates"]) <= FREQUENT and "abandoned_cart" in first["candidates"]
    assert first["targets"] == {"cart"}
    # the main job builds everything, with every kind of recommendation target and the lines of every order
    # an order mail may show, the daily ones' too
    assert main(["run", "--as-of", "2026-11-24T10:20:00Z"]) == 0
    full = _warehouse_state(workspace["warehouse"])
    assert set(full["segments"]) == FREQUENT | DAILY
    assert full["targets"] == {"cart", "order", "customer"}
    daily_orders = set().union(*full["daily_orders"].values())
    assert daily_orders and daily_orders <= full["order_lines"]
    assert all(all(shown.values()) for shown in full["daily_orders"].values())
    assert DAILY & set(full["candidates"])
    # the next 15-minute run rebuilds its own segments and reads the daily ones as the main job left them
    assert main(["run", "--job", "frequent_mails_job", "--partition", "2026-11-24-11:30"]) == 0
    after = _warehouse_state(workspace["warehouse"])
    assert {c: after["segments"][c] for c in DAILY} == {c: full["segments"][c] for c in DAILY}
    assert after["targets"] == {"cart"}
    assert DAILY & set(after["candidates"]) == DAILY & set(full["candidates"])
    # the order lines only of the orders its own order mails may show: not the daily ones' delivered weeks ago
    assert after["order_lines"] < full["order_lines"]
    assert daily_orders - after["order_lines"]
    # the daily run (09:00 Berlin the next morning) does the same the other way round: it rebuilds the daily
    # campaigns' segments, not the 15-minute ones' nor the carts only those read, and no cart targets
    assert main(["run", "--job", "daily_mails_job", "--partition", "2026-11-24"]) == 0
    daily = _warehouse_state(workspace["warehouse"])
    assert {c: daily["segments"][c] for c in FREQUENT} == {c: after["segments"][c] for c in FREQUENT}
    assert daily["carts"] == after["carts"]
    assert "order" in daily["targets"] and "cart" not in daily["targets"]
    assert all(all(shown.values()) for shown in daily["daily_orders"].values())
    # mail_candidates still decides over every campaign, the 15-minute ones from their segments as they are
    assert DAILY & set(daily["candidates"]) and FREQUENT & set(daily["candidates"])


@pytest.mark.slow
def test_a_warehouse_whose_first_run_is_a_daily_one(workspace, dbt_manifest) -> None:
    """The daily job leaves out the carts only the cart campaigns read: on a fresh warehouse it never
    built them, and the recommendations of its own campaigns must not read them."""
    generate_exports(
        workspace["landing"], customers=300, seed=5, as_of=datetime(2026, 11, 24, 10, tzinfo=UTC)
    )
    assert main(["run", "--job", "daily_mails_job", "--partition", "2026-11-23"]) == 0
    state = _warehouse_state(workspace["warehouse"], carts=False)
    assert "intermediate.int_carts" not in state["tables"]
    assert set(state["segments"]) == DAILY
    assert "order" in state["targets"] and "cart" not in state["targets"]
    assert set(state["candidates"]) <= DAILY and "review_request" in state["candidates"]


def test_an_unknown_slot_stops_with_one_line(workspace, dbt_manifest, capsys) -> None:
    assert main(["run", "--job", "frequent_mails_job", "--partition", "2026-11-24-11:07"]) == 1
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("frequent_mails_job has no partition '2026-11-24-11:07'")
    assert not workspace["warehouse"].exists()


@pytest.mark.slow
def test_a_run_whose_mail_steps_were_skipped_fails(workspace, dbt_manifest, capsys, monkeypatch) -> None:
    """When the dbt build does not report `mail_candidates` (here: left out of the build with its tests; on
    Spark it was a progress bar that swallowed the model's log line), Dagster skips the render and send steps
    and calls the run a success. The command must not: nothing was sent, so it exits 1 and names the skipped
    steps."""
    from dagster_project import dbt_assets

    build_args = dbt_assets.dbt_build_args
    monkeypatch.setattr(
        dbt_assets, "dbt_build_args", lambda *a, **k: [*build_args(*a, **k), "--exclude", "mail_candidates+"]
    )
    generate_exports(workspace["landing"], customers=60, seed=3, as_of=datetime(2026, 11, 24, 10, tzinfo=UTC))
    assert main(["run", "--as-of", AS_OF]) == 1
    err = capsys.readouterr().err
    assert "step mail__rendered_mails was skipped: an asset it needs was not materialized" in err, err[-3000:]
    assert "step mail__sent_mails was skipped" in err
    assert not workspace["outbox"].exists() or not any(workspace["outbox"].iterdir())


@pytest.mark.slow
def test_runs_skip_the_unit_tests_only_while_they_last_passed_for_the_same_models(
    workspace, dbt_manifest, monkeypatch, tmp_path, capsys
) -> None:
    """The dbt unit tests check the models' SQL on fixed rows, not the shop's data: runs, scheduled or by
    hand, run them once for a given state of the dbt project (models, macros, campaign vars, versions,
    engine) and skip them while that state stays; the record is only written after a build that passed
    them, and `nachfass run --unit-tests` runs them regardless."""
    import dagster as dg

    from dagster_project.dbt_project import unit_test_inputs, unit_tests_passed
    from nachfass.core.engine import dbt_engine

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))  # a persistent instance to read
    (tmp_path / "dagster_home").mkdir()
    # The record is shared by every run of this dbt project; the warehouse's database name is part of the
    # state (other tests' warehouses are all named `warehouse`), so this test starts where none passed.
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(tmp_path / f"unit{uuid.uuid4().hex[:12]}.duckdb"))

    def skipped(run_id: str) -> bool:
        with dg.DagsterInstance.get() as instance:
            return any(r.message.startswith("dbt unit tests skipped") for r in instance.all_logs(run_id))

    def last_run() -> str:
        with dg.DagsterInstance.get() as instance:
            return next(r.run_id for r in instance.get_runs(limit=1))

    generate_exports(workspace["landing"], customers=60, seed=3, as_of=datetime(2026, 11, 24, 10, tzinfo=UTC))
    inputs = unit_test_inputs(dbt_engine())
    manifest = json.loads(dbt_manifest.read_text())
    everyone = set(manifest["unit_tests"])
    assert unit_tests_passed(inputs) is None
    # The first run of this warehouse is a 15-minute one: it tests the models it builds, except those whose
    # inputs it neither builds nor finds (the daily campaigns' segments): dbt reads their column types.
    assert main(["run", "--job", "frequent_mails_job", "--partition", "2026-11-24-11:00"]) == 0
    first = unit_tests_passed(inputs)
    assert first is not None and not skipped(first["run_id"])  # they ran, passed, and that was recorded
    tested_first = set(first["unit_tests"])
    assert "unit_test.nachfass.int_carts.int_carts_net_quantity_after_removals" in tested_first
    assert (
        "unit_test.nachfass.mail_candidates.mail_candidates_exit_rule" not in tested_first
    )  # reads cross_sell
    assert not any(".reactivation." in name or ".quality." in name for name in tested_first)  # not built
    assert main(["run", "--as-of", "2026-11-24T10:20:00Z"]) == 0  # nachfass_job, by hand (slots: Berlin)
    second = last_run()
    # the main job builds everything: it runs the unit tests the first run did not, and only those
    assert second != first["run_id"] and not skipped(second)
    assert set(unit_tests_passed(inputs)["unit_tests"]) == everyone
    assert unit_tests_passed(inputs)["run_id"] == second
    with dg.DagsterInstance.get() as instance:
        logs = "\n".join(r.message for r in instance.all_logs(second))
    assert f"{len(tested_first)} dbt unit tests skipped: they passed" in logs
    # now every one has passed: a 15-minute run skips them all and records nothing
    assert main(["run", "--job", "frequent_mails_job", "--partition", "2026-11-24-11:15"]) == 0
    assert skipped(last_run()) and unit_tests_passed(inputs)["run_id"] == second
    slot = ["--job", "frequent_mails_job", "--partition", "2026-11-24-11:30"]
    assert main(["run", *slot, "--unit-tests"]) == 0
    third = last_run()
    assert not skipped(third) and unit_tests_passed(inputs)["run_id"] == third
    capsys.readouterr()
    assert main(["run", "--job", "ingest_job", "--unit-tests"]) == 1
    assert "ingest_job does not build the dbt models" in capsys.readouterr().err
