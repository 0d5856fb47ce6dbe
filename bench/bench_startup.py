"""Benchmark: time from invoking ``nachfass run`` until its first step starts.

    python bench/bench_startup.py [--runs 4] [--customers 300] [--no-parts]

Generates small sample exports once, then runs ``nachfass run`` (a new process each time, as a user or a
cron job would) against a fresh warehouse in a temp dir, and reads its progress on stderr: the first
finished step's line says how long the step took, so it started that long before the line arrived. The
figure is that start minus the moment just before the process was spawned; the run is then stopped. The
first run starts without a dbt manifest (after a checkout or a change to the dbt project), the others
find the one it left. It also times the parts on their own, each in a new process:
the CLI's import, ``import dagster``, loading the Definitions, and the manifest check when the manifest is
fresh (no ``dbt parse``).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
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
FINISHED = re.compile(r"[✓✗]\s+(\S+)\s+([0-9.]+) s\s*$")


def seconds_of(code: str, env: dict[str, str]) -> float:
    """Wall time of ``python -c code`` in a new process (interpreter start included)."""
    started = time.time()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True)
    return time.time() - started


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--customers", type=int, default=300)
    p.add_argument("--no-parts", action="store_true", help="only the runs, not the parts on their own")
    args = p.parse_args()
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load {load:.1f}; python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        landing = tmp_path / "landing"
        # What `nachfass run --warehouse` exports: dbt's profile reads it, so the manifest's freshness does.
        warehouse = tmp_path / "warehouse.duckdb"
        env = {**os.environ, "PYTHONPATH": str(REPO), "NACHFASS_WAREHOUSE": str(warehouse)}
        subprocess.run(
            [*NACHFASS, "generate", "--customers", str(args.customers), "--landing", str(landing)],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
        target = REPO / "dbt" / "target"
        firsts = []
        for n in range(args.runs):
            # The same paths every time (as a cron job has), each run from a fresh warehouse and outbox.
            outbox = tmp_path / "outbox"
            for leftover in (warehouse, warehouse.with_name(warehouse.name + ".wal")):
                leftover.unlink(missing_ok=True)
            shutil.rmtree(outbox, ignore_errors=True)
            if n == 0:
                (target / "manifest.json").unlink(missing_ok=True)
            command = [
                *NACHFASS,
                *("run", "--landing", str(landing), "--warehouse", str(warehouse), "--outbox", str(outbox)),
                *("--as-of", AS_OF, "--no-summary"),
            ]
            started = time.time()
            proc = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
            first = None
            for line in proc.stderr:
                # "  ✓ <step>   0.4 s", printed when a step finished: it started <took> seconds before.
                if (match := FINISHED.search(line)) is not None:
                    first = time.time() - float(match.group(2)) - started
                    step = match.group(1)
                    break
            proc.kill()  # the rest of the run is not measured here
            proc.wait()
            if first is None:
                raise SystemExit(f"no step finished: {' '.join(command)}")
            firsts.append(first)
            kind = "no manifest before" if n == 0 else "manifest present"
            print(f"run {n + 1} ({kind}): first step ({step}) started after {first:.1f} s")
        parts = {
            "import nachfass.cli.main": "import nachfass.cli.main",
            "import dagster": "import dagster",
            "load the Definitions (manifest present)": "from dagster_project.definitions import defs",
            "prepare_dbt_manifest, manifest fresh": (
                "from dagster_project.dbt_project import prepare_dbt_manifest; prepare_dbt_manifest()"
            ),
        }
        if not args.no_parts:
            print("parts, each in a new process (interpreter start included):")
        for label, code in parts.items() if not args.no_parts else ():
            took = [seconds_of(code, env) for _ in range(args.runs)]
            print(f"  {label:<44} {statistics.median(took):5.1f} s (median of {args.runs})")
        warm = firsts[1:] or firsts
        print(
            f"nachfass run -> first step: {firsts[0]:.1f} s without a manifest; with one: median "
            f"{statistics.median(warm):.1f} s (min {min(warm):.1f}, max {max(warm):.1f}, {len(warm)} runs)"
        )


if __name__ == "__main__":
    main()
