"""Paths shared by tests (importable because pytest puts tests/ on sys.path: rootdir-relative imports)."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_DIR = REPO_ROOT / "dbt"
# dbt installed beside the interpreter running the tests (the project venv)
DBT_EXECUTABLE = Path(sys.executable).parent / "dbt"

# Every job the Definitions hold (dagster_project/jobs.py and warehouse_checks.py)
ALL_JOBS = (
    "nachfass_job",
    "frequent_mails_job",
    "daily_mails_job",
    "ingest_job",
    "events_job",
    "warehouse_checks_job",
)
