"""Benchmark: time from invoking ``nachfass run`` until its first step starts.

    python bench/bench_startup.py [--runs 3] [--customers 300]

Generates small sample exports once, then runs ``nachfass run`` (a new process each time, as a user or a
cron job would) against a fresh warehouse with a persistent ``DAGSTER_HOME`` in a temp dir, and reads the
run's events from that instance afterwards: the figure is the first ``STEP_START`` event's time minus the
moment just before the process was spawned. It also times the parts on their own, each in a new process:
the CLI's import, ``import dagster``, loading the Definitions, and ``dbt parse`` (cold: no target folder,
and warm: the manifest already there).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NACHFASS = [sys.executable, "-m", "nachfass.cli.main"]
AS_OF = "2026-11-24T10:00:00Z"


def seconds_of(code: str, env: dict[str, str]) -> float:
    """Wall time of ``python -c code`` in a new process (interpreter start included)."""
    started = time.time()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True)
    return time.time() - started


def first_step_after(home: Path, started: float) -> tuple[float, float]:
    """(first STEP_START, RUN_START) of the instance's only run, in seconds after ``started``."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_runs(limit=1)[0]
        events = [
            (r.dagster_event.event_type, r.timestamp)
            for r in instance.all_logs(run.run_id)
            if r.dagster_event is not None
        ]
    step = min(t for kind, t in events if kind == dg.DagsterEventType.STEP_START)
    run_start = min(t for kind, t in events if kind == dg.DagsterEventType.RUN_START)
    return step - started, run_start - started


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--customers", type=int, default=300)
    p.add_argument("--no-parts", action="store_true", help="only the runs, not the parts on their own")
    args = p.parse_args()
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load {load:.1f}; python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        landing = tmp_path / "landing"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run(
            [*NACHFASS, "generate", "--customers", str(args.customers), "--landing", str(landing)],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        target = REPO / "dbt" / "target"
        parts = {
            "import nachfass.cli.main": "import nachfass.cli.main",
            "import dagster": "import dagster",
            "load the Definitions (manifest present)": "from dagster_project.definitions import defs",
            "dbt parse, manifest present": (
                "from dagster_project.dbt_project import prepare_dbt_manifest; prepare_dbt_manifest()"
            ),
        }
        if not args.no_parts:
            print("parts, each in a new process (interpreter start included):")
        for label, code in parts.items() if not args.no_parts else ():
            took = [seconds_of(code, env) for _ in range(args.runs)]
            print(f"  {label:<44} {statistics.median(took):5.1f} s (median of {args.runs})")
        firsts, run_starts, totals = [], [], []
        for n in range(args.runs):
            home = tmp_path / f"home-{n}"
            home.mkdir()
            # The same paths every time (as a cron job has), each run from a fresh warehouse and outbox.
            warehouse, outbox = tmp_path / "warehouse.duckdb", tmp_path / "outbox"
            for leftover in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
                leftover.unlink(missing_ok=True)
            shutil.rmtree(outbox, ignore_errors=True)
            run_env = {**env, "DAGSTER_HOME": str(home)}
            if n == 0:
                (target / "manifest.json").unlink(missing_ok=True)
            started = time.time()
            subprocess.run(
                [
                    *NACHFASS,
                    "run",
                    "--landing",
                    str(landing),
                    "--warehouse",
                    str(warehouse),
                    "--outbox",
                    str(outbox),
                    "--as-of",
                    AS_OF,
                    "--no-summary",
                ],
                cwd=REPO,
                env=run_env,
                check=True,
                capture_output=True,
            )
            totals.append(time.time() - started)
            first, run_start = first_step_after(home, started)
            firsts.append(first)
            run_starts.append(run_start)
            kind = "no manifest before" if n == 0 else "manifest present"
            print(
                f"run {n + 1} ({kind}): run started after {run_start:.1f} s, first step after {first:.1f} s; "
                f"whole run {totals[-1]:.1f} s"
            )
        print(
            f"nachfass run -> first step: median {statistics.median(firsts):.1f} s "
            f"(min {min(firsts):.1f}, max {max(firsts):.1f}) over {args.runs} runs"
        )


if __name__ == "__main__":
    main()
