"""Load the landing folder into DuckDB ``raw`` tables, enforcing the export contract.

Per file: identified by path + content hash and loaded once; header checked (a missing required column
rejects the whole file and it is *not* marked loaded, so a corrected re-export of the same name loads
later); every value parsed in SQL; rows that break the contract go to ``raw.quarantine`` with a reason a
person can act on; the rest are appended to ``raw.<table>`` with their source file and row number.
Raw tables are append-only: staging models pick the newest version of each key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from dagster_project.ingest.contract import FILE_SUFFIXES, TABLES, Column, Table

# A pragmatic address check (RFC 5322 allows more, but shops and SendGrid do not): one @, a dot in the
# domain, no spaces or angle brackets. SendGrid drops anything stranger as invalid anyway.
EMAIL_REGEX = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"  # noqa: E501
BOOL_TRUE = ("true", "1")
BOOL_FALSE = ("false", "0")
SQL_TYPES = {
    "str": "varchar",
    "email": "varchar",
    "int": "bigint",
    "decimal": "decimal(18,2)",
    "bool": "boolean",
    "ts": "timestamp",
}


class FileRejected(Exception):
    """The file as a whole cannot be loaded (broken header, unreadable)."""


@dataclass
class FileReport:
    table: str
    path: str
    status: str  # loaded | rejected | skipped (already loaded)
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    message: str = ""
    unknown_columns: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def ensure_raw_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("create schema if not exists raw")
    for table in TABLES.values():
        cols = ", ".join(f'"{c.name}" {SQL_TYPES[c.type]}' for c in table.columns)
        conn.execute(
            f"create table if not exists raw.{table.name} ({cols}, _file varchar not null, "
            "_row bigint not null, _loaded_at timestamp not null)"
        )
        # Optional columns added to the contract later: a warehouse created before gets them (NULL for
        # the rows loaded so far). Inserts name their columns, so the column order does not matter.
        for c in table.columns:
            conn.execute(
                f'alter table raw.{table.name} add column if not exists "{c.name}" {SQL_TYPES[c.type]}'
            )
    conn.execute(
        """
        create table if not exists raw.quarantine (
            table_name varchar not null,
            source_file varchar not null,
            row_number bigint,          -- data record in the file, 1 = first row after the header
            raw_values json,
            reason varchar not null,
            quarantined_at timestamp not null
        )
        """
    )
    conn.execute(
        """
        create table if not exists raw.loaded_files (
            table_name varchar not null,
            path varchar not null,
            content_hash varchar not null,
            rows_read bigint, rows_loaded bigint, rows_quarantined bigint,
            unknown_columns varchar[],
            loaded_at timestamp not null,
            primary key (path, content_hash)
        )
        """
    )
    conn.execute(
        """
        create table if not exists raw.rejected_files (
            table_name varchar not null, path varchar not null, content_hash varchar,
            message varchar not null, rejected_at timestamp not null
        )
        """
    )


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def landing_files(landing_dir: Path, table: str) -> list[Path]:
    """Files of one table in load order (by name). Hidden and temporary files are never picked up, so a
    writer that writes ``.name.tmp`` and renames stays invisible until complete."""
    folder = landing_dir / table
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith((".", "_")) and p.name.endswith(FILE_SUFFIXES)
    )


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _source_sql(path: Path) -> str:
    if path.name.endswith(".parquet"):
        return f"read_parquet({_sql_str(str(path))})"
    # all_varchar: every value is checked by the contract below, not guessed by a sniffer.
    return (
        f"read_csv({_sql_str(str(path))}, header=true, all_varchar=true, delim=',', quote='\"', "
        "escape='\"', comment='', strict_mode=true, null_padding=false)"
    )


def _check_expr(col: Column, shop_tz: str) -> tuple[str, str]:
    """(reason SQL producing NULL when fine, typed value SQL) for one column."""
    ref = f"nullif(trim(\"{col.name}\"), '')"
    raw = f'"{col.name}"'
    checks: list[str] = []
    if col.required:
        checks.append(f"when {ref} is null then 'missing required value: {col.name}'")
    if col.type == "email":
        checks.append(
            f"when {ref} is not null and not regexp_full_match({ref}, {_sql_str(EMAIL_REGEX)}) "
            f"then 'not an email address: \"' || {raw} || '\"'"
        )
        typed = f"lower({ref})"
    elif col.type == "int":
        checks.append(
            f"when {ref} is not null and try_cast({ref} as bigint) is null "
            f"then 'not an integer in {col.name}: \"' || {raw} || '\"'"
        )
        typed = f"try_cast({ref} as bigint)"
    elif col.type == "decimal":
        checks.append(
            f"when {ref} is not null and (try_cast({ref} as decimal(18,2)) is null "
            f"or not regexp_full_match({ref}, '-?[0-9]+(\\.[0-9]+)?')) "
            f"then 'not a decimal number in {col.name} (use a decimal point, no thousands separator): \"' "
            f"|| {raw} || '\"'"
        )
        typed = f"try_cast({ref} as decimal(18,2))"
    elif col.type == "bool":
        checks.append(
            f"when {ref} is not null and lower({ref}) not in ('true','false','1','0') "
            f"then 'not a boolean in {col.name} (true/false/1/0): \"' || {raw} || '\"'"
        )
        typed = f"case when lower({ref}) in ('true','1') then true when lower({ref}) in ('false','0') then false end"  # noqa: E501
    elif col.type == "ts":
        # Offset-less timestamps are read in the shop's timezone (the session TimeZone), then stored in UTC.
        parsed = f"try_cast({ref} as timestamptz)"
        checks.append(
            f"when {ref} is not null and ({parsed} is null "
            f"or not regexp_matches({ref}, '^\\d{{4}}-\\d{{2}}-\\d{{2}}')) "
            f"then 'unparseable timestamp in {col.name} (ISO 8601 expected): \"' || {raw} || '\"'"
        )
        typed = f"timezone('UTC', {parsed})"
    else:
        typed = ref
    if col.allowed:
        allowed = ", ".join(_sql_str(v) for v in col.allowed)
        checks.append(
            f"when {ref} is not null and {ref} not in ({allowed}) "
            f"then 'unknown {col.name}: \"' || {raw} || '\"'"
        )
    reason = f"case {' '.join(checks)} end" if checks else "null"
    return reason, typed


def load_file(
    conn: duckdb.DuckDBPyConnection, table: Table, path: Path, *, shop_tz: str, content_hash: str
) -> FileReport:
    report = FileReport(table=table.name, path=str(path), status="loaded")
    now = datetime.now(UTC).replace(tzinfo=None)
    if path.stat().st_size == 0:
        report.message = "empty file: nothing to load"
        _mark_loaded(conn, report, content_hash, now)
        return report
    try:
        header = [row[0] for row in conn.execute(f"describe select * from {_source_sql(path)}").fetchall()]
    except duckdb.Error as exc:
        raise FileRejected(
            f"{path.name}: cannot be read as {table.name} export: {str(exc).splitlines()[0]}"
        ) from exc
    header = [h.lstrip("\ufeff").strip() for h in header]
    missing = [c for c in table.required if c not in header]
    if missing:
        raise FileRejected(
            f"{path.name}: header misses required column(s) {', '.join(missing)} "
            f"(found: {', '.join(header) or 'nothing'}); file not loaded"
        )
    report.unknown_columns = [h for h in header if h not in table.column_names]
    present = [c for c in table.columns if c.name in header]
    select_cols = ", ".join(f'cast("{c.name}" as varchar) as "{c.name}"' for c in present)
    absent_cols = "".join(f', null::varchar as "{c.name}"' for c in table.columns if c.name not in header)
    try:
        conn.execute(
            f"create or replace temp table _stage as select row_number() over () as _row, {select_cols}"
            f"{absent_cols} from {_source_sql(path)}"
        )
    except duckdb.Error as exc:
        raise FileRejected(f"{path.name}: cannot be parsed: {str(exc).splitlines()[0]}") from exc

    checks = [_check_expr(c, shop_tz) for c in table.columns]
    reasons = ", ".join(reason for reason, _ in checks)
    key_cols = ", ".join(f'"{k}"' for k in table.key)
    key_text = " || ', ' || ".join(f"'{k}=\"' || coalesce(\"{k}\", '') || '\"'" for k in table.key)
    conn.execute(
        f"""
        create or replace temp table _checked as
        select *,
            concat_ws('; ', {reasons},
                case when count(*) over (partition by {key_cols}) > 1
                      and row_number() over (partition by {key_cols} order by _row) > 1
                     then 'duplicate key in file: ' || {key_text} ||
                          ' (first seen in row ' || min(_row) over (partition by {key_cols}) || ')' end
            ) as _reason
        from _stage
        """
    )
    typed = ", ".join(f'{expr} as "{c.name}"' for c, (_, expr) in zip(table.columns, checks, strict=True))
    column_list = ", ".join(f'"{c.name}"' for c in table.columns)
    conn.execute("begin")
    try:
        conn.execute(
            f"insert into raw.{table.name} ({column_list}, _file, _row, _loaded_at) "
            f"select {typed}, ?, _row, ? from _checked where _reason = ''",
            [str(path), now],
        )
        raw_struct = ", ".join(f"'{c.name}': \"{c.name}\"" for c in table.columns)
        conn.execute(
            f"insert into raw.quarantine select ?, ?, _row, to_json({{{raw_struct}}}), _reason, ? "
            "from _checked where _reason <> ''",
            [table.name, str(path), now],
        )
        counts = conn.execute(
            "select count(*), count(*) filter (where _reason = ''), count(*) filter (where _reason <> '') "
            "from _checked"
        ).fetchone()
        report.rows_read, report.rows_loaded, report.rows_quarantined = (int(x) for x in counts)
        _mark_loaded(conn, report, content_hash, now)
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
    finally:
        conn.execute("drop table if exists _stage")
        conn.execute("drop table if exists _checked")
    return report


def _mark_loaded(
    conn: duckdb.DuckDBPyConnection, report: FileReport, content_hash: str, now: datetime
) -> None:
    conn.execute(
        "insert into raw.loaded_files values (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            report.table,
            report.path,
            content_hash,
            report.rows_read,
            report.rows_loaded,
            report.rows_quarantined,
            report.unknown_columns,
            now,
        ],
    )


def load_landing(
    conn: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    *,
    shop_tz: str = "Europe/Berlin",
    tables: list[str] | None = None,
) -> list[FileReport]:
    """Load every new file of the landing folder; return one report per file looked at."""
    ensure_raw_schema(conn)
    conn.execute(f"set TimeZone = {_sql_str(shop_tz)}")
    reports: list[FileReport] = []
    for name in tables or list(TABLES):
        table = TABLES[name]
        for path in landing_files(landing_dir, name):
            digest = file_hash(path)
            seen = conn.execute(
                "select 1 from raw.loaded_files where path = ? and content_hash = ?", [str(path), digest]
            ).fetchone()
            if seen:
                reports.append(
                    FileReport(table=name, path=str(path), status="skipped", message="already loaded")
                )
                continue
            try:
                reports.append(load_file(conn, table, path, shop_tz=shop_tz, content_hash=digest))
            except FileRejected as exc:
                conn.execute(
                    "insert into raw.rejected_files values (?, ?, ?, ?, ?)",
                    [name, str(path), digest, str(exc), datetime.now(UTC).replace(tzinfo=None)],
                )
                reports.append(FileReport(table=name, path=str(path), status="rejected", message=str(exc)))
    conn.execute("set TimeZone = 'UTC'")
    return reports


def summarize(reports: list[FileReport]) -> dict[str, dict[str, int]]:
    """Per table: files loaded/rejected/skipped and rows read/loaded/quarantined."""
    out: dict[str, dict[str, int]] = {}
    for r in reports:
        agg = out.setdefault(
            r.table,
            {
                "files_loaded": 0,
                "files_rejected": 0,
                "files_skipped": 0,
                "rows_read": 0,
                "rows_loaded": 0,
                "rows_quarantined": 0,
            },
        )
        agg[f"files_{r.status}"] += 1
        agg["rows_read"] += r.rows_read
        agg["rows_loaded"] += r.rows_loaded
        agg["rows_quarantined"] += r.rows_quarantined
    return out


def reports_json(reports: list[FileReport]) -> str:
    return json.dumps([r.as_dict() for r in reports], ensure_ascii=False)
