"""docs/exports.md documents exactly the columns the loader enforces."""

import re
from pathlib import Path

from nachfass.core.contract import TABLES

DOC = Path(__file__).resolve().parent.parent / "docs" / "exports.md"


def test_doc_lists_every_table_and_column_with_required_marks() -> None:
    text = DOC.read_text(encoding="utf-8")
    for table in TABLES.values():
        section = text.split(f"### {table.name} (key:")[1].split("##")[0]
        rows = re.findall(r"^\| (\w+)(\*?) \| (\w+) \|", section, flags=re.M)
        documented = [row for row in rows if row[0] != "column"]
        assert [(name, bool(star), kind) for name, star, kind in documented] == [
            (c.name, c.required, c.type) for c in table.columns
        ], table.name
