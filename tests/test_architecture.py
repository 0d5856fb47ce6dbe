"""The packages import in one direction (pyproject.toml, [tool.importlinter]): the CLI on top; the Dagster
code location, the web service, privacy and the development tools beside each other; the core library
below them all, and its table definitions below every stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests_support import REPO_ROOT


def test_imports_follow_the_layers() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_code_location_holds_dagster_code_only() -> None:
    """Every module under dagster_project/ imports Dagster: the rest of the code lives in nachfass."""
    for path in sorted((REPO_ROOT / "dagster_project").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "import dagster" in text or "from dagster_dbt" in text, f"{path}: no Dagster code here"
