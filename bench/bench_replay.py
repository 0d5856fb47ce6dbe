"""Benchmark `nachfass replay`: a week of hourly ticks for 100,000 customers (target ≤ 10 min).

    python bench/bench_replay.py --customers 100000 --days 7 --every 1h --workdir /tmp/nachfass_replay

Generates the sample exports once (kept in the workdir and reused), then replays the period into a fresh
warehouse and prints: the load + first dbt build, the ticks (mean, median, p95, max seconds), the mails,
the whole replay, the load average and peak RSS. Generation is excluded from the replay's time.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nachfass.core.replay import format_daily, parse_every, replay  # noqa: E402
from nachfass.devtools.datagen.generate import generate_exports  # noqa: E402

END = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # the generator's as_of: the period ends there


def sample_landing(workdir: Path, customers: int) -> Path:
    """The sample exports for ``customers`` (seed 42, as of END), generated once into the workdir and
    reused by later runs; generation is never part of a measured time."""
    landing = workdir / f"landing-{customers}"
    if not (landing / "customers").is_dir():
        started = time.perf_counter()
        generate_exports(landing, customers=customers, seed=42, as_of=END)
        print(f"generated {customers:,} customers in {time.perf_counter() - started:.0f} s (not timed)")
    return landing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--every", default="1h")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nachfass_replay"))
    args = parser.parse_args(argv)

    landing = sample_landing(args.workdir, args.customers)
    run = args.workdir / "run"
    shutil.rmtree(run, ignore_errors=True)
    os.environ["NACHFASS_WAREHOUSE"] = str(run / "warehouse.duckdb")

    setup_done: list[float] = []
    started = time.perf_counter()

    def progress(line: str) -> None:
        if line.startswith("tick 1/") and not setup_done:
            setup_done.append(time.perf_counter() - started)
        number = line.split("/")[0].removeprefix("tick ") if line.startswith("tick ") else ""
        if not number or number == "1" or int(number) % 24 == 0:
            print(line, flush=True)

    report = replay(
        landing=landing,
        warehouse=run / "warehouse.duckdb",
        outbox=run / "outbox",
        start=END - timedelta(days=args.days),
        end=END,
        every=parse_every(args.every),
        progress=progress,
    )
    seconds = [t.seconds for t in report.ticks]
    mails = sum(sum(t.mails.values()) for t in report.ticks)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(format_daily(report.daily))
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()}")
    period = f"{args.days} days every {args.every}"
    print(f"customers {args.customers:,}, {period}: {len(seconds)} ticks, {mails:,} mails")
    print(f"load exports + first dbt build + compile: {setup_done[0] if setup_done else 0:.0f} s")
    print(
        f"ticks: mean {statistics.mean(seconds):.2f} s, median {statistics.median(seconds):.2f} s, "
        f"p95 {sorted(seconds)[int(0.95 * (len(seconds) - 1))]:.2f} s, max {max(seconds):.2f} s, "
        f"sum {sum(seconds):.0f} s"
    )
    print(
        f"whole replay: {report.seconds:.0f} s ({report.seconds / 60:.1f} min), peak RSS {peak_mib:,.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
