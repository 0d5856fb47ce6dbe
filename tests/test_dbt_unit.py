"""The dbt project's own checks: `dbt build` on an empty warehouse (every model, data test and unit test),
then `dbt test --select test_type:unit` again on its own, and `dbt docs generate` for the column reference.

dbt-duckdb unit tests need the upstream relations to exist (dbt reads their column types), so the build
runs first; on an empty warehouse it takes a few seconds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from tests.dbt_helpers import prepare_all, run_dbt

pytestmark = pytest.mark.slow

AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
UNIT_TESTS = {
    "int_carts_net_quantity_after_removals",
    "int_carts_reads_back_as_far_as_the_cart_segments",
    "int_carts_cart_lookback_days_reads_further_back",
    "int_consent_state_double_opt_in_withdrawal_and_reconfirmation",
    "int_send_windows_quiet_hours_midnight_holidays_time_zones",
    "int_send_windows_after_midnight_on_a_workday",
    "int_dormant_addresses_after_two_unanswered_reactivation_mails",
    "reactivation_cadence_based_inactivity",
    "mail_candidates_frequency_cap_with_priorities",
    "mail_candidates_exit_rule",
    "mail_candidates_quiet_hours_defer_or_expire",
    "mail_candidates_backlog_rollout",
    "orphans_are_held_until_their_parent_arrives",
    "shared_addresses_lists_an_address_on_two_customer_ids",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dbt_unit")
    warehouse = root / "warehouse.duckdb"
    conn = duckdb.connect(str(warehouse))
    try:
        prepare_all(conn)
    finally:
        conn.close()
    run_dbt(["build"], warehouse=warehouse, target_path=root / "target", as_of=AS_OF)
    return warehouse, root


def test_build_on_an_empty_warehouse_passes(built: tuple[Path, Path]) -> None:
    warehouse, _ = built
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert conn.execute("select count(*) from eligibility.mail_candidates").fetchone() == (0,)
    finally:
        conn.close()


def test_unit_tests_pass(built: tuple[Path, Path]) -> None:
    warehouse, root = built
    result = run_dbt(
        ["test", "--select", "test_type:unit"], warehouse=warehouse, target_path=root / "unit", as_of=AS_OF
    )
    ran = {
        line.split("::")[1].split(" ")[0]
        for line in result.stdout.splitlines()
        if " PASS " in line and "::" in line
    }
    assert not UNIT_TESTS - ran, result.stdout[-3000:]


@pytest.mark.parametrize("value", ["zwei Wochen", -3])
def test_a_cart_lookback_that_is_no_number_of_days_stops_with_the_vars_name(
    built: tuple[Path, Path], value: object
) -> None:
    warehouse, root = built
    result = run_dbt(
        ["compile", "--select", "int_carts", "--vars", json.dumps({"cart_lookback_days": value})],
        warehouse=warehouse,
        target_path=root / "bad_var",
        as_of=AS_OF,
        check=False,
    )
    assert result.returncode != 0
    expected = f"the var cart_lookback_days must be a number of days (0 or more) or null, not {value}"
    assert expected in result.stdout, result.stdout[-2000:]


# The declared interface: what analysts query and what the render and send steps read.
INTERFACE_SCHEMAS = ("segments", "eligibility", "analytics")


def test_dbt_docs_describe_every_eligibility_and_analytics_column(built: tuple[Path, Path]) -> None:
    """`dbt docs generate` on the built warehouse: every column the catalog finds in an eligibility or
    analytics table is declared in YAML with a description and a type, under an enforced contract."""
    warehouse, root = built
    target = root / "docs"
    run_dbt(["docs", "generate"], warehouse=warehouse, target_path=target, as_of=AS_OF)
    manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
    catalog = json.loads((target / "catalog.json").read_text(encoding="utf-8"))

    tables = {
        uid: node for uid, node in catalog["nodes"].items() if node["metadata"]["schema"] in INTERFACE_SCHEMAS
    }
    assert {node["metadata"]["name"] for node in tables.values()} >= {
        "mail_candidates",
        "mail_performance",
        "campaign_performance",
        "ab_results",
        "build_settings",
        "suppressions",
    }
    undescribed = []
    for uid, table in tables.items():
        model = manifest["nodes"][uid]
        assert model["config"]["contract"]["enforced"], f"{uid}: no enforced contract"
        assert model["description"].strip(), f"{uid}: no description"
        declared = {name.lower(): column for name, column in model["columns"].items()}
        for name in table["columns"]:
            column = declared.get(name.lower())
            if column is None or not column["description"].strip() or not column.get("data_type"):
                undescribed.append(f"{table['metadata']['schema']}.{table['metadata']['name']}.{name}")
    assert not undescribed, undescribed
