"""The A/B statistics computed in SQL (dbt macros used by analytics.ab_results) agree with statsmodels
and scipy on the same numbers."""

from __future__ import annotations

import json
import os
import random
import subprocess

import pytest
from scipy import stats
from statsmodels.stats.proportion import proportions_ztest
from tests_support import DBT_DIR, DBT_EXECUTABLE


def _cases(n: int = 120) -> list[tuple[int, int, int, int]]:
    rng = random.Random(20261124)
    cases = [(100, 1000, 130, 1000), (40, 600, 100, 1000), (5, 500, 9, 520), (0, 50, 3, 60)]
    while len(cases) < n:
        n1, n2 = rng.randint(20, 20000), rng.randint(20, 20000)
        p1, p2 = rng.uniform(0.001, 0.6), rng.uniform(0.001, 0.6)
        cases.append((int(n1 * p1), n1, int(n2 * p2), n2))
    return cases


@pytest.fixture(scope="module")
def sql_statistics(tmp_path_factory) -> dict[tuple[int, int, int, int], dict]:
    """Evaluate the dbt macros once over all cases with `dbt show --inline`."""
    cases = _cases()
    values = ", ".join(f"({x1}, {n1}, {x2}, {n2})" for x1, n1, x2, n2 in cases)
    sql = (
        "select x1, n1, x2, n2, "
        "{{ two_proportion_z('x1', 'n1', 'x2', 'n2') }} as z, "
        "{{ two_sided_p_value(two_proportion_z('x1', 'n1', 'x2', 'n2')) }} as p_value, "
        "{{ diff_ci95_half_width('x1', 'n1', 'x2', 'n2') }} as half_width "
        f"from (values {values}) as t(x1, n1, x2, n2)"
    )
    tmp = tmp_path_factory.mktemp("stats")
    env = {**os.environ, "NACHFASS_WAREHOUSE": str(tmp / "w.duckdb")}
    result = subprocess.run(
        [
            str(DBT_EXECUTABLE),
            "show",
            "--inline",
            sql,
            "--limit",
            str(len(cases)),
            "--output",
            "json",
            "--profiles-dir",
            ".",
            "--target-path",
            str(tmp / "target"),
            "--log-format",
            "json",
        ],
        cwd=DBT_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    preview = None
    for line in result.stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("data", {}).get("preview"):
            preview = json.loads(event["data"]["preview"])
    assert preview is not None, "dbt show printed no preview"
    return {(r["x1"], r["n1"], r["x2"], r["n2"]): r for r in preview}


def test_p_values_match_statsmodels_two_proportion_ztest(sql_statistics) -> None:
    checked = 0
    for (x1, n1, x2, n2), row in sql_statistics.items():
        if x1 + x2 == 0 or x1 + x2 == n1 + n2:
            assert row["p_value"] is None  # undefined: no test, no winner
            continue
        z, p = proportions_ztest([x1, x2], [n1, n2])
        assert row["z"] == pytest.approx(z, rel=1e-9, abs=1e-9)
        assert row["p_value"] == pytest.approx(p, abs=2e-7)
        checked += 1
    assert checked > 100


def test_confidence_interval_matches_scipy_normal_quantile(sql_statistics) -> None:
    z975 = stats.norm.ppf(0.975)
    for (x1, n1, x2, n2), row in sql_statistics.items():
        p1, p2 = x1 / n1, x2 / n2
        expected = z975 * ((p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2) ** 0.5)
        assert row["half_width"] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_hand_computed_example(sql_statistics) -> None:
    # 100/1000 vs 130/1000: pooled p = 0.115, se = sqrt(0.115 * 0.885 * 0.002) = 0.014267,
    # z = -0.03 / 0.014267 = -2.1028, two-sided p = 0.0355; half-width 1.96 * sqrt(.09/1000 + .1131/1000)
    row = sql_statistics[(100, 1000, 130, 1000)]
    assert row["z"] == pytest.approx(-2.1028, abs=1e-4)
    assert row["p_value"] == pytest.approx(0.0355, abs=1e-4)
    assert row["half_width"] == pytest.approx(0.02794, abs=1e-4)
