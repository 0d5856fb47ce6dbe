"""Show that the shifted clock of the second CI pass reaches Python, DuckDB and dbt.

    faketime '+400 days' .venv/bin/python .ci/clock_shift_check.py "$(date +%s)" .

argv[1] is the real time (taken outside faketime). Exits 1 unless all three see the same 400-day shift,
so the faketime pass can never silently run on the real calendar.
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from nachfass.core.dbt import dbt_vars_arg

SHIFT_DAYS = 400


def days(seconds: float) -> int:
    return round(seconds / 86400)


real = float(sys.argv[1])
repo = Path(sys.argv[2]).resolve()
python_shift = days(time.time() - real)
duckdb_shift = days(duckdb.connect().execute("select epoch(now())").fetchone()[0] - real)
with tempfile.TemporaryDirectory() as tmp:
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dbt"),
            "compile",
            "--inline",
            "select '{{ run_started_at.timestamp() }}'",
            "--profiles-dir",
            ".",
            "--target-path",
            tmp,
            "--log-path",
            tmp,
            "-q",
            *dbt_vars_arg(),
        ],
        cwd=repo / "dbt",
        env={**os.environ, "NACHFASS_WAREHOUSE": f"{tmp}/clock.duckdb"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
dbt_shift = days(float(re.search(r"'([0-9.]+)'", out).group(1)) - real)
print(f"clock shift in days: python {python_shift}, duckdb {duckdb_shift}, dbt {dbt_shift}")
sys.exit(0 if python_shift == duckdb_shift == dbt_shift == SHIFT_DAYS else 1)
