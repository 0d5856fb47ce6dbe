"""analytics.ab_results on a hand-built ledger, against scipy / statsmodels on the same customers: the
sample-ratio-mismatch check against the split in the segment YAML, Holm's correction for three competing
variants, the always-valid p-values, revenue per customer with Welch's interval, the winner rule, and the
Dagster asset check that reports a mismatch.

The cart experiment runs with three variants in a copy of the dbt project (the YAML is edited there), so
the shipped settings stay as they are."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest
from dbt_helpers import copy_dbt_project, days, insert_sends, iso, load_exports, run_dbt, write_exports
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest

from dagster_project.checks import ab_sample_ratio_matches
from dagster_project.resources import WarehouseResource

AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
CART = ("cart_reminder_subject_2026_11", "abandoned_cart")
REVIEW = ("review_request_subject_2026_11", "review_request")
# customers and converters per arm; the cart split is what the edited YAML configures (10 % holdout, then
# control 40 : b 30 : c 30), the review split (300 : 220 against 50 : 50) is a sample-ratio mismatch
CART_ARMS = {"holdout": (60, 3), "control": (220, 22), "b": (160, 48), "c": (160, 18)}
REVIEW_ARMS = {"control": (300, 30), "b": (220, 88)}
MIN_SENDS = 100
pytestmark = pytest.mark.slow


def _amount(i: int) -> float:
    return 20.0 + (i % 9) * 7.5


def _arm_customers(prefix: str, arms: dict[str, tuple[int, int]]) -> dict[str, list[tuple[str, float]]]:
    """Per arm: (customer id, revenue of their one attributed order, 0 for non-converters)."""
    customers, number = {}, 0
    for variant, (n, converted) in arms.items():
        rows = []
        for i in range(n):
            number += 1
            rows.append((f"{prefix}{number:04d}", _amount(number) if i < converted else 0.0))
        customers[variant] = rows
    return customers


CART_CUSTOMERS = _arm_customers("A", CART_ARMS)
REVIEW_CUSTOMERS = _arm_customers("R", REVIEW_ARMS)


def _three_variant_project(tmp: Path) -> Path:
    project = copy_dbt_project(tmp / "dbt")
    yml = project / "models" / "segments" / "abandoned_cart.yml"
    text = yml.read_text(encoding="utf-8")
    edited = text.replace(
        "              control: 50\n              b: 50\n",
        "              control: 40\n              b: 30\n              c: 30\n",
    )
    assert edited != text, "the cart experiment's weights moved in abandoned_cart.yml"
    yml.write_text(edited, encoding="utf-8")
    return project


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ab")
    warehouse, project, command = build_ab_warehouse(tmp)
    run_dbt(command, warehouse=warehouse, target_path=tmp / "target", project_dir=project)
    return warehouse


def build_ab_warehouse(tmp: Path) -> tuple[Path, Path, list[str]]:
    """The experiments' customers, orders and ledger in a DuckDB file under `tmp`, the three-variant
    dbt project and the dbt command that builds ab_results (tests/test_dbt_engines.py runs it on both
    engines)."""
    warehouse, landing = tmp / "w.duckdb", tmp / "landing"
    everyone = [c for arms in (CART_CUSTOMERS, REVIEW_CUSTOMERS) for rows in arms.values() for c in rows]
    sent_at = AS_OF - days(10)
    write_exports(
        landing,
        {
            "customers": [
                {"customer_id": cid, "email": f"{cid.lower()}@example.de", "created_at": AS_OF - days(400)}
                for cid, _ in everyone
            ],
            "orders": [
                {
                    "order_id": f"O-{cid}",
                    "customer_id": cid,
                    "status": "paid",
                    "total_amount": f"{revenue:.2f}",
                    "currency": "EUR",
                    "placed_at": sent_at + days(1),  # inside the 5-day attribution window
                }
                for cid, revenue in everyone
                if revenue
            ],
        },
    )
    load_exports(warehouse, landing)
    sends, labels = [], []

    def send(experiment, campaign, step, key, cid, variant, at):
        sends.append(
            {
                "campaign": campaign,
                "step": step,
                "trigger_key": key,
                "customer_id": cid,
                "email": f"{cid.lower()}@example.de",
                "sent_at": at,
                "status": "holdout" if variant == "holdout" else "sent",
            }
        )
        labels.append((campaign, step, key, experiment, variant))

    for (experiment, campaign), customers in ((CART, CART_CUSTOMERS), (REVIEW, REVIEW_CUSTOMERS)):
        for variant, rows in customers.items():
            for cid, _ in rows:
                send(experiment, campaign, "1", f"K-{cid}", cid, variant, sent_at)
    # a second cart for 10 non-converting control customers: 230 mails, still 220 customers
    for cid, _ in CART_CUSTOMERS["control"][-10:]:
        send(*CART, "1", f"K2-{cid}", cid, "control", AS_OF - days(3))
    # step 2 for non-converters of control and b: more rows, the same customers in the SRM check
    for variant, n in (("control", 40), ("b", 30)):
        for cid, _ in CART_CUSTOMERS[variant][-n:]:
            send(*CART, "2", f"K-{cid}", cid, variant, sent_at + days(2))
    insert_sends(warehouse, sends)
    conn = duckdb.connect(str(warehouse))
    conn.executemany(
        "update mail.sends set experiment_id = ?, variant = ? "
        "where campaign = ? and step = ? and trigger_key = ?",
        [(experiment, variant, campaign, step, key) for campaign, step, key, experiment, variant in labels],
    )
    conn.close()
    command = [
        "build",
        "--select",
        "+ab_results",
        "+build_settings",
        "--vars",
        json.dumps({"as_of": iso(AS_OF), "ab_min_sends_per_variant": MIN_SENDS}),
    ]
    return warehouse, _three_variant_project(tmp), command


@pytest.fixture(scope="module")
def results(built) -> dict[tuple[str, str, str], dict]:
    conn = duckdb.connect(str(built), read_only=True)
    cursor = conn.execute("select * from analytics.ab_results")
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    conn.close()
    return {(r["experiment_id"], r["step"], r["variant"]): r for r in rows}


def _revenues(rows: list[tuple[str, float]]) -> np.ndarray:
    return np.array([revenue for _, revenue in rows])


def test_counts_mails_and_customers_apart(results) -> None:
    control = results[(CART[0], "1", "control")]
    assert (control["n_assigned"], control["n_customers"], control["n_converted"]) == (230, 220, 22)
    assert control["conversion_rate"] == pytest.approx(22 / 230)
    revenue = _revenues(CART_CUSTOMERS["control"])
    assert control["revenue_per_customer"] == pytest.approx(revenue.sum() / 220)
    step2 = results[(CART[0], "2", "b")]
    assert (step2["n_assigned"], step2["n_customers"], step2["n_converted"]) == (30, 30, 0)


def test_sample_ratio_matches_the_configured_split(results) -> None:
    observed = [CART_ARMS[v][0] for v in ("holdout", "control", "b", "c")]
    shares = [0.10, 0.90 * 0.4, 0.90 * 0.3, 0.90 * 0.3]
    chi2, p = stats.chisquare(observed, f_exp=[s * sum(observed) for s in shares])
    for step, variant in (("1", "holdout"), ("1", "control"), ("1", "b"), ("1", "c"), ("2", "b")):
        row = results[(CART[0], step, variant)]
        assert row["srm_chi_square"] == pytest.approx(chi2, rel=1e-9)
        assert row["srm_p_value"] == pytest.approx(p, abs=2e-7)  # chi-square with 3 degrees of freedom
        assert not row["has_sample_ratio_mismatch"]
    holdout = results[(CART[0], "1", "holdout")]
    assert (holdout["srm_expected_share"], holdout["srm_observed_share"]) == pytest.approx((0.1, 0.1))
    assert results[(CART[0], "1", "b")]["srm_expected_share"] == pytest.approx(0.27)


def test_sample_ratio_mismatch_is_flagged_and_blocks_the_winner(results) -> None:
    chi2, p = stats.chisquare([300, 220], f_exp=[260, 260])
    b = results[(REVIEW[0], "1", "b")]
    assert b["srm_chi_square"] == pytest.approx(chi2) and b["srm_p_value"] == pytest.approx(p, abs=2e-7)
    assert p < 0.001 and b["has_sample_ratio_mismatch"]
    assert results[(REVIEW[0], "1", "control")]["has_sample_ratio_mismatch"]
    # 40 % vs 10 % would be a clear winner on any p-value, but the split is broken
    assert b["seq_p_value_holm"] < 1e-6
    assert not b["is_winner"]


def _sequential_p(diff: float, variance: float, n: int, alpha: float = 0.05, tuning_n: int = 5000) -> float:
    # GrowthBook's SequentialTwoSidedTTest.p_value (gbstats), written out: 1 / the mixture likelihood ratio
    rho2 = (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / tuning_n
    return min(
        1.0, math.sqrt(n * rho2 + 1) * math.exp(-(diff**2 / variance) * n * rho2 / (2 * (n * rho2 + 1)))
    )


def test_three_variants_are_holm_adjusted(results) -> None:
    control = (22, 230)
    fixed, sequential = {}, {}
    for variant in ("b", "c"):
        row = results[(CART[0], "1", variant)]
        x, n = CART_ARMS[variant][1], CART_ARMS[variant][0]
        _, fixed[variant] = proportions_ztest([x, control[0]], [n, control[1]])
        p1, p2 = x / n, control[0] / control[1]
        sequential[variant] = _sequential_p(p1 - p2, p1 * (1 - p1) / n + p2 * (1 - p2) / control[1], n + 230)
        assert row["p_value"] == pytest.approx(fixed[variant], abs=2e-7)
        assert row["seq_p_value"] == pytest.approx(sequential[variant], rel=1e-9)
    holm_fixed = multipletests([fixed["b"], fixed["c"]], method="holm")[1]
    holm_sequential = multipletests([sequential["b"], sequential["c"]], method="holm")[1]
    for variant, expected_fixed, expected_sequential in zip(
        ("b", "c"), holm_fixed, holm_sequential, strict=True
    ):
        row = results[(CART[0], "1", variant)]
        assert row["p_value_holm"] == pytest.approx(expected_fixed, abs=4e-7)
        assert row["seq_p_value_holm"] == pytest.approx(expected_sequential, rel=1e-9)
    # b's raw always-valid p is below 0.05 and stays there after the correction: a winner
    assert sequential["b"] < holm_sequential[0] < 0.05
    # control vs holdout is its own question: a family of one, unadjusted
    uplift = results[(CART[0], "1", "control")]
    assert uplift["baseline_variant"] == "holdout" and uplift["p_value_holm"] == uplift["p_value"]


def test_always_valid_interval_is_wider_and_agrees_with_its_p_value(results) -> None:
    for key in ((CART[0], "1", "b"), (CART[0], "1", "c"), (CART[0], "1", "control")):
        row = results[key]
        fixed = row["diff_ci95_high"] - row["diff_ci95_low"]
        sequential = row["diff_seq_ci95_high"] - row["diff_seq_ci95_low"]
        assert sequential > fixed
        assert (row["seq_p_value"] < 0.05) == (row["diff_seq_ci95_low"] > 0 or row["diff_seq_ci95_high"] < 0)


def test_revenue_per_customer_has_welchs_interval(results) -> None:
    for variant, baseline in (("b", "control"), ("c", "control"), ("control", "holdout")):
        row = results[(CART[0], "1", variant)]
        mine, theirs = _revenues(CART_CUSTOMERS[variant]), _revenues(CART_CUSTOMERS[baseline])
        result = stats.ttest_ind(mine, theirs, equal_var=False)
        low, high = result.confidence_interval(0.95)
        se = math.sqrt(mine.var(ddof=1) / len(mine) + theirs.var(ddof=1) / len(theirs))
        assert row["revenue_per_customer_diff"] == pytest.approx(mine.mean() - theirs.mean())
        assert row["revenue_diff_ci95_low"] == pytest.approx(low, abs=1e-5 * se)  # df > 10 here
        assert row["revenue_diff_ci95_high"] == pytest.approx(high, abs=1e-5 * se)
        assert row["revenue_p_value"] == pytest.approx(result.pvalue, abs=5e-6)
        assert row["revenue_diff_seq_ci95_low"] < low and row["revenue_diff_seq_ci95_high"] > high


def test_winner_rule(results) -> None:
    winners = {key for key, row in results.items() if row["is_winner"]}
    # b: enough assigned on both sides, always-valid Holm-adjusted p < 0.05, better than control, no SRM;
    # review b is better still but its experiment has a sample-ratio mismatch
    assert winners == {(CART[0], "1", "b")}


def test_asset_check_reports_the_mismatched_experiment(built, tmp_path) -> None:
    result = ab_sample_ratio_matches(warehouse=WarehouseResource(path=str(built)))
    assert not result.passed
    assert result.metadata["mismatched"].value == [f"{REVIEW[0]}/{REVIEW[1]}"]
    assert result.metadata["experiments_checked"].value == 2
    # the same warehouse with the review experiment's split repaired passes
    repaired = tmp_path / "repaired.duckdb"
    repaired.write_bytes(built.read_bytes())
    conn = duckdb.connect(str(repaired))
    conn.execute("update analytics.ab_results set has_sample_ratio_mismatch = false")
    conn.close()
    assert ab_sample_ratio_matches(warehouse=WarehouseResource(path=str(repaired))).passed
