"""Benchmark the sample data generator: seconds, rows per table, bytes on disk, peak RSS.

    python bench/bench_datagen.py --customers 1000000 [--format csv] [--keep /some/folder]

Figures for docs/datagen.md ("Scale") come from this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nachfass.devtools.datagen.generate import generate_exports  # noqa: E402


def _dir_bytes(folder: Path) -> dict[str, int]:
    return {
        d.name: sum(f.stat().st_size for f in d.iterdir() if f.is_file()) for d in sorted(folder.iterdir())
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument(
        "--keep", type=Path, help="write here and keep the files (default: a temp folder, removed)"
    )
    args = parser.parse_args(argv)

    target = args.keep or Path(tempfile.mkdtemp(prefix="nachfass-datagen-"))
    try:
        started = time.perf_counter()
        counts = generate_exports(target, customers=args.customers, seed=args.seed, file_format=args.format)
        seconds = time.perf_counter() - started
        sizes = _dir_bytes(target)
        # ru_maxrss is KiB on Linux; DuckDB runs in-process, so this covers the whole generator.
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"customers={args.customers:,} format={args.format} seed={args.seed}")
        print(f"{'table':16} {'rows':>12} {'MiB':>9}")
        for table, rows in counts.items():
            print(f"{table:16} {rows:>12,} {sizes.get(table, 0) / 2**20:>9.1f}")
        print(f"{'total':16} {sum(counts.values()):>12,} {sum(sizes.values()) / 2**20:>9.1f}")
        print(
            f"seconds: {seconds:.1f}   rows/s: {sum(counts.values()) / seconds:,.0f}   "
            f"peak RSS: {peak_mib:,.0f} MiB"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(target, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
