"""Benchmark `nachfass backtest` (issue 15: a 30-day backtest at hourly ticks for 100,000 customers ≤ 15 min).

    python bench/bench_backtest.py --customers 100000 --days 1 --every 1h --workdir /tmp/nachfass_backtest

Generates the sample exports once (kept in the workdir and reused, not timed), writes a changed copy of
the dbt project (review requests go live at the period's start with their backlog dripped at 200 a day),
then runs the backtest over the last ``--days`` days before 2026-11-24 10:00 UTC and prints, per side:
the load + first dbt build + compile, the ticks (mean, median, p95), and the comparison; the whole
backtest, peak RSS, and what a 30-day hourly backtest would take at the measured tick time (the setup
once per side plus 721 ticks per side).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_replay import END, sample_landing  # noqa: E402  (the same sample exports and period end)

from nachfass.core import paths  # noqa: E402
from nachfass.core.backtest import run_backtest  # noqa: E402
from nachfass.core.replay import parse_every  # noqa: E402

TICK = re.compile(r"^\[(before|after)\] tick (\d+)/(\d+) .*\(([\d.]+) s\)$")


def changed_rules(target: Path, live_from: datetime) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        paths.DBT_PROJECT_DIR, target, ignore=shutil.ignore_patterns("target", "logs", ".user.yml")
    )
    yml = target / "models" / "segments" / "review_request.yml"
    text = yml.read_text(encoding="utf-8")
    anchor = "          exit_on_order: false\n"
    rollout = (
        f"          rollout:\n            live_from: '{live_from.isoformat()}'\n"
        "            backlog: drip\n            drip_per_day: 200\n"
    )
    yml.write_text(text.replace(anchor, anchor + rollout, 1), encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=1)
    parser.add_argument("--every", default="1h")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nachfass_backtest"))
    args = parser.parse_args(argv)

    landing = sample_landing(args.workdir, args.customers)
    start = END - timedelta(days=args.days)
    rules = changed_rules(args.workdir / "rules", start)

    ticks: dict[str, list[float]] = {"before": [], "after": []}
    setup: dict[str, float] = {}
    side_started: dict[str, float] = {}
    started = time.perf_counter()

    def progress(line: str) -> None:
        side = line[1:].split("]")[0]
        if side in ticks and side not in side_started:
            side_started[side] = time.perf_counter()
        match = TICK.match(line)
        if match:
            if match.group(2) == "1":
                setup[side] = time.perf_counter() - side_started[side] - float(match.group(4))
                print(line, flush=True)
            ticks[side].append(float(match.group(4)))

    result = run_backtest(
        rules=str(rules),
        landing=landing,
        start=start,
        end=END,
        every=parse_every(args.every),
        workdir=args.workdir / "run",
        history=None,
        progress=progress,
    )
    total = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(result.markdown(limit=0))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()}")
    print(f"customers {args.customers:,}, {args.days:g} days every {args.every}")
    for side, seconds in ticks.items():
        print(
            f"{side}: load + first dbt build + compile {setup.get(side, 0):.0f} s; {len(seconds)} ticks: "
            f"mean {statistics.mean(seconds):.2f} s, median {statistics.median(seconds):.2f} s, "
            f"p95 {sorted(seconds)[int(0.95 * (len(seconds) - 1))]:.2f} s, sum {sum(seconds):.0f} s"
        )
    compare = total - sum(setup.values()) - sum(sum(s) for s in ticks.values())
    print(f"comparison (backtest.* tables) and the rest: {compare:.0f} s")
    print(f"whole backtest: {total:.0f} s ({total / 60:.1f} min), peak RSS {peak_mib:,.0f} MiB")
    hourly_30_days = 30 * 24 + 1
    # the first tick carries the backlog: count it once, the others at the median
    projected = sum(
        setup.get(side, 0) + s[0] + (hourly_30_days - 1) * statistics.median(s[1:] or s)
        for side, s in ticks.items()
    )
    print(f"projected 30 days hourly at this size: {projected / 60:.0f} min (target 15 min at 100,000)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
