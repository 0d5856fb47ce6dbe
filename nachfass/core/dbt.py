"""Where dbt is: the dbt installed beside this interpreter, so `.venv/bin/nachfass` works without an
activated venv. Shared by the Dagster code location (dagster-dbt) and the replay."""

import shutil
import sys
from pathlib import Path

DBT_EXECUTABLE = shutil.which("dbt", path=str(Path(sys.executable).parent)) or shutil.which("dbt") or "dbt"
