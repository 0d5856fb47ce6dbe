"""Where things live on disk.

Every location can be overridden with an environment variable so that tests and the CLI point a whole run
(Python *and* dbt, which reads the same variables in ``dbt/profiles.yml``) at a temporary folder.
Nothing here reads the environment at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "dbt"
TEMPLATES_DIR = REPO_ROOT / "mail_templates"
CONFIG_DIR = REPO_ROOT / "config"

# Environment variable names shared with dbt/profiles.yml and the docs.
ENV_WAREHOUSE = "NACHFASS_WAREHOUSE"
ENV_LANDING = "NACHFASS_LANDING"
ENV_OUTBOX = "NACHFASS_OUTBOX"


def dbt_project_dir() -> Path:
    """The dbt project: $NACHFASS_DBT_PROJECT (a shop's own copy, or a test's) or the repository's dbt/."""
    return Path(os.environ.get("NACHFASS_DBT_PROJECT") or DBT_PROJECT_DIR).resolve()


def data_dir() -> Path:
    return Path(os.environ.get("NACHFASS_DATA", REPO_ROOT / "data"))


def warehouse_path() -> Path:
    return Path(os.environ.get(ENV_WAREHOUSE, data_dir() / "warehouse.duckdb")).resolve()


def staging_path() -> Path:
    """On the PostgreSQL engine: the local DuckDB file the exports are parsed and checked in before they are
    copied to the warehouse (nachfass/core/warehouse/postgres.py). It holds copies of the raw exports."""
    return data_dir().resolve() / "staging.duckdb"


def landing_dir() -> Path:
    return Path(os.environ.get(ENV_LANDING, data_dir() / "landing")).resolve()


def outbox_dir() -> Path:
    return Path(os.environ.get(ENV_OUTBOX, data_dir() / "outbox")).resolve()


def templates_dir() -> Path:
    """The mail templates: $NACHFASS_TEMPLATES (a shop's own copy) or the repository's mail_templates/."""
    return Path(os.environ.get("NACHFASS_TEMPLATES") or TEMPLATES_DIR)
