"""Load the landing folder into DuckDB ``raw`` tables, enforcing the export contract.

Per file: identified by path + content hash and loaded once; header checked (a missing required column
rejects the whole file and it is *not* marked loaded, so a corrected re-export of the same name loads
later). A CSV is parsed with the header's columns given explicitly and DuckDB's ``store_rejects``: a line
that cannot be parsed (not UTF-8, too many or too few fields, an unterminated quote, longer than 2 MiB) is
quarantined with its line number and the real reason, and the good rows of the file still load. Every
value is then checked in SQL against the contract (types, closed vocabularies, quantity > 0, prices ≥ 0,
timestamps at most a day after the export's arrival, the shared address rule); rows that break it go to
``raw.quarantine`` with a reason a person can act on; the rest are appended to ``raw.<table>`` with their
source file and row number. Rows whose parent (customer, order) is not known yet are loaded and counted as
orphans; dbt's ``quality.orphans`` lists them until the parent arrives.
Raw tables are append-only: staging models pick the newest version of each key.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import io
import json
import os
import queue
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nachfass.core.addresses import SIMPLE_ADDRESS_PATTERN, address_problem
from nachfass.core.contract import FILE_SUFFIXES, MAX_FUTURE, MAX_VALUE_CHARS, TABLES, Column, Table
from nachfass.core.file_digests import file_hash, known_digest, remember_digest
from nachfass.core.schema import ensure_raw_schema

ADDRESS_FUNCTION = "nachfass_address_problem"
MAX_LINE_BYTES = 2 * 1024 * 1024  # DuckDB's default; a longer line is quarantined on its own
MAX_HEADER_BYTES = 1024 * 1024
NUMBER = "__k"  # a record's number among the parsed ones, where a scan numbers in SQL
MAX_KEPT_LINE_CHARS = 4096  # of a line that could not be parsed, kept in the quarantine
# DuckDB's reject error types, in words a person can act on.
_REJECT_REASONS = {
    "INVALID ENCODING": "not UTF-8 text (export the file as UTF-8)",
    "INVALID UNICODE": "not UTF-8 text (export the file as UTF-8)",
    "MISSING COLUMNS": "too few fields",
    "TOO MANY COLUMNS": "too many fields",
    "UNQUOTED VALUE": "unterminated or stray quote (the rest of the record could not be read)",
    "LINE SIZE OVER MAXIMUM": f"line longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB",
}
# NUL and the other C0 controls (tab and line breaks aside): never text a shop meant to export.
_CONTROL_PATTERN = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]"
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])  # the same, as bytes
BOOL_TRUE = ("true", "1")
BOOL_FALSE = ("false", "0")


class _RepeatedKeys(Exception):
    """A key repeats in the file (rare): its load starts over and looks for where each key was seen first."""


class FileRejected(Exception):
    """The file as a whole cannot be loaded (broken header, unreadable)."""


@dataclass
class FileReport:
    table: str
    path: str
    status: str  # loaded | rejected | skipped (already loaded)
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0  # incl. lines that could not be parsed
    lines_rejected: int = 0  # lines that could not be parsed at all (part of rows_quarantined)
    rows_orphaned: int = 0  # loaded, but their customer or order is not known (yet)
    message: str = ""
    unknown_columns: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


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


def _register_address_rule(conn: duckdb.DuckDBPyConnection) -> None:
    """Make the shared address rule callable from SQL on this connection (idempotent)."""
    with contextlib.suppress(duckdb.Error):
        conn.remove_function(ADDRESS_FUNCTION)
    conn.create_function(
        ADDRESS_FUNCTION,
        address_problem,
        [duckdb.sqltype("VARCHAR")],
        duckdb.sqltype("VARCHAR"),
        null_handling="special",  # it returns NULL for a valid address
        side_effects=False,
    )


def _open_text_prefix(path: Path, limit: int) -> bytes:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        return handle.read(limit)


def _csv_header(path: Path) -> list[str]:
    """The header's column names, read here rather than sniffed: the parser then knows the columns, and a
    broken line further down is a rejected line, not a file the sniffer gives up on."""
    try:
        prefix = _open_text_prefix(path, MAX_HEADER_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise FileRejected(f"{path.name}: not a readable gzip file ({exc}); re-export it") from exc
    first = prefix.split(b"\n", 1)[0]
    if b"\n" not in prefix and len(prefix) >= MAX_HEADER_BYTES:
        raise FileRejected(f"{path.name}: no header line within the first MiB")
    try:
        text = codecs.decode(first, "utf-8-sig").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise FileRejected(
            f"{path.name}: the header is not UTF-8 text (byte {exc.start}); export as UTF-8"
        ) from None
    try:
        names = next(csv.reader(io.StringIO(text)), [])
    except csv.Error as exc:
        raise FileRejected(f"{path.name}: the header cannot be read as CSV ({exc})") from None
    names = [n.strip() or f"_unnamed_{i + 1}" for i, n in enumerate(names)]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FileRejected(f"{path.name}: the header names {', '.join(duplicates)} more than once")
    return names


def _source_sql(path: Path, header: list[str] | None, *, store_rejects: bool = True) -> str:
    """The file as a table function. ``store_rejects``: lines that cannot be parsed go to ``_csv_rejects``
    (the first scan of a file); otherwise the same lines are skipped silently (the later scans)."""
    if path.name.endswith(".parquet"):
        return f"read_parquet({_sql_str(str(path))})"
    columns = "{" + ", ".join(f"{_sql_str(name)}: 'VARCHAR'" for name in header or []) + "}"
    rejects = (
        "store_rejects=true, rejects_table='_csv_rejects', rejects_scan='_csv_reject_scans'"
        if store_rejects
        else "ignore_errors=true"
    )
    # all VARCHAR: every value is checked by the contract below, not guessed by a sniffer.
    return (
        f"read_csv({_sql_str(str(path))}, header=true, auto_detect=false, columns={columns}, delim=',', "
        f"quote='\"', escape='\"', comment='', strict_mode=true, null_padding=false, "
        f"max_line_size={MAX_LINE_BYTES}, {rejects})"
    )


def typed_column(name: str) -> str:
    """The column holding a value converted to its contract type, beside the raw value, for the checks."""
    return f'"__typed_{name}"'


def _check_expr(
    col: Column, shop_tz: str, as_of: datetime | None, *, control: bool = True
) -> tuple[str, str]:
    """(reason SQL producing NULL when fine, typed value SQL) for one column. The reason reads the typed value
    from ``typed_column(col.name)``, which the caller computes from the typed SQL in an inner select, so
    a value is parsed once per pass (a timestamp parse costs as much as the rest of a row's checks).
    ``control``: False where the file has no control character at all (``_may_hold_control_characters``).
    Every row of a file runs every condition, so each is written to be cheap where the value is fine."""
    ref = f"nullif(trim(\"{col.name}\"), '')"
    converted = typed_column(col.name)
    if col.type not in ("email", "int", "decimal", "bool", "ts"):
        ref = converted  # a text value's typed form is the trimmed text itself: computed once already
    raw = f'"{col.name}"'
    shown = f"left({raw}, 80)"  # a value echoed in a reason; the whole value stays in raw_values
    checks: list[str] = []
    if col.required:
        checks.append(f"when {ref} is null then 'missing required value: {col.name}'")
    # strlen (bytes, stored with the value) first: a value has at least as many bytes as characters.
    checks.append(
        f"when strlen({raw}) > {MAX_VALUE_CHARS} and length({raw}) > {MAX_VALUE_CHARS} "
        f"then 'value too long in {col.name} (' || length({raw}) || "
        f"' characters, at most {MAX_VALUE_CHARS:,})'"
    )
    if control:
        checks.append(
            f"when __has_control and regexp_matches({raw}, '{_CONTROL_PATTERN}') "
            f"then 'control character (NUL, ESC …) in {col.name}'"
        )
    if col.type == "email":
        problem = f'"__address_problem_{col.name}"'
        checks.append(
            f"when {ref} is not null and {problem} is not null "
            f"then 'not an email address: \"' || {shown} || '\" (' || {problem} || ')'"
        )
        typed = f"lower({ref})"
    elif col.type == "int":
        checks.append(
            f"when {ref} is not null and {converted} is null "
            f"and regexp_full_match({ref}, '[+-]?[0-9]+') "
            f"then 'integer out of range in {col.name}: \"' || {shown} || '\"'"
        )
        checks.append(
            f"when {ref} is not null and {converted} is null "
            f"then 'not an integer in {col.name}: \"' || {shown} || '\"'"
        )
        typed = f"try_cast({ref} as bigint)"
    elif col.type == "decimal":
        checks.append(
            f"when {ref} is not null and regexp_full_match({ref}, '-?[0-9]+(\\.[0-9]+)?') "
            f"and {converted} is null "
            f"then 'number too large in {col.name} (at most 16 digits before the decimal point): \"' "
            f"|| {shown} || '\"'"
        )
        checks.append(
            f"when {ref} is not null and ({converted} is null "
            f"or not regexp_full_match({ref}, '-?[0-9]+(\\.[0-9]+)?')) "
            f"then 'not a decimal number in {col.name} (use a decimal point, no thousands separator): \"' "
            f"|| {shown} || '\"'"
        )
        typed = f"try_cast({ref} as decimal(18,2))"
    elif col.type == "bool":
        checks.append(
            f"when {ref} is not null and lower({ref}) not in ('true','false','1','0') "
            f"then 'not a boolean in {col.name} (true/false/1/0): \"' || {shown} || '\"'"
        )
        typed = f"case when lower({ref}) in ('true','1') then true when lower({ref}) in ('false','0') then false end"  # noqa: E501
    elif col.type == "ts":
        # Offset-less timestamps are read in the shop's timezone (the session TimeZone), then stored in UTC.
        parsed = f"try_cast({ref} as timestamptz)"
        checks.append(
            f"when {ref} is not null and ({converted} is null "
            f"or not regexp_matches({ref}, '^\\d{{4}}-\\d{{2}}-\\d{{2}}')) "
            f"then 'unparseable timestamp in {col.name} (ISO 8601 expected): \"' || {shown} || '\"'"
        )
        if as_of is not None:
            # as_of here is the export's arrival (load_file): the later of the file's time and the run's
            arrival = as_of.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            arrival_utc = as_of.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
            checks.append(
                f"when {converted} > timestamp '{arrival_utc}' + interval '{MAX_FUTURE}' "
                f"then 'timestamp in the future in {col.name}: \"' || {shown} || "
                f"'\" (more than {MAX_FUTURE} after the export arrived, as of {arrival})'"
            )
        typed = f"timezone('UTC', {parsed})"
    else:
        typed = f"nullif(trim({raw}), '')"
    if col.minimum is not None and col.type in ("int", "decimal"):
        op, words = (">", "greater than") if col.exclusive_minimum else (">=", "at least")
        checks.append(
            f"when {converted} is not null and not ({converted} {op} {col.minimum}) "
            f"then '{col.name} must be {words} {col.minimum}: \"' || {shown} || '\"'"
        )
    if col.allowed:
        allowed = ", ".join(_sql_str(v) for v in col.allowed)
        checks.append(
            f"when {ref} is not null and {ref} not in ({allowed}) "
            f"then 'unknown {col.name}: \"' || {shown} || '\"'"
        )
    reason = f"case {' '.join(checks)} end" if checks else "null"
    return reason, typed


def _may_hold_control_characters(path: Path) -> bool:
    """Whether a value of the file may hold a control character (``_CONTROL_PATTERN``). A plain CSV file's
    bytes tell: in UTF-8, the only encoding a line is parsed in, these characters are single bytes that
    are part of no other character, so a file without such a byte has no value with one and the per-row
    check is left out (2.4 s for the 1M session events' 2.4 GB, against ~6 s of the checks in SQL).
    Compressed and Parquet files: True (the rows are checked)."""
    if not path.name.endswith(".csv"):
        return True
    with path.open("rb") as handle:
        while block := handle.read(1 << 24):
            if len(block.translate(None, _CONTROL_BYTES)) != len(block):
                return True
    return False


def _physical_lines(path: Path, byte_positions: list[int]) -> dict[int, int]:
    """Line number (1 = the header) of each byte offset: DuckDB counts records, and a quoted field may
    span lines, so the line a person opens in an editor is counted from the bytes."""
    wanted = sorted(set(byte_positions))
    found: dict[int, int] = {}
    opener = gzip.open if path.name.endswith(".gz") else open
    line, offset, i = 1, 0, 0
    with opener(path, "rb") as handle:
        while i < len(wanted) and (block := handle.read(1 << 20)):
            while i < len(wanted) and wanted[i] < offset + len(block):
                found[wanted[i]] = line + block.count(b"\n", 0, wanted[i] - offset)
                i += 1
            line += block.count(b"\n")
            offset += len(block)
    return found


def _rejected_lines(conn: duckdb.DuckDBPyConnection, path: Path) -> list[tuple[int, int | None, str, str]]:
    """(data record number, physical line, reason, the line) of every line DuckDB could not parse."""
    rows = conn.execute(
        "select line, any_value(line_byte_position), list(distinct error_type order by error_type), "
        "list(distinct error_message order by error_message), any_value(left(csv_line, ?)) "
        "from _csv_rejects group by line order by line",
        [MAX_KEPT_LINE_CHARS],
    ).fetchall()
    if not rows:
        return []
    lines = _physical_lines(path, [r[1] for r in rows if r[1] is not None])
    out = []
    for record, position, types, messages, text in rows:
        physical = lines.get(position) if position is not None else None
        where = f"line {physical}" if physical is not None else f"record {record}"
        words = "; ".join(dict.fromkeys(_REJECT_REASONS.get(t, t.lower()) for t in types))
        # DuckDB may report a broken line more than once (e.g. "Found: 3" and "Found: 4"): the first says it.
        detail = next((m.split("\n")[0] for m in messages if m and "utf-8" not in m.lower()), "")
        reason = f"{words} on {where}" + (f": {detail}" if detail else "")
        out.append((int(record) - 1, physical, reason, text))
    return out


def load_file(
    conn: duckdb.DuckDBPyConnection,
    table: Table,
    path: Path,
    *,
    shop_tz: str,
    content_hash: str,
    as_of: datetime | None = None,
    may_hold_control: bool | None = None,
) -> FileReport:
    """Load one file. The first attempt assumes every key is unique in the file and checks that once its rows
    are in (inside the transaction, on the loaded key column, a few seconds at 31 M rows instead of a scan of
    the file); if a key repeats, the attempt is rolled back and the file loaded again, looking for repeats
    first, so rows after the first of a key are quarantined with where it was first seen.
    ``may_hold_control``: ``_may_hold_control_characters(path)``, when the caller knows it already."""
    for look_for_repeats in (False, True):
        try:
            with _NumberedScans(conn) as scans:
                return _load_file(
                    conn,
                    table,
                    path,
                    shop_tz=shop_tz,
                    content_hash=content_hash,
                    as_of=as_of,
                    scans=scans,
                    look_for_repeats=look_for_repeats,
                    may_hold_control=may_hold_control,
                )
        except _RepeatedKeys:
            continue
    raise AssertionError("the second attempt looks for repeated keys and does not raise _RepeatedKeys")


def _load_file(
    conn: duckdb.DuckDBPyConnection,
    table: Table,
    path: Path,
    *,
    shop_tz: str,
    content_hash: str,
    as_of: datetime | None,
    scans: _NumberedScans,
    look_for_repeats: bool,
    may_hold_control: bool | None,
) -> FileReport:
    report = FileReport(table=table.name, path=str(path), status="loaded")
    now = datetime.now(UTC).replace(tzinfo=None)  # audit only: no decision depends on it
    if path.stat().st_size == 0:
        report.message = "empty file: nothing to load"
        _mark_loaded(conn, report, content_hash, now)
        return report
    is_csv = not path.name.endswith(".parquet")
    if is_csv:
        header = _csv_header(path)
    else:
        try:
            header = [
                row[0] for row in conn.execute(f"describe select * from {_source_sql(path, None)}").fetchall()
            ]
        except duckdb.Error as exc:
            raise FileRejected(
                f"{path.name}: cannot be read as {table.name} export: {str(exc).splitlines()[0]}"
            ) from exc
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
    # The file is read several times instead of being copied into a temporary table: parsing is cheaper
    # than writing and re-reading every row (at 1 M customers the copies spilled to disk). Every scan
    # selects all present columns (DuckDB checks the encoding of the columns it reads only, so fewer
    # columns could keep a line another scan skips). Each scan parses and checks on a connection of its
    # own and streams only what the next step needs; its records are numbered in file order on the way
    # (_NumberedScans), so the parse stays parallel. The checks of a file with addresses or repeated keys
    # join, and number in SQL before the join, on one thread (customers and consents at 1 M: a few s).
    present_refs = ", ".join(f'"{c.name}"' for c in present)

    def parsed(store_rejects: bool = False) -> str:
        """The file's records, every column as text (absent columns NULL)."""
        source = _source_sql(path, header, store_rejects=store_rejects)
        return f"(select {select_cols}{absent_cols} from {source})"

    def numbered_before_joins(store_rejects: bool = False) -> str:
        """The parsed records with their number taken before a join: a join does not keep the file's
        order, so a scan that joins numbers in SQL, on one thread (the scans without joins are numbered
        in Python, in parallel)."""
        return f"(select row_number() over () as {NUMBER}, * from {parsed(store_rejects)})"

    key_cols = ", ".join(f'"{k}"' for k in table.key)
    dup_key = " and ".join(f's."{k}" is not distinct from _dup_keys."{k}"' for k in table.key)
    # The lines that cannot be parsed: recorded by the first scan that reads every column (the checks, or
    # the scan for repeated keys), on the scans' connection, which then holds the rejects table.
    rejected: list[tuple[int, int | None, str, str]] | None = None
    has_dups = False
    if look_for_repeats:
        try:
            # Scan 0 (second attempt only): keys seen more than once, unnumbered. bit_xor(hash(...)) makes
            # the scan read every column, see above.
            scans.work.execute(
                f"create or replace temp table _dup_keys as select {key_cols}, true as __dup, "
                f"bit_xor(hash({present_refs})) as __all from {parsed(store_rejects=True)} "
                f"group by {key_cols} having count(*) > 1"
            )
        except duckdb.Error as exc:
            raise FileRejected(f"{path.name}: cannot be read: {str(exc).splitlines()[0]}") from exc
        rejected = _rejected_lines(scans.work, path) if is_csv else []
        has_dups = scans.work.execute("select count(*) from _dup_keys").fetchall()[0][0] > 0
    key_types = ", ".join(f'"{k}" varchar' for k in table.key)
    conn.execute(f"create or replace temp table _dups ({key_types}, __first bigint)")
    if has_dups:  # where each repeated key was seen first
        keys_of_s = ", ".join(f's."{k}"' for k in table.key)
        scans.collect(
            f"select {keys_of_s}, s.{NUMBER}, _dup_keys.__dup is not null as __keep "
            f"from {numbered_before_joins()} s left join _dup_keys on {dup_key}",
            "__keep",
            "_dup_rows",
        )
        conn.execute(f"insert into _dups select {key_cols}, min(_k) from _dup_rows group by {key_cols}")
    address_joins = ""
    address_cols = ""
    for column in (c for c in table.columns if c.type == "email"):
        # The address rule runs in Python (email-validator): once per distinct address, not per row.
        try:
            _check_addresses(scans.work, column.name, parsed())
        except duckdb.Error as exc:
            raise FileRejected(f"{path.name}: cannot be read: {str(exc).splitlines()[0]}") from exc
        address_joins += (
            f" left join _addresses_{column.name} on nullif(trim(s.\"{column.name}\"), '') "
            f"= _addresses_{column.name}.address"
        )
        address_cols += f', _addresses_{column.name}.problem as "__address_problem_{column.name}"'

    # The export arrived when its file was written (its modification time) and, at the latest, by the
    # run's logical time: a row stamped more than a day after both is a clock error at the shop. The later
    # of the two, so a file of history loaded by a backdated run (a replay, a test) loses nothing, and a
    # live run (as_of ≈ the file's time) catches rows from the future.
    arrival = None
    if as_of is not None:
        written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        arrival = max(as_of.astimezone(UTC), written)
    if may_hold_control is None:
        may_hold_control = _may_hold_control_characters(path)
    checks = [_check_expr(c, shop_tz, arrival, control=may_hold_control) for c in table.columns]
    reasons = ", ".join(reason for reason, _ in checks)
    converted = ", ".join(
        f"{expr} as {typed_column(c.name)}" for c, (_, expr) in zip(table.columns, checks, strict=True)
    )
    all_cols = ", ".join(f'"{c.name}"' for c in table.columns)
    key_text = " || ', ' || ".join(f"'{k}=\"' || coalesce(\"{k}\", '') || '\"'" for k in table.key)
    # a row after the first with its key is a duplicate; the first row of each repeated key is in _dups
    duplicate = (
        f"case when _row > __first then 'duplicate key in file: ' || {key_text} || "
        f"' (first seen in row ' || __first || ')' end"
    )
    same_key = " and ".join(f's."{k}" is not distinct from _dups."{k}"' for k in table.key)
    dup_flag = "coalesce(_dup_keys.__dup, false)" if has_dups else "false"
    dup_join = f"left join _dup_keys on {dup_key}" if has_dups else ""
    # Scan 1: the rows that break the contract, with their raw values and every reason (usually few). The
    # scan checks every row; only the rows that broke a rule or share their key with another row stream on.
    joins = has_dups or bool(address_joins)
    first_parse = rejected is None  # this scan records the lines that cannot be parsed
    control = "false"
    if may_hold_control:
        control = f"regexp_matches(concat_ws('', {all_cols}), '{_CONTROL_PATTERN}')"
    checked = f"""
        select {all_cols}, _reason, __keep{f", {NUMBER}" if joins else ""}
        from (select *, _reason <> '' or __dup as __keep
              from (select *, concat_ws('; ', {reasons}) as _reason
                    -- One regular expression per row, not per value: the per-column check runs only where
                    -- it matched. Every value is converted to its type once; the checks read the result.
                    from (select *,
                                 {control} as __has_control,
                                 {converted}
                          from (select s.*, {dup_flag} as __dup{address_cols}
                                from {numbered_before_joins(first_parse) if joins else parsed(first_parse)} s
                                {dup_join}{address_joins}))))
    """
    try:
        scans.collect(checked, "__keep", "_checked_rows")
    except duckdb.Error as exc:
        raise FileRejected(f"{path.name}: cannot be read: {str(exc).splitlines()[0]}") from exc
    if rejected is None:
        rejected = _rejected_lines(scans.work, path) if is_csv else []
    shifted = _record_shifts(conn, [record for record, *_ in rejected])
    conn.execute(
        f"""
        create or replace temp table _bad as
        select _row, {all_cols}, _reason
        from (
            select *, concat_ws('; ', nullif(__checks, ''), {duplicate}) as _reason
            from (select s.* exclude (_reason), s._reason as __checks, _dups.__first
                  from {_numbered("_checked_rows", shifted)} s
                  left join _dups on {same_key})
        )
        where _reason <> ''
        """
    )
    typed = ", ".join(f'{expr} as "{c.name}"' for c, (_, expr) in zip(table.columns, checks, strict=True))
    column_list = ", ".join(f'"{c.name}"' for c in table.columns)
    bad = conn.execute("select count(*) from _bad").fetchall()[0][0]
    # Scan 2: every other row, converted once more, straight into raw (no copy of the file in between).
    good = "" if not bad else " where _row not in (select _row from _bad)"
    converted_rows = scans.scan(f"select {typed} from {parsed()}")
    conn.execute("begin")
    try:
        loaded = conn.execute(
            f"insert into raw.{table.name} ({column_list}, _file, _row, _loaded_at) "
            f"select {column_list}, ?, _row, ? from {_numbered(converted_rows, shifted)} s{good}",
            [str(path), now],
        ).fetchall()[0][0]
        if not look_for_repeats and _keys_repeat(conn, table, checks, str(path), now):
            raise _RepeatedKeys
        raw_struct = ", ".join(f"'{c.name}': \"{c.name}\"" for c in table.columns)
        conn.execute(
            "insert into raw.quarantine (table_name, source_file, row_number, raw_values, reason, "
            f"quarantined_at) select ?, ?, _row, to_json({{{raw_struct}}}), _reason, ? "
            "from _bad order by _row",
            [table.name, str(path), now],
        )
        if rejected:
            conn.executemany(
                "insert into raw.quarantine (table_name, source_file, row_number, raw_values, reason, "
                "quarantined_at, line_number) values (?, ?, ?, ?, ?, ?, ?)",
                [
                    [table.name, str(path), record, json.dumps({"line": text}), reason, now, physical]
                    for record, physical, reason, text in rejected
                ],
            )
        read, loaded, quarantined = int(loaded) + int(bad), int(loaded), int(bad)
        report.rows_read = read + len(rejected)
        report.rows_loaded = loaded
        report.rows_quarantined = quarantined + len(rejected)
        report.lines_rejected = len(rejected)
        report.rows_orphaned = _count_orphans(conn, table, path)
        notes = []
        if rejected:
            notes.append(f"{len(rejected)} line(s) could not be parsed (see raw.quarantine.line_number)")
        if report.rows_orphaned:
            notes.append(f"{report.rows_orphaned} row(s) held as orphans: their parent is not known yet")
        report.message = "; ".join(notes)
        _mark_loaded(conn, report, content_hash, now)
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
    finally:
        for temp in (
            "_dups",
            "_dup_rows",
            "_checked_rows",
            "_bad",
            "_csv_rejects",
            "_csv_reject_scans",
            "_rejected_records",
            "_record_shifts",
            *(f"_addresses_{c.name}" for c in table.columns if c.type == "email"),
        ):
            conn.execute(f"drop table if exists {temp}")
    return report


class _NumberedScans:
    """Scans of a file, each with ``_k``: a record's number among the parsed ones (1 = first), in file order.

    DuckDB's ``row_number() over ()`` runs a whole scan, parsing included, on one thread: the checks and
    the insert of the 1 M-customer session events took 37 s each numbered and about half unnumbered
    (docs/benchmarks.md). So a scan runs on a connection of its own (``work``, same database, same
    TimeZone), its rows stream out as Arrow batches in the file's order (DuckDB's parallel readers, filters
    and projections keep it while ``preserve_insertion_order`` is on, its default, checked; a join does
    not, so a scan that joins numbers its rows in SQL before the join) and are numbered in Python batch by
    batch; the consuming statement on the main connection reads them as a registered view. A scan is read
    once; the next scan may start after it. Temporary tables a scan reads live on ``work``.
    """

    BATCH_ROWS = 1 << 20

    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        [(in_order, timezone)] = conn.execute(
            "select current_setting('preserve_insertion_order'), current_setting('TimeZone')"
        ).fetchall()
        if not in_order:
            raise RuntimeError(
                "DuckDB's preserve_insertion_order is off: the ingest numbers rows in file order and needs it"
            )
        self.conn = conn
        self._stack = contextlib.ExitStack()
        self._work: duckdb.DuckDBPyConnection = self._stack.enter_context(contextlib.closing(conn.cursor()))
        self._work.execute(f"set TimeZone = {_sql_str(timezone)}")
        self._reader: _Prefetched | None = None
        self._count = 0

    @property
    def work(self) -> duckdb.DuckDBPyConnection:
        """The scans' connection, free for the next statement (the last scan's stream is closed)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        return self._work

    def __enter__(self) -> _NumberedScans:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._stack.close()

    def scan(self, select_sql: str) -> str:
        """A name for ``select_sql``'s rows (run on ``work``) with ``_k``, to be read by one statement."""
        reader = _Prefetched(self.work.sql(select_sql).to_arrow_reader(self.BATCH_ROWS))
        self._reader = reader
        schema = reader.schema.append(pa.field("_k", pa.int64(), nullable=False))

        def numbered() -> Iterator[pa.RecordBatch]:
            first = 1
            for batch in reader:
                numbers = pa.array(np.arange(first, first + batch.num_rows, dtype=np.int64))
                yield batch.append_column(schema.field("_k"), numbers)
                first += batch.num_rows

        self._count += 1
        name = f"_numbered_scan_{self._count}"
        self.conn.register(name, pa.RecordBatchReader.from_batches(schema, numbered()))
        self._stack.callback(self.conn.unregister, name)
        return name

    def collect(self, select_sql: str, keep: str, table: str) -> None:
        """The rows of ``select_sql`` (run on ``work``) where the boolean column ``keep`` is true, with
        ``_k`` (numbered among all rows), into the temporary table ``table`` on the main connection. For
        scans that look for a few rows: Python reads the stream itself, so DuckDB's threads all work on
        the scan, and only the kept rows are copied (in bounded batches, so many stay within memory).
        A query that joins must number its rows itself, before the join, in a column ``NUMBER``."""
        reader = self.work.sql(select_sql).to_arrow_reader(self.BATCH_ROWS)
        schema = reader.schema.remove(reader.schema.get_field_index(keep))
        numbered = NUMBER in schema.names
        if numbered:
            schema = schema.remove(schema.get_field_index(NUMBER))
        schema = schema.append(pa.field("_k", pa.int64(), nullable=False))
        pending: list[pa.RecordBatch] = []

        def flush() -> None:
            self.conn.register("_kept_rows", pa.Table.from_batches(pending, schema))
            try:
                self.conn.execute(f"insert into {table} select * from _kept_rows")
            finally:
                self.conn.unregister("_kept_rows")
            pending.clear()

        self.conn.register("_kept_rows", pa.Table.from_batches([], schema))
        try:
            self.conn.execute(f"create or replace temp table {table} as select * from _kept_rows")
        finally:
            self.conn.unregister("_kept_rows")
        first = 1
        try:
            for batch in reader:
                if numbered:  # numbered by the query
                    numbers = batch.column(NUMBER)
                    batch = batch.drop_columns([NUMBER])
                else:
                    numbers = pa.array(np.arange(first, first + batch.num_rows, dtype=np.int64))
                    first += batch.num_rows
                wanted = pc.fill_null(batch.column(keep), False)
                if not pc.any(wanted).as_py():
                    continue
                batch = batch.drop_columns([keep]).append_column(schema.field("_k"), numbers)
                pending.append(batch.filter(wanted))
                if sum(b.num_rows for b in pending) >= self.BATCH_ROWS:
                    flush()
            flush()
        finally:
            reader.close()


class _Prefetched:
    """A record batch stream read ahead by a thread of its own, a few batches deep. Read directly, the
    consuming statement would pull each batch and the producing query would compute it only then, on the
    pulling thread: the two would take turns on one core. Read ahead, the producer keeps DuckDB's other
    threads busy while the consumer works."""

    DEPTH = 2

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.schema = reader.schema
        self._reader = reader
        self._queue: queue.Queue[pa.RecordBatch | BaseException | None] = queue.Queue(self.DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="ingest-scan", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            for batch in self._reader:
                if not self._put(batch):
                    return
            self._put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item: pa.RecordBatch | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop reading ahead and release the producing query."""
        self._stop.set()
        self._thread.join()
        self._reader.close()


def _keys_repeat(
    conn: duckdb.DuckDBPyConnection, table: Table, checks: list[tuple[str, str]], path: str, now: datetime
) -> bool:
    """Whether a key of the file just loaded repeats among its loaded rows (``raw.<table>``, this file and
    load time) and its quarantined ones (``_bad``, keys converted as in the insert). Equal text converts to
    equal keys, so no repeat is missed; keys that only convert alike (" 7" and "7") make the load start
    over with the exact look, which then finds nothing to quarantine: slower, same result."""
    typed = dict(zip((c.name for c in table.columns), (expr for _, expr in checks), strict=True))
    names = [f"__key_{i}" for i in range(len(table.key))]
    loaded = ", ".join(f'"{k}" as {n}' for k, n in zip(table.key, names, strict=True))
    quarantined = ", ".join(typed[k] for k in table.key)
    return bool(
        conn.execute(
            f"select {', '.join(names)} from (select {loaded} from raw.{table.name} where _file = ? "
            f"and _loaded_at = ? union all select {quarantined} from _bad) group by {', '.join(names)} "
            "having count(*) > 1 limit 1",
            [path, now],
        ).fetchall()
    )


def _record_shifts(conn: duckdb.DuckDBPyConnection, rejected_records: list[int]) -> bool:
    """With lines that could not be parsed, ``_record_shifts`` maps a parsed row's number to its record
    number in the file, and ``_dups.__first`` becomes a record number. False when nothing was rejected."""
    if not rejected_records:
        return False
    conn.execute("create or replace temp table _rejected_records (r bigint)")
    conn.executemany("insert into _rejected_records values (?)", [[r] for r in sorted(set(rejected_records))])
    # Parsed row k is record k + (number of rejected records before it). With the rejected records sorted as
    # r_1 < r_2 < …, that number is the largest i with r_i - i < k: an ASOF join on the running threshold.
    conn.execute(
        """
        create or replace temp table _record_shifts as
        with ranked as (select r - row_number() over (order by r) as threshold,
                               row_number() over (order by r) as i from _rejected_records)
        select threshold, max(i) as shift from ranked group by threshold
        """
    )
    conn.execute(
        "update _dups set __first = __first + coalesce((select max(shift) from _record_shifts "
        "where threshold < _dups.__first), 0)"
    )
    return True


def _numbered(rows: str, shifted: bool) -> str:
    """SQL for the parsed rows with ``_row``, their record number in the file (1 = first after the header),
    counting the records that could not be parsed (``_record_shifts``), so a row number points at the right
    record."""
    if not shifted:  # the usual case: parsed row k is record k
        return f"(select _k as _row, * exclude (_k) from {rows})"
    return (
        f"(select p._k + coalesce(_record_shifts.shift, 0) as _row, p.* exclude (_k) "
        f"from {rows} p asof left join _record_shifts on p._k > _record_shifts.threshold)"
    )


def address_verdicts_sql(addresses: str) -> str:
    """SQL giving (address, problem) for each row of ``addresses`` (one column ``address``, distinct, not
    NULL): the address rule, decided by the domain alone for plain addresses
    (``addresses.SIMPLE_ADDRESS_PATTERN``), so the rule runs once per distinct domain, not per address."""
    return f"""
        with plain as (
            select address,
                   case when length(address) <= 254 and regexp_full_match(address, '{SIMPLE_ADDRESS_PATTERN}')
                             and not contains(split_part(address, '@', 2), 'xn--')
                        then split_part(address, '@', 2) end as domain
            from {addresses}
        ),
        domains as (
            select domain, {ADDRESS_FUNCTION}('a@' || domain) as problem
            from (select distinct domain from plain where domain is not null)
        )
        select plain.address,
               case when plain.domain is not null and domains.problem is null then null
                    else {ADDRESS_FUNCTION}(plain.address) end as problem
        from plain left join domains on plain.domain = domains.domain
    """


def _check_addresses(conn: duckdb.DuckDBPyConnection, column: str, parsed: str) -> None:
    """``_addresses_<column>``: each distinct address of the column with the address rule's verdict. This scan
    reads one column, so it may also see a line another scan skips (broken in another column): that address
    is checked too and never joined."""
    distinct = (
        f"(select address from (select distinct nullif(trim(\"{column}\"), '') as address from {parsed}) "
        "where address is not null)"
    )
    conn.execute(f"create or replace temp table _addresses_{column} as {address_verdicts_sql(distinct)}")


def _count_orphans(conn: duckdb.DuckDBPyConnection, table: Table, path: Path) -> int:
    """Rows of this file whose customer or order is not in the warehouse (yet)."""
    if not table.parents:
        return 0
    conditions = " or ".join(
        f'(t."{column}" is not null and not exists '
        f'(select 1 from raw.{parent} p where p."{parent_column}" = t."{column}"))'
        for column, parent, parent_column in table.parents
    )
    return int(
        conn.execute(
            f"select count(*) from raw.{table.name} t where t._file = ? and ({conditions})", [str(path)]
        ).fetchall()[0][0]
    )


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
    as_of: datetime | None = None,
) -> list[FileReport]:
    """Load every new file of the landing folder; return one report per file looked at.

    ``as_of``: the run's logical time, taken as the exports' arrival: timestamps more than a day after it
    are quarantined as "in the future". Without it that rule is not applied.
    """
    ensure_raw_schema(conn)
    _register_address_rule(conn)
    conn.execute(f"set TimeZone = {_sql_str(shop_tz)}")
    reports: list[FileReport] = []
    files = [(name, path) for name in tables or list(TABLES) for path in landing_files(landing_dir, name)]
    # A file to load has its hash (unless remembered) and its control-byte scan read ahead by a thread while
    # the files before it load: both read the whole file on one core (~5 s for the 1M session events), and
    # the loads leave a core idle in places. The thread touches no connection. Files loaded before (the
    # usual case in a scheduled run) are not read at all.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-read-ahead") as pool:
        ahead: list[tuple[str, Path, str | None, Future[_FileLook] | None]] = []
        for name, path in files:
            stat = path.stat()
            known = known_digest(conn, path, stat)
            if known is not None and _was_loaded(conn, path, known):
                ahead.append((name, path, known, None))
            else:
                ahead.append((name, path, known, pool.submit(_look_at, path, stat, known is None)))
        try:
            for name, path, known, future in ahead:
                look = future.result() if future is not None else None
                if look is not None and not _same_file(look.stat, path.stat()):  # changed since: look again
                    look = _look_at(path, path.stat(), True)
                # hashed ahead (or again, above), or remembered: every file has one of the two
                digest = look.digest if look is not None and look.digest is not None else known or ""
                if look is not None and look.hashed_at_ns is not None:
                    remember_digest(conn, path, look.stat, digest, look.hashed_at_ns)
                if _was_loaded(conn, path, digest):
                    reports.append(
                        FileReport(table=name, path=str(path), status="skipped", message="already loaded")
                    )
                    continue
                try:
                    reports.append(
                        load_file(
                            conn,
                            TABLES[name],
                            path,
                            shop_tz=shop_tz,
                            content_hash=digest,
                            as_of=as_of,
                            may_hold_control=look.may_hold_control if look is not None else None,
                        )
                    )
                except FileRejected as exc:
                    conn.execute(
                        "insert into raw.rejected_files values (?, ?, ?, ?, ?)",
                        [name, str(path), digest, str(exc), datetime.now(UTC).replace(tzinfo=None)],
                    )
                    reports.append(
                        FileReport(table=name, path=str(path), status="rejected", message=str(exc))
                    )
        finally:
            for *_, future in ahead:
                if future is not None:
                    future.cancel()
    conn.execute("set TimeZone = 'UTC'")
    return reports


@dataclass
class _FileLook:
    """What the read-ahead thread learnt of a landing file (``_look_at``)."""

    stat: os.stat_result
    digest: str | None  # None: not hashed (its hash is remembered)
    hashed_at_ns: int | None
    may_hold_control: bool | None  # None: not scanned (a file that cannot be opened: load_file says why)


def _look_at(path: Path, stat: os.stat_result, hash_it: bool) -> _FileLook:
    """The file's hash (if asked) and whether it may hold a control character; ``stat`` taken before."""
    hashed_at_ns = time.time_ns() if hash_it else None
    digest = file_hash(path) if hash_it else None
    try:
        may_hold_control = _may_hold_control_characters(path)
    except OSError:
        may_hold_control = None
    return _FileLook(stat, digest, hashed_at_ns, may_hold_control)


def _same_file(before: os.stat_result, now: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ino) == (now.st_size, now.st_mtime_ns, now.st_ino)


def _was_loaded(conn: duckdb.DuckDBPyConnection, path: Path, digest: str) -> bool:
    return (
        conn.execute(
            "select 1 from raw.loaded_files where path = ? and content_hash = ?", [str(path), digest]
        ).fetchone()
        is not None
    )


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
                "lines_rejected": 0,
                "rows_orphaned": 0,
            },
        )
        agg[f"files_{r.status}"] += 1
        agg["rows_read"] += r.rows_read
        agg["rows_loaded"] += r.rows_loaded
        agg["rows_quarantined"] += r.rows_quarantined
        agg["lines_rejected"] += r.lines_rejected
        agg["rows_orphaned"] += r.rows_orphaned
    return out


def reports_json(reports: list[FileReport]) -> str:
    return json.dumps([r.as_dict() for r in reports], ensure_ascii=False)
