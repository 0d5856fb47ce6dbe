"""Benchmark `nachfass backtest` (issue 15: a 30-day backtest at hourly ticks for 100,000 customers ≤ 15 min).

    python bench/bench_backtest.py --customers 100000 --days 1 --every 1h --workdir /tmp/nachfass_backtest

Generates the sample exports once (kept in the workdir and reused, not timed), writes a changed copy of
the dbt project (``--change``: by default review requests go live at the period's start with their backlog
dripped at 200 a day; ``cart-delay``: the first cart reminder after 30 minutes instead of 60),
then runs the backtest over the last ``--days`` days before 2026-11-24 10:00 UTC and prints: the load (once),
the first dbt build + compile (both sides at once), each side's ticks (the sides tick at the same time),
the write-back and comparison; the whole backtest, peak RSS, and what a 30-day hourly backtest would take
(the measured ticks plus the rest at the mean steady tick). ``--steps`` also times each step of every tick
per side (each tick model, recording the decisions, rendering, the send step, waiting for the shared models)
and prints where each side's and the shared thread's time went.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_replay import END, sample_landing  # noqa: E402  (the same sample exports and period end)

from nachfass.core import backtest, paths, replay, tick_share  # noqa: E402
from nachfass.core.backtest import run_backtest  # noqa: E402
from nachfass.core.replay import parse_every  # noqa: E402

TICK = re.compile(r"^\[(before|after)\] tick (\d+)/(\d+) .*\(([\d.]+) s\)$")


CHANGES = {
    "review-rollout": "review requests go live at the period's start, their backlog dripped at 200 a day",
    "cart-delay": "the first cart reminder 30 minutes after the cart instead of 60",
}


def changed_rules(target: Path, live_from: datetime, change: str = "review-rollout") -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        paths.DBT_PROJECT_DIR, target, ignore=shutil.ignore_patterns("target", "logs", ".user.yml")
    )
    if change == "cart-delay":
        yml = target / "models" / "segments" / "abandoned_cart.yml"
        text = yml.read_text(encoding="utf-8")
        assert "delay_minutes: 60 " in text
        yml.write_text(text.replace("delay_minutes: 60 ", "delay_minutes: 30 ", 1), encoding="utf-8")
        return target
    yml = target / "models" / "segments" / "review_request.yml"
    text = yml.read_text(encoding="utf-8")
    anchor = "          exit_on_order: false\n"
    rollout = (
        f"          rollout:\n            live_from: '{live_from.isoformat()}'\n"
        "            backlog: drip\n            drip_per_day: 200\n"
    )
    yml.write_text(text.replace(anchor, anchor + rollout, 1), encoding="utf-8")
    return target


def time_steps():
    """Time every step of every tick, per side and for the thread computing the shared models (``--steps``),
    by wrapping the replay's functions (in this process only); returns what prints the table."""
    times: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    where = threading.local()

    def wrap(owner, name: str, label) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                thread = getattr(where, "side", None) or threading.current_thread().name
                times[thread][label(*args, **kwargs)].append(time.perf_counter() - started)

        setattr(owner, name, timed)

    original_replay = backtest.replay

    @functools.wraps(original_replay)
    def replay_side(*args, **kwargs):
        where.side = f"side {kwargs.get('side')}"
        return original_replay(*args, **kwargs)

    backtest.replay = replay_side
    for owner in (replay, tick_share):
        wrap(owner, "build_tick_model", lambda _conn, model, *_a, **_k: model.unique_id.split(".")[-1])
    for name in ("record_tick_decisions", "render_and_send_due_mails"):
        wrap(replay, name, lambda *_a, _name=name, **_k: _name)
    wrap(tick_share.SharedTicks, "before_tick", lambda *_a, **_k: "waiting for the shared models")

    def table() -> str:
        lines = ["", "where each thread's tick time went (seconds; median and max over the ticks):"]
        for thread, steps in sorted(times.items()):
            total = sum(sum(v) for v in steps.values())
            lines.append(f"{thread}: {total:.1f} s")
            for step, values in sorted(steps.items(), key=lambda item: -sum(item[1])):
                share = sum(values) / total if total else 0
                if share < 0.01:
                    continue
                lines.append(
                    f"  {step:32s} {sum(values):7.1f} s {share:5.0%}  n={len(values):<4d} "
                    f"median {statistics.median(values):.3f}  max {max(values):.2f}"
                )
        return "\n".join(lines)

    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=1)
    parser.add_argument("--every", default="1h")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nachfass_backtest"))
    parser.add_argument("--on-disk", action="store_true", help="the ticks on the warehouse files")
    parser.add_argument(
        "--threads-per-side", type=int, default=None, help="DuckDB threads per side (0: every core)"
    )
    parser.add_argument(
        "--no-tick-deltas",
        action="store_true",
        help="compute every tick model whole at every tick (default: int_carts, stg_orders and stg_customers "
        "updated from the tick before)",
    )
    parser.add_argument(
        "--no-shared-models",
        action="store_true",
        help="each side computes every model itself (default: the models both rule sets share once)",
    )
    parser.add_argument(
        "--change", choices=sorted(CHANGES), default="review-rollout", help="the rule change to backtest"
    )
    parser.add_argument(
        "--steps", action="store_true", help="also time each step of every tick, per side (see the docstring)"
    )
    args = parser.parse_args(argv)
    step_table = time_steps() if args.steps else None

    landing = sample_landing(args.workdir, args.customers)
    start = END - timedelta(days=args.days)
    rules = changed_rules(args.workdir / "rules", start, args.change)

    ticks: dict[str, list[float]] = {"before": [], "after": []}
    marks: dict[str, float] = {}  # wall-clock moments of the phases
    cpu: dict[str, float] = {}  # the process's CPU seconds (every thread) at the same moments
    started = time.perf_counter()

    def progress(line: str) -> None:
        now = time.perf_counter() - started
        side = line[1:].split("]")[0]
        if "mails rendered:" in line:
            print(line, flush=True)
        elif side == "both":
            marks.setdefault("load_start", now)
        elif "computed once a tick for both sides" in line:
            print(line, flush=True)
        elif "dbt build as of" in line:
            marks.setdefault("loaded", now)
        elif "writing the replayed warehouse" in line:
            marks[f"{side}_ticks_done"] = now
            cpu[f"{side}_ticks_done"] = time.process_time()
        match = TICK.match(line)
        if match:
            if match.group(2) == "1":
                marks[f"{side}_first_tick_done"] = now
                cpu[f"{side}_first_tick_done"] = time.process_time()
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
        in_memory=False if args.on_disk else None,
        threads_per_side=args.threads_per_side,
        share_models=not args.no_shared_models,
        tick_deltas=not args.no_tick_deltas,
    )
    total = time.perf_counter() - started
    threads = args.threads_per_side or "every core"
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(result.markdown(limit=0))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()}")
    print(
        f"customers {args.customers:,}, {args.days:g} days every {args.every}, "
        f"{'on disk' if args.on_disk else 'in memory'}, both sides at once, "
        f"DuckDB threads per side: {'half the cores' if args.threads_per_side is None else threads}, "
        f"{'each side computes every model' if args.no_shared_models else 'shared models computed once'}, "
        f"change: {CHANGES[args.change]}, "
        f"{'tick models computed whole' if args.no_tick_deltas else 'tick models updated'}"
    )
    # the sides run side by side: the phases are wall-clock stretches, the ticks each side's own (both
    # sides ticking at once, so each tick's time is what it takes while the other side runs too)
    load = marks["loaded"]
    setup = max(marks[f"{side}_first_tick_done"] - ticks[side][0] for side in ticks) - load
    print(f"load the exports once (and copy the file): {load:.0f} s")
    print(f"first dbt build + compile, both sides at once: {setup:.0f} s")
    for side, seconds in ticks.items():
        later = seconds[1:] or seconds
        print(
            f"{side}: {len(seconds)} ticks: first (the backlog) {seconds[0]:.2f} s, then "
            f"mean {statistics.mean(later):.2f} s, median {statistics.median(later):.2f} s, "
            f"p95 {sorted(seconds)[int(0.95 * (len(seconds) - 1))]:.2f} s, sum {sum(seconds):.0f} s"
        )
    ticks_done = max(marks.get(f"{side}_ticks_done", total) for side in ticks)
    ticking = ticks_done - load - setup
    rest = total - ticks_done
    print(f"ticks, both sides at once (wall clock): {ticking:.0f} s")
    # CPU is steadier than wall clock on a shared machine: the work of the ticks after the first, summed
    # over every thread (the sides, the shared models, DuckDB's workers)
    first = max(ticks, key=lambda side: marks[f"{side}_first_tick_done"])
    last = max(ticks, key=lambda side: marks.get(f"{side}_ticks_done", 0))
    if f"{last}_ticks_done" in cpu:
        busy = cpu[f"{last}_ticks_done"] - cpu[f"{first}_first_tick_done"]
        span = marks[f"{last}_ticks_done"] - marks[f"{first}_first_tick_done"]
        print(
            f"CPU of the ticks after the first (every thread): {busy:.0f} s over {span:.0f} s of wall "
            f"clock ({busy / max(span, 1e-9):.2f} cores busy)"
        )
    print(f"writing the warehouses back + comparison (backtest.* tables): {rest:.0f} s")
    print(f"whole backtest: {total:.0f} s ({total / 60:.1f} min), peak RSS {peak_mib:,.0f} MiB")
    hourly_30_days = 30 * 24 + 1
    # the ticks measured count as they are; the rest of the 721 at the mean of the steady ticks: after the
    # first day when there is more than a day (the first day carries the backlogs: the first tick, and
    # the daily campaigns' at their first 09:00), else all but the first tick. The slower side sets the
    # pace (the sides tick at once). The write-back and comparison grow with the period, counted once at
    # their measured size (an underestimate)
    per_day = round(timedelta(days=1) / parse_every(args.every))

    def side_projection(s: list[float]) -> float:
        steady = s[per_day + 1 :] if len(s) > 2 * per_day else s[1:] or s
        return sum(s) + max(0, hourly_30_days - len(s)) * statistics.mean(steady)

    projected = load + setup + rest + max(side_projection(s) for s in ticks.values())
    print(f"projected 30 days hourly at this size: {projected / 60:.0f} min (target 15 min at 100,000)")
    if step_table is not None:
        print(step_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
