"""The A/B statistics computed in SQL (dbt macros used by analytics.ab_results) agree with statsmodels,
scipy, or the definition computed another way (numerical integration, simulation) on the same numbers."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportions_ztest
from tests_support import DBT_DIR, DBT_EXECUTABLE

from nachfass.core.dbt import dbt_vars_arg


def _cases(n: int = 120) -> list[tuple[int, int, int, int]]:
    rng = random.Random(20261124)
    cases = [(100, 1000, 130, 1000), (40, 600, 100, 1000), (5, 500, 9, 520), (0, 50, 3, 60)]
    while len(cases) < n:
        n1, n2 = rng.randint(20, 20000), rng.randint(20, 20000)
        p1, p2 = rng.uniform(0.001, 0.6), rng.uniform(0.001, 0.6)
        cases.append((int(n1 * p1), n1, int(n2 * p2), n2))
    return cases


def dbt_show(sql: str, tmp: Path, limit: int, warehouse: Path | None = None) -> list[dict]:
    """Run `dbt show --inline` (the project's macros compiled into `sql`) and return its rows."""
    env = {**os.environ, "NACHFASS_WAREHOUSE": str(warehouse or tmp / "w.duckdb")}
    result = subprocess.run(
        [
            str(DBT_EXECUTABLE),
            "show",
            "--inline",
            sql,
            "--limit",
            str(limit),
            "--output",
            "json",
            "--profiles-dir",
            ".",
            "--target-path",
            str(tmp / "target"),
            "--log-path",
            str(tmp / "logs"),
            "--log-format",
            "json",
            *dbt_vars_arg(),
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
    return preview


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
    rows = dbt_show(sql, tmp_path_factory.mktemp("stats"), len(cases))
    return {(r["x1"], r["n1"], r["x2"], r["n2"]): r for r in rows}


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


# ---- sample-ratio mismatch: the chi-square survival function ----------------------------------------------

CHI_SQUARE_POINTS = (0.0, 0.01, 0.5, 1.0, 2.5, 3.84, 6.0, 10.0, 13.8, 20.0, 30.0, 60.0)


@pytest.fixture(scope="module")
def sql_chi_square(tmp_path_factory) -> dict[tuple[float, int], float]:
    values = ", ".join(f"({x})" for x in CHI_SQUARE_POINTS)
    sql = " union all ".join(
        f"select x, {df} as df, {{{{ chi_square_sf('x', {df}) }}}} as sf from (values {values}) as t(x)"
        for df in range(1, 8)
    )
    rows = dbt_show(sql, tmp_path_factory.mktemp("chi2"), 7 * len(CHI_SQUARE_POINTS))
    return {(float(r["x"]), r["df"]): r["sf"] for r in rows}


def test_chi_square_survival_matches_scipy(sql_chi_square) -> None:
    assert len(sql_chi_square) == 7 * len(CHI_SQUARE_POINTS)
    for (x, df), sf in sql_chi_square.items():
        # the odd degrees use the normal tail (A&S 26.2.17, error < 7.5e-8, twice)
        assert sf == pytest.approx(stats.chi2.sf(x, df), abs=2e-7), (x, df)
    # around the SRM threshold the relative error is small too
    assert sql_chi_square[(13.8, 1)] == pytest.approx(stats.chi2.sf(13.8, 1), rel=1e-3)


# ---- always-valid inference: the normal-mixture confidence sequence ---------------------------------------

ALPHA = 0.05
TUNING_N = 5000  # dbt_project.yml var ab_sequential_tuning_n


def _rho_squared(alpha: float = ALPHA, tuning_n: float = TUNING_N) -> float:
    # Waudby-Smith et al. (2023), eq. 161: the mixing variance that makes the boundary tightest at tuning_n
    return (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / tuning_n


def _mixture_p_value(z: float, n: float, rho2: float) -> float:
    """1 / (Robbins' normal mixture of likelihood ratios), integrated numerically: for a sum S = z sqrt(n) of
    n unit-variance terms, M = integral of exp(theta S - theta² n / 2) over theta ~ N(0, rho2). Computed
    around the integrand's peak in log space, so large z does not overflow."""
    s = z * math.sqrt(n)
    precision = n + 1 / rho2
    peak = s / precision

    def log_f(theta: float) -> float:
        return theta * s - theta**2 * n / 2 - theta**2 / (2 * rho2) - 0.5 * math.log(2 * math.pi * rho2)

    width = 40 / math.sqrt(precision)
    integral, _ = integrate.quad(lambda t: math.exp(log_f(t) - log_f(peak)), peak - width, peak + width)
    log_m = log_f(peak) + math.log(integral)
    return 1.0 if log_m <= 0 else math.exp(-log_m)


def _sequential_cases(n: int = 60) -> list[tuple[int, int, int, int]]:
    rng = random.Random(7)
    cases = [(100, 1000, 130, 1000), (520, 5000, 600, 5000), (30, 120, 20, 130)]
    while len(cases) < n:
        n1, n2 = rng.randint(50, 40000), rng.randint(50, 40000)
        p1 = rng.uniform(0.01, 0.4)
        p2 = p1 * rng.uniform(0.7, 1.3)
        cases.append((int(n1 * p1), n1, int(n2 * p2), n2))
    return cases


@pytest.fixture(scope="module")
def sql_sequential(tmp_path_factory) -> dict[tuple[int, int, int, int], dict]:
    cases = _sequential_cases()
    values = ", ".join(f"({x1}, {n1}, {x2}, {n2})" for x1, n1, x2, n2 in cases)
    sql = (
        "select x1, n1, x2, n2, "
        "{{ sequential_p_value('x1 / n1::double - x2 / n2::double', "
        "proportion_diff_variance('x1', 'n1', 'x2', 'n2'), 'n1 + n2') }} as p_value, "
        "{{ sequential_half_width(proportion_diff_variance('x1', 'n1', 'x2', 'n2'), 'n1 + n2') }} "
        "as half_width "
        f"from (values {values}) as t(x1, n1, x2, n2)"
    )
    rows = dbt_show(sql, tmp_path_factory.mktemp("sequential"), len(cases))
    return {(r["x1"], r["n1"], r["x2"], r["n2"]): r for r in rows}


def test_sequential_p_value_is_the_inverse_mixture_likelihood_ratio(sql_sequential) -> None:
    rho2 = _rho_squared()
    below = 0
    for (x1, n1, x2, n2), row in sql_sequential.items():
        p1, p2 = x1 / n1, x2 / n2
        variance = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
        z = (p1 - p2) / math.sqrt(variance)
        expected = _mixture_p_value(z, n1 + n2, rho2)
        assert row["p_value"] == pytest.approx(expected, rel=1e-6, abs=1e-12), (x1, n1, x2, n2)
        below += expected < ALPHA
    assert 0 < below < len(sql_sequential)  # the cases reach both sides of alpha


def test_sequential_interval_ends_where_the_p_value_reaches_alpha(sql_sequential) -> None:
    """The always-valid interval holds exactly the differences the mixture test would not reject: its
    half-width solves p(d) = alpha, found here by root search on the numerically integrated mixture."""
    rho2 = _rho_squared()
    for (x1, n1, x2, n2), row in list(sql_sequential.items())[:20]:
        p1, p2 = x1 / n1, x2 / n2
        variance = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
        n = n1 + n2
        boundary = optimize.brentq(
            lambda d: _mixture_p_value(d / math.sqrt(variance), n, rho2) - ALPHA,  # noqa: B023
            1e-9,
            50 * math.sqrt(variance),
            xtol=1e-14,
        )
        assert row["half_width"] == pytest.approx(boundary, rel=1e-6)
        fixed = stats.norm.ppf(1 - ALPHA / 2) * math.sqrt(variance)
        assert row["half_width"] > fixed  # the price of peeking: wider than the fixed-horizon interval
        assert (row["p_value"] < ALPHA) == (abs(p1 - p2) > row["half_width"])


def _daily_peeks(tmp: Path, *, p_control: float, p_variant: float, seed: int) -> Path:
    """Cumulative conversions of simulated experiments, read every day: 400 experiments x 30 days with
    150 new customers per arm and day (the shape of a daily-peeking analyst's view)."""
    rng = np.random.default_rng(seed)
    n_sims, n_days, per_day = 400, 30, 150
    x1 = rng.binomial(per_day, p_variant, size=(n_sims, n_days)).cumsum(axis=1)
    x2 = rng.binomial(per_day, p_control, size=(n_sims, n_days)).cumsum(axis=1)
    n = per_day * np.arange(1, n_days + 1)
    frame = pd.DataFrame(
        {
            "sim": np.repeat(np.arange(n_sims), n_days),
            "day": np.tile(np.arange(1, n_days + 1), n_sims),
            "x1": x1.ravel(),
            "x2": x2.ravel(),
            "n": np.tile(n, n_sims),
        }
    )
    path = tmp / f"peeks_{seed}.parquet"
    frame.to_parquet(path)
    return path


def _peeking_error_rates(tmp: Path, parquet: Path) -> dict:
    sql = (
        "with peeks as ("
        "select sim, day, "
        "{{ two_sided_p_value(two_proportion_z('x1', 'n', 'x2', 'n')) }} as p_fixed, "
        "{{ sequential_p_value('x1 / n::double - x2 / n::double', "
        "proportion_diff_variance('x1', 'n', 'x2', 'n'), '2 * n') }} as p_sequential "
        f"from read_parquet('{parquet}')) "
        "select count(distinct sim) filter (where p_fixed < 0.05) / count(distinct sim) as fixed_ever, "
        "count(distinct sim) filter (where p_sequential < 0.05) / count(distinct sim) as sequential_ever, "
        "count(*) filter (where day = 30 and p_fixed < 0.05) / count(distinct sim) as fixed_at_the_end "
        "from peeks"
    )
    return dbt_show(sql, tmp, 1)[0]


@pytest.fixture(scope="module")
def peeking(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("peeking")
    return {
        "no_effect": _peeking_error_rates(tmp, _daily_peeks(tmp, p_control=0.1, p_variant=0.1, seed=1)),
        "effect": _peeking_error_rates(tmp, _daily_peeks(tmp, p_control=0.1, p_variant=0.12, seed=2)),
    }


def test_daily_peeking_keeps_the_sequential_error_rate(peeking) -> None:
    """With no true difference, an analyst who looks every day and stops at the first p < 0.05 declares a
    false winner far more often than 5 % with the fixed-horizon p-value, and at most 5 % with the
    always-valid one (Monte-Carlo, 400 experiments, 30 daily looks)."""
    null = peeking["no_effect"]
    assert null["fixed_at_the_end"] == pytest.approx(0.05, abs=0.035)  # one look: the test is fine
    assert null["fixed_ever"] > 0.15  # daily looks: the fixed-horizon test is not
    assert null["sequential_ever"] <= 0.05


def test_sequential_test_still_finds_a_real_difference(peeking) -> None:
    # 10 % vs 12 % conversion, 4,500 customers per arm by day 30: the always-valid test finds it in more than
    # half of the experiments (a single fixed-horizon look at day 30: about 80 %; that gap is the price of
    # being allowed to look every day), so its guarantee is not bought by never rejecting
    effect = peeking["effect"]
    assert effect["sequential_ever"] > 0.5
    assert effect["fixed_at_the_end"] > effect["sequential_ever"]


# ---- Welch's t test for revenue per customer ---------------------------------------------------------------


def _revenue_samples(n: int = 60) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-customer revenue as a shop sees it: most customers buy nothing, buyers spend log-normally."""
    rng = np.random.default_rng(11)
    samples = []
    for _ in range(n):
        n1, n2 = (int(v) for v in rng.integers(5, 3000, size=2))
        if rng.random() < 0.2:
            n1, n2 = int(rng.integers(5, 12)), int(rng.integers(5, 12))  # small: few degrees of freedom
        buy1, buy2 = rng.uniform(0.05, 0.6, size=2)
        a = np.where(rng.random(n1) < buy1, rng.lognormal(4, 0.8, n1), 0.0).round(2)
        b = np.where(rng.random(n2) < buy2, rng.lognormal(4, 0.8, n2), 0.0).round(2)
        if a.var() == 0 and b.var() == 0:
            a[0] += 10.0
        samples.append((a, b))
    return samples


def _t_quantile_error(df: float) -> float:
    """The error bound statistics.sql states for its 97.5 % t quantile (Cornish-Fisher, four terms)."""
    return 1e-3 if df < 5 else 3e-4 if df < 10 else 1e-5


@pytest.fixture(scope="module")
def sql_welch(tmp_path_factory) -> list[tuple[np.ndarray, np.ndarray, dict]]:
    samples = _revenue_samples()
    values = ", ".join(
        f"({i}, {float(a.mean())!r}, {float(a.var(ddof=1))!r}, {len(a)}, "
        f"{float(b.mean())!r}, {float(b.var(ddof=1))!r}, {len(b)})"
        for i, (a, b) in enumerate(samples)
    )
    sql = (
        "select i, {{ welch_df('v1', 'n1', 'v2', 'n2') }} as df, "
        "{{ student_t_975(welch_df('v1', 'n1', 'v2', 'n2')) }} * sqrt(v1 / n1 + v2 / n2) as half_width, "
        "{{ student_t_two_sided_p('(m1 - m2) / sqrt(v1 / n1 + v2 / n2)', "
        "welch_df('v1', 'n1', 'v2', 'n2')) }} as p_value "
        f"from (values {values}) as t(i, m1, v1, n1, m2, v2, n2)"
    )
    rows = {r["i"]: r for r in dbt_show(sql, tmp_path_factory.mktemp("welch"), len(samples))}
    return [(a, b, rows[i]) for i, (a, b) in enumerate(samples)]


def test_welch_interval_and_p_value_match_scipy(sql_welch) -> None:
    small = 0
    for a, b, row in sql_welch:
        result = stats.ttest_ind(a, b, equal_var=False)
        low, high = result.confidence_interval(0.95)
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        assert row["df"] == pytest.approx(result.df, rel=1e-9)
        # the half-width is t * se, and the Cornish-Fisher quantile's error bounds the error of t
        assert row["half_width"] == pytest.approx((high - low) / 2, abs=_t_quantile_error(result.df) * se)
        assert row["p_value"] == pytest.approx(result.pvalue, abs=5e-6)
        small += result.df < 20
    assert small >= 5  # the few-customer regime, where t and normal differ, is covered


def test_student_t_approximations_over_the_degrees_of_freedom(tmp_path_factory) -> None:
    dfs = (4, 4.5, 5, 7, 10, 15, 30, 100, 1000, 1e6)
    ts = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0)
    values = ", ".join(f"({df}, {t})" for df in dfs for t in ts)
    sql = (
        "select df, t, {{ student_t_975('df') }} as q, {{ student_t_two_sided_p('t', 'df') }} as p "
        f"from (values {values}) as v(df, t)"
    )
    for row in dbt_show(sql, tmp_path_factory.mktemp("t"), len(dfs) * len(ts)):
        df, t = float(row["df"]), float(row["t"])
        assert row["q"] == pytest.approx(stats.t.ppf(0.975, df), abs=_t_quantile_error(df)), df
        assert row["p"] == pytest.approx(2 * stats.t.sf(t, df), abs=5e-6), (df, t)


# ---- Holm's correction for several variants against control -----------------------------------------------


def _families() -> list[list[float | None]]:
    rng = random.Random(5)
    families = [[0.01, 0.04, 0.03, 0.005], [0.02, 0.02, 0.5], [0.3], [0.001, None, 0.04], [0.9, 0.95]]
    while len(families) < 40:
        families.append([round(rng.uniform(0, 0.2), 3) for _ in range(rng.randint(1, 6))])
    return families


def test_holm_matches_statsmodels(tmp_path_factory) -> None:
    families = _families()
    values = ", ".join(
        f"({f}, {i}, {'null' if p is None else p})" for f, ps in enumerate(families) for i, p in enumerate(ps)
    )
    sql = (
        "select family, i, p, {{ holm_adjusted('step', 'p', 'family') }} as holm from ("
        "select *, {{ holm_step('p', 'family') }} as step "
        f"from (values {values}) as v(family, i, p)) as steps"
    )
    n_rows = sum(len(ps) for ps in families)
    rows = dbt_show(sql, tmp_path_factory.mktemp("holm"), n_rows)
    got = {(r["family"], r["i"]): r["holm"] for r in rows}
    for f, ps in enumerate(families):
        present = [i for i, p in enumerate(ps) if p is not None]
        _, adjusted, _, _ = multipletests([ps[i] for i in present], method="holm")
        for i, expected in zip(present, adjusted, strict=True):
            assert got[(f, i)] == pytest.approx(expected, abs=1e-12), (ps, i)
        assert all(got[(f, i)] is None for i, p in enumerate(ps) if p is None)
    # the textbook example (Holm 1979 style): 0.01, 0.04, 0.03, 0.005 → 0.03, 0.06, 0.06, 0.02
    assert [got[(0, i)] for i in range(4)] == pytest.approx([0.03, 0.06, 0.06, 0.02])
