"""Benchmark the ingest (issue 14: 1M customers' exports ≤ 90 s and ≤ 3 GiB peak RSS, memory limit respected).

    python bench/bench_ingest.py --customers 1000000 --limits none 2GiB --workdir /tmp/nachfass_ingest

Generates the sample exports once (kept in the workdir, not timed), then loads them into a fresh warehouse
in a new process per variant, one after the other, and prints seconds and the process's peak RSS:
- ``baseline``: plain DuckDB, ``read_csv`` + ``insert`` of the same files per table (no checks);
- ``load_landing`` (the project's ingest: per-line rejects, value rules, the address rule, orphans) with
  ``NACHFASS_DUCKDB_MEMORY_LIMIT`` unset (``none``) and at each given limit.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_replay import sample_landing  # noqa: E402

CHILD = r"""
import resource, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
landing, warehouse, variant = Path({landing!r}), Path({warehouse!r}), {variant!r}
started = time.perf_counter()
if variant == "baseline":
    import duckdb
    conn = duckdb.connect(str(warehouse))
    rows = 0
    for folder in sorted(p for p in landing.iterdir() if p.is_dir()):
        files = sorted(str(f) for f in folder.iterdir() if f.name.endswith((".csv", ".csv.gz")))
        if not files:
            continue
        source = f"read_csv({{files!r}}, header=true)"
        conn.execute(f"create table {{folder.name}} as select * from {{source}} limit 0")
        conn.execute(f"insert into {{folder.name}} select * from {{source}}")
        rows += conn.execute(f"select count(*) from {{folder.name}}").fetchone()[0]
    conn.close()
else:
    from nachfass.core import duckdb_config
    from nachfass.core.ingest import load_landing
    from nachfass.core.schema import prepare_warehouse
    conn = duckdb_config.connect(warehouse)
    prepare_warehouse(conn)
    rows = sum(r.rows_loaded for r in load_landing(conn, landing, shop_tz="Europe/Berlin"))
    conn.close()
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
print(f"RESULT {{rows}} {{seconds:.1f}} {{peak:.2f}}")
"""


def run(variant: str, limit: str | None, landing: Path, workdir: Path) -> tuple[int, float, float]:
    warehouse = workdir / f"{variant}-{limit or 'none'}.duckdb"
    warehouse.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "NACHFASS_DUCKDB_MEMORY_LIMIT"}
    if limit:
        env["NACHFASS_DUCKDB_MEMORY_LIMIT"] = limit
    code = CHILD.format(
        repo=str(Path(__file__).resolve().parent.parent),
        landing=str(landing),
        warehouse=str(warehouse),
        variant=variant,
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    rows, seconds, peak = line.split()[1:]
    warehouse.unlink(missing_ok=True)
    return int(rows), float(seconds), float(peak)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--limits", nargs="*", default=["none", "2GiB"], help="none, or sizes like 2GiB")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nachfass_ingest"))
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    landing = sample_landing(args.workdir, args.customers)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; customers {args.customers:,}")
    print(f"{'variant':<28} {'rows':>12} {'seconds':>8} {'peak RSS':>9}")
    for variant, limit in [("baseline", None)] + [
        ("load_landing", None if x == "none" else x) for x in args.limits
    ]:
        rows, seconds, peak = run(variant, limit, landing, args.workdir)
        label = f"{variant} (limit {limit})" if limit else f"{variant} (no limit)"
        print(
            f"{label:<28} {rows:>12,} {seconds:>8.1f} {peak:>7.2f} GiB  load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
