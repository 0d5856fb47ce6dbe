"""dbt from Python: where the executable is, and the vars every dbt call gets.

The campaign list and the shop's timezone are defined once (the segment YAML files and config/shop.yaml)
and reach dbt as vars on every call: the Dagster dbt asset, the manifest parse, the replay, the tests and
`nachfass dbt …` all build them with ``dbt_vars``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The dbt installed beside this interpreter, so `.venv/bin/nachfass` works without an activated venv.
DBT_EXECUTABLE = shutil.which("dbt", path=str(Path(sys.executable).parent)) or shutil.which("dbt") or "dbt"


# The run's logical time for dbt when it is not in --vars (macro as_of): vars are part of dbt's partial-parse
# checksum, so an as_of that changes every run in --vars made each `dbt build` parse the whole project again
# (~5 s CPU). The macro reads this variable only while executing, so the parse neither sees nor tracks it.
AS_OF_ENV = "NACHFASS_AS_OF"


def as_of_iso(as_of: datetime | str) -> str:
    """An as_of as dbt's macro as_of() takes it: ISO 8601 in UTC."""
    if isinstance(as_of, datetime):
        return as_of.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return as_of


def scratch_dbt_env(warehouse: Path) -> dict[str, str]:
    """The environment of a dbt subprocess that builds a scratch DuckDB warehouse of its own (replays,
    backtests, diffs), whatever engine the live warehouse runs on; without colour codes, so the output's
    tail can be quoted in an error message."""
    from nachfass.core import paths

    return {
        **os.environ,
        paths.ENV_WAREHOUSE: str(warehouse),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_USE_COLORS": "false",
        "NACHFASS_ENGINE": "duckdb",
    }


def dbt_vars(as_of: datetime | str | None = None, *, segments: Path | None = None, **extra: Any) -> dict:
    """The vars of one dbt call: `campaigns` (the registry's segment models), `shop_timezone`, and the
    run's logical time `as_of` when given."""
    from nachfass.core.campaigns import load_campaigns
    from nachfass.core.shop import load_shop_settings

    values: dict[str, Any] = {
        "campaigns": list(load_campaigns(segments, templates_dir=None, check_templates=False)),
        "shop_timezone": load_shop_settings().timezone,
    }
    if as_of is not None:
        values["as_of"] = as_of_iso(as_of)
    values.update(extra)
    return values


def dbt_vars_arg(as_of: datetime | str | None = None, **kwargs: Any) -> list[str]:
    """`--vars '<json>'` for a dbt command line."""
    return ["--vars", json.dumps(dbt_vars(as_of, **kwargs))]
