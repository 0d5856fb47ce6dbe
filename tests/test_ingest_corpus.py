"""A corpus of malformed export files (tests/corpus/exports/) and the outcome each must have.

Encodings, ragged rows, huge fields and lines, truncated gzip, BOM + CRLF, huge numbers, half-written and
unreadable files, bad values and orphans: every file is either loaded (its good rows in raw, every other row
or line in raw.quarantine with its row, line and reason) or rejected as a whole with a reason and not marked
loaded. ``expected.json`` states the outcome per file; this test loads the corpus and compares.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from dagster_project.resources import parse_as_of
from nachfass.core.ingest import load_landing

CORPUS = Path(__file__).resolve().parent / "corpus" / "exports"
EXPECTED = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
ITEMS_HEADER = "order_id,line_no,product_id,quantity,unit_price\n"


def _generate(landing: Path) -> None:
    """The two files too large to commit."""
    huge = ITEMS_HEADER + "O1,1,P1,1,1.00\nO2,1," + "x" * (3 * 1024 * 1024) + ",1,1.00\nO5,1,P5,1,1.00\n"
    (landing / "order_items" / "huge_line.csv").write_text(huge, encoding="utf-8")
    long = ITEMS_HEADER + "O1,1,P1,1,1.00\nO2,1," + "y" * 20_000 + ",1,1.00\n"
    (landing / "order_items" / "long_value.csv").write_text(long, encoding="utf-8")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> tuple[dict, duckdb.DuckDBPyConnection, Path]:
    landing = tmp_path_factory.mktemp("corpus") / "landing"
    shutil.copytree(CORPUS, landing, ignore=shutil.ignore_patterns("*.json"))
    _generate(landing)
    conn = duckdb.connect()
    reports = load_landing(conn, landing, as_of=parse_as_of(EXPECTED["as_of"]))
    by_file = {Path(r.path).relative_to(landing).as_posix(): r for r in reports}
    return by_file, conn, landing


def test_the_corpus_is_the_one_described() -> None:
    committed = {
        p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".json"
    }
    described = {name for name, spec in EXPECTED["files"].items() if not spec.get("generated")}
    assert committed == described


@pytest.mark.parametrize("name", sorted(EXPECTED["files"]))
def test_each_malformed_file_has_its_expected_outcome(loaded, name: str) -> None:
    by_file, conn, landing = loaded
    spec = EXPECTED["files"][name]
    report = by_file[name]
    assert report.status == spec["status"], report.message
    if spec["status"] == "rejected":
        assert report.message.startswith(spec["message"])
        assert not conn.execute(
            "select count(*) from raw.loaded_files where path = ?", [report.path]
        ).fetchone()[0], "a rejected file must not be marked loaded"
        assert conn.execute(
            "select count(*) from raw.rejected_files where path = ?", [report.path]
        ).fetchone()[0]
        return
    got = (report.rows_read, report.rows_loaded, report.lines_rejected, report.rows_orphaned)
    assert got == (spec["rows_read"], spec["rows_loaded"], spec["lines_rejected"], spec["rows_orphaned"])
    rows = conn.execute(
        "select row_number, line_number, reason from raw.quarantine where source_file = ? "
        "order by row_number",
        [report.path],
    ).fetchall()
    assert len(rows) == len(spec["rows"]) == report.rows_quarantined
    for (row, line, reason), (want_row, want_line, want_reason) in zip(rows, spec["rows"], strict=True):
        assert (row, line) == (want_row, want_line)
        assert reason.startswith(want_reason), reason
    # Nothing lost: every data record is in raw or in the quarantine, under its own number.
    table = name.split("/")[0]
    loaded_rows = [
        r[0] for r in conn.execute(f"select _row from raw.{table} where _file = ?", [report.path]).fetchall()
    ]
    assert sorted(loaded_rows + [r[0] for r in rows]) == list(range(1, report.rows_read + 1))


def test_rejected_file_loads_once_corrected(loaded) -> None:
    by_file, conn, landing = loaded
    path = landing / "order_items" / "missing_column.csv"
    path.write_text(ITEMS_HEADER + "O1,7,P1,2,3.50\n", encoding="utf-8")
    reports = load_landing(conn, landing, tables=["order_items"], as_of=parse_as_of(EXPECTED["as_of"]))
    [report] = [r for r in reports if r.path == str(path)]
    assert (report.status, report.rows_loaded) == ("loaded", 1)
