"""Lint as CI runs it: ruff on the Python, sqlfluff on every dbt model (templated with the project's
macros: a model that does not template is a failure, not a skip)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import REPO_ROOT

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False)


def test_ruff_check_and_format() -> None:
    check = _run(str(BIN / "ruff"), "check", ".")
    assert check.returncode == 0, check.stdout[-4000:]
    fmt = _run(str(BIN / "ruff"), "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_sqlfluff_templates_and_passes_every_model() -> None:
    # One process: sqlfluff's parallel runner ends with Pool.terminate(), which can kill a worker while
    # it holds the task queue's lock and then wait forever for the other one (it hung a CI run).
    result = _run(str(BIN / "sqlfluff"), "lint", "dbt/models", "--format", "json", "--processes", "1")
    files = json.loads(result.stdout)
    models = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "dbt" / "models").rglob("*.sql"))
    assert sorted(f["filepath"] for f in files) == models
    problems = [
        f"{f['filepath']}:{v.get('start_line_no')} {v['code']} {v['description']}"
        for f in files
        for v in f["violations"]
    ]
    templating = [p for p in problems if " TMP " in p or " PRS " in p]
    assert not templating, templating
    assert not problems, problems
    assert result.returncode == 0, result.stderr[-2000:]
