"""DSGVO (Art. 17) erasure of one person, by email address or customer id.

What happens:
- rows about the person are deleted from every table of the warehouse that names them (raw exports,
  quarantine, SendGrid events, dbt-built tables, the outgoing queue), found by their addresses, customer
  ids and order ids;
- their send-ledger rows stay (the ledger proves what was sent) but are pseudonymised: address and
  customer id removed, trigger key replaced by a hash, and a salted hash of the address recorded in
  ``mail.erasures`` so the address stays suppressed and is never mailed again, even when a later export
  brings the person back, until they confirm consent anew;
- their outbox files are deleted;
- the web service's files in the landing folder are rewritten without them: SendGrid event lines that
  name one of their addresses are removed from ``sendgrid_events/*.ndjson`` (the file is replaced
  atomically and its new hash recorded as loaded, so it is not loaded again), and the one-row consent
  files the unsubscribe pages wrote for them (``consents/*.csv`` with source ``mail_link``) are deleted.
  The shop's own export files are the shop's data and are not touched (docs/operations.md);
- the copies replays, backtests and kept diffs made (their warehouses, results and outboxes in the places the
  caller names: ``$NACHFASS_DATA/replay``, ``$NACHFASS_DATA/backtest`` and wherever else they wrote, as
  ``$NACHFASS_DATA/copies.json`` records, ``nachfass/privacy/copies.py``) lose every row and outbox file
  about the person too, their simulated ledgers included, and are rewritten like the warehouse;
- when a SendGrid key is set, SendGrid's erasure is requested (``POST /v3/recipients/erasejob``, at most
  5,000 addresses per request).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from nachfass.core import file_lock
from nachfass.core.landing_files import (
    CONSENT_COLUMNS,
    CONSENTS_TABLE,
    SENDGRID_EVENTS_TABLE,
    write_durably,
)
from nachfass.core.schema import ensure_erasure_schema
from nachfass.privacy.copies import CopyPlaces

SENDGRID_ERASE_BATCH = 5000  # SendGrid's limit per erasejob request
PERSON_COLUMNS = ("email", "to_email", "customer_id", "order_id")
# replay.* and backtest.* live in the copies replays and backtests make (nachfass/core/replay.py, backtest.py)
DERIVED_SCHEMAS = (
    "raw", "staging", "intermediate", "segments", "eligibility", "analytics", "mail", "replay", "backtest",
)  # fmt: skip


class ErasureError(RuntimeError):
    """The erasure cannot be done as asked; nothing was erased."""


@dataclass
class ErasureReport:
    emails: int = 0
    customer_ids: int = 0
    rows_deleted: dict[str, int] = field(default_factory=dict)
    ledger_rows_pseudonymised: int = 0
    outbox_files_deleted: int = 0
    event_files_rewritten: int = 0
    event_lines_removed: int = 0
    consent_files_deleted: int = 0
    sendgrid_requests: int = 0
    # PostgreSQL engine: rows deleted from the local DuckDB staging file's copies of the exports
    staging_rows_deleted: dict[str, int] = field(default_factory=dict)
    # replays' and backtests' copies: rows deleted per DuckDB file, and their outbox files deleted
    copy_rows_deleted: dict[str, int] = field(default_factory=dict)
    copy_outbox_files_deleted: int = 0
    copy_spill_files_deleted: int = 0
    addresses: set[str] = field(default_factory=set, repr=False)  # the person's addresses, lower case


def salted_hash(salt: str, email: str) -> str:
    """The hash dbt's int_suppressions recomputes: sha256(salt || lower(email)), hex."""
    return hashlib.sha256((salt + email.strip().lower()).encode("utf-8")).hexdigest()


def _exists(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        conn.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchone()[0]
    )


def _identify(
    conn: duckdb.DuckDBPyConnection, email: str | None, customer_id: str | None
) -> tuple[set, set, set]:
    emails = {email.strip().lower()} if email else set()
    ids = {customer_id} if customer_id else set()
    # A warehouse that has not loaded every table yet: look only where there is something to look at.
    people_tables = [t for t in ("raw.customers", "raw.consents") if _exists(conn, *t.split("."))]
    # Follow the links both ways (an address may belong to several accounts, an account to several addresses).
    for _ in range(2):
        if ids:
            marks = ",".join("?" * len(ids))
            for table in people_tables:
                emails |= {
                    r[0].lower()
                    for r in conn.execute(
                        f"select distinct email from {table} "
                        f"where customer_id in ({marks}) and email is not null",
                        list(ids),
                    ).fetchall()
                }
        if emails:
            marks = ",".join("?" * len(emails))
            for table in people_tables:
                ids |= {
                    r[0]
                    for r in conn.execute(
                        f"select distinct customer_id from {table} where lower(email) in ({marks}) "
                        "and customer_id is not null",
                        list(emails),
                    ).fetchall()
                }
    orders: set = set()
    if ids and _exists(conn, "raw", "orders"):
        marks = ",".join("?" * len(ids))
        orders = {
            r[0]
            for r in conn.execute(
                f"select distinct order_id from raw.orders where customer_id in ({marks})", list(ids)
            ).fetchall()
        }
    return emails, ids, orders


def _on_postgres(conn) -> bool:
    return getattr(conn, "engine", None) == "postgres"


def _changed(conn, cursor) -> int:
    """Rows an insert/update/delete changed: DuckDB answers with a count row, PostgreSQL with rowcount."""
    if _on_postgres(conn):
        return max(int(cursor.rowcount), 0)
    row = cursor.fetchone()
    return int(row[0]) if row and row[0] else 0


def _sha256_hex(conn, expr: str) -> str:
    """SQL for the lower-case hex sha256 of a text expression, the same value on both engines."""
    if _on_postgres(conn):
        return f"encode(sha256(convert_to({expr}, 'UTF8')), 'hex')"
    return f"sha256({expr})"


def _tables_with_person_columns(conn) -> dict[str, list[str]]:
    rows = conn.execute(
        f"""
        select c.table_schema || '.' || c.table_name, c.column_name
        from information_schema.columns c
        join information_schema.tables t on c.table_schema = t.table_schema and c.table_name = t.table_name
        where t.table_type = 'BASE TABLE'
          and c.table_schema in ({",".join("?" * len(DERIVED_SCHEMAS))})
          and c.column_name in ({",".join("?" * len(PERSON_COLUMNS))})
        order by 1, 2
        """,
        [*DERIVED_SCHEMAS, *PERSON_COLUMNS],
    ).fetchall()
    tables: dict[str, list[str]] = {}
    for name, column in rows:
        # The ledger is pseudonymised, not deleted; erasure bookkeeping is not about a person.
        if name not in ("mail.sends", "mail.erasures"):
            tables.setdefault(name, []).append(column)
    return tables


def _delete_rows(conn, emails: set, ids: set, orders: set, report: ErasureReport) -> None:
    """Delete every row about the person from the tables that name them, and from the quarantines (which
    keep raw values); inside the caller's transaction. Counts land in ``report.rows_deleted``."""

    def count(table: str, n: int) -> None:
        if n:
            report.rows_deleted[table] = report.rows_deleted.get(table, 0) + n

    values = {"email": emails, "to_email": emails, "customer_id": ids, "order_id": orders}
    for table, columns in _tables_with_person_columns(conn).items():
        conditions, params = [], []
        for column in columns:
            wanted = values[column]
            if wanted:
                expr = f"lower({column})" if column in ("email", "to_email") else column
                conditions.append(f"{expr} in ({','.join('?' * len(wanted))})")
                params += sorted(wanted)
        if conditions:
            deleted = conn.execute(f"delete from {table} where {' or '.join(conditions)}", params)
            count(table, _changed(conn, deleted))
    # Quarantined rows keep raw values as JSON: look inside.
    if _exists(conn, "raw", "quarantine"):
        deleted = conn.execute(
            "delete from raw.quarantine where lower(raw_values->>'email') in (select unnest(?)) "
            "or raw_values->>'customer_id' in (select unnest(?)) "
            "or raw_values->>'order_id' in (select unnest(?))",
            [sorted(emails) or [""], sorted(ids) or [""], sorted(orders) or [""]],
        )
        count("raw.quarantine", _changed(conn, deleted))
    if emails and _exists(conn, "raw", "event_quarantine"):
        # A quarantined event line may name the address without a usable `email` field.
        deleted = conn.execute(
            "delete from raw.event_quarantine where exists "
            "(select 1 from unnest(?::varchar[]) as e(address) where strpos(lower(raw_line), address) > 0)",
            [sorted(emails)],
        )
        count("raw.event_quarantine", _changed(conn, deleted))


def erase_person(
    conn: duckdb.DuckDBPyConnection,
    *,
    email: str | None = None,
    customer_id: str | None = None,
    outbox_dir: Path | None = None,
    landing_dir: Path | None = None,
    sendgrid_client=None,
    now: datetime | None = None,
    staging: duckdb.DuckDBPyConnection | None = None,
    copies: tuple[Path, ...] | CopyPlaces = (),
) -> ErasureReport:
    """Erase one person; ``now`` is the erasure's logical time (``nachfass erase --as-of``), stamped on the
    ``mail.erasures`` row and the pseudonymised ledger rows. Default: the current UTC time.

    ``conn`` is the warehouse on either engine. ``staging`` (PostgreSQL engine) is the local DuckDB file the
    exports are parsed in: it holds copies of the raw exports, so the person's rows go from there too.
    ``copies`` are the places replays and backtests wrote (``CopyPlaces``, or folders of them): every DuckDB
    file and outbox there is erased too (their locks are taken and the files opened before anything is
    erased, so a running replay or backtest stops the erasure with :class:`ErasureError` and nothing
    erased), and what a replay that died spilled."""
    if not email and not customer_id:
        raise ValueError("give an email address or a customer id to erase")
    places = copies if isinstance(copies, CopyPlaces) else CopyPlaces(folders=tuple(copies))
    with contextlib.ExitStack() as locks:
        _hold_copy_locks(locks, places)
        with contextlib.ExitStack() as stack:
            copy_conns = [(path, stack.enter_context(conn_)) for path, conn_ in _open_copies(places)]
            report = _erase_person(
                conn,
                email=email,
                customer_id=customer_id,
                outbox_dir=outbox_dir,
                landing_dir=landing_dir,
                sendgrid_client=sendgrid_client,
                now=now,
                staging=staging,
                copies=copy_conns,
            )
        for path, _ in copy_conns:
            compact_warehouse(path)
        for outbox in places.outbox_dirs():
            report.copy_outbox_files_deleted += _erase_outbox(outbox, report.addresses)
        # what DuckDB spilled to disk in a replay that died (a finished one removes it): rows of anyone
        for spill in places.spill_dirs():
            report.copy_spill_files_deleted += sum(1 for f in spill.rglob("*") if f.is_file())
            shutil.rmtree(spill)
    return report


def _hold_copy_locks(stack: contextlib.ExitStack, places: CopyPlaces) -> None:
    """Hold the lock of every replay and backtest of ``places`` (nachfass/core/file_lock.py) until the
    erasure ends: a running one works on a copy in memory and would write the person back at its end."""
    for path in places.lock_files():
        try:
            stack.enter_context(file_lock.hold(path))
        except file_lock.LockHeld:
            raise ErasureError(
                f"a replay or backtest is running ({path.parent}): it would write its copy of the person "
                "back when it ends. Wait for it to finish (or stop it) and erase again; nothing was erased"
            ) from None


def _open_copies(places: CopyPlaces) -> list[tuple[Path, duckdb.DuckDBPyConnection]]:
    opened: list[tuple[Path, duckdb.DuckDBPyConnection]] = []
    try:
        for path in places.duckdb_files():
            try:
                opened.append((path, duckdb.connect(str(path))))
            except duckdb.Error as exc:
                raise ErasureError(
                    f"cannot open the replay/backtest copy {path} ({str(exc).splitlines()[0]}): stop the "
                    "replay or backtest that uses it (or delete the copy) and erase again; nothing was erased"
                ) from exc
    except BaseException:
        for _, conn in opened:
            conn.close()
        raise
    return opened


def _erase_person(
    conn,
    *,
    email: str | None,
    customer_id: str | None,
    outbox_dir: Path | None,
    landing_dir: Path | None,
    sendgrid_client,
    now: datetime | None,
    staging: duckdb.DuckDBPyConnection | None,
    copies: list[tuple[Path, duckdb.DuckDBPyConnection]],
) -> ErasureReport:
    ensure_erasure_schema(conn)
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    emails, ids, orders = _identify(conn, email, customer_id)
    report = ErasureReport(emails=len(emails), customer_ids=len(ids), addresses=emails)
    salt = conn.execute("select salt from mail.erasure_salt").fetchone()[0]
    conn.execute("begin")
    try:
        _delete_rows(conn, emails, ids, orders, report)
        for address in emails:
            conn.execute(
                # Erased again (e.g. after a new opt-in): the suppression restarts at this erasure.
                "insert into mail.erasures values (?, ?, false) on conflict (email_hash) do update "
                "set erased_at = excluded.erased_at, sendgrid_erasure_requested = false",
                [salted_hash(salt, address), now],
            )
        if (emails or ids) and _exists(conn, "mail", "sends"):
            pseudonymised = conn.execute(
                f"""
                update mail.sends
                set email_hash = {_sha256_hex(conn, "? || lower(coalesce(email, ''))")},
                    email = null,
                    customer_id = null,
                    trigger_key = 'erased:' || left({_sha256_hex(conn, "? || trigger_key")}, 24),
                    updated_at = ?
                where lower(email) in (select unnest(?)) or customer_id in (select unnest(?))
                """,
                [salt, salt, now, sorted(emails) or [""], sorted(ids) or [""]],
            )
            report.ledger_rows_pseudonymised = _changed(conn, pseudonymised)
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
    if staging is not None:
        staged = ErasureReport()
        staging.execute("begin")
        try:
            _delete_rows(staging, emails, ids, orders, staged)
            staging.execute("commit")
        except Exception:
            staging.execute("rollback")
            raise
        report.staging_rows_deleted = staged.rows_deleted

    if outbox_dir and outbox_dir.is_dir():
        report.outbox_files_deleted = _erase_outbox(outbox_dir, emails)
    if landing_dir and emails:
        _erase_landing([conn] if staging is None else [conn, staging], Path(landing_dir), emails, report)
    if sendgrid_client is not None and emails:
        addresses = sorted(emails)
        for start in range(0, len(addresses), SENDGRID_ERASE_BATCH):
            sendgrid_client.client.recipients.erasejob.post(
                request_body={"email_addresses": addresses[start : start + SENDGRID_ERASE_BATCH]}
            )
            report.sendgrid_requests += 1
        conn.execute("update mail.erasures set sendgrid_erasure_requested = true where erased_at = ?", [now])
    # the copies last: the warehouse, the landing and SendGrid come first should one of them fail
    for path, copy in copies:
        report.copy_rows_deleted[str(path)] = _erase_copy(copy, emails, ids, orders)
    return report


def _erase_copy(conn: duckdb.DuckDBPyConnection, emails: set, ids: set, orders: set) -> int:
    """Delete the person from a replay's or backtest's copy, its simulated ledger included (it proves no
    real send, so nothing is kept pseudonymised there); the number of rows deleted."""
    erased = ErasureReport()
    conn.execute("begin")
    try:
        _delete_rows(conn, emails, ids, orders, erased)
        if (emails or ids) and _exists(conn, "mail", "sends"):
            deleted = conn.execute(
                "delete from mail.sends where lower(email) in (select unnest(?)) "
                "or customer_id in (select unnest(?))",
                [sorted(emails) or [""], sorted(ids) or [""]],
            )
            erased.rows_deleted["mail.sends"] = _changed(conn, deleted)
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
    return sum(erased.rows_deleted.values())


def compact_warehouse(db_path: Path) -> None:
    """Rewrite the DuckDB file so deleted rows are gone from its bytes, not only from its tables.

    DuckDB marks deleted rows and reuses their blocks later; neither ``CHECKPOINT`` nor ``VACUUM`` removes
    them from the file, so an erased address stays readable with ``strings warehouse.duckdb``. ``COPY FROM
    DATABASE`` writes live data only (schemas, tables with constraints, views, sequences, macros) into a new
    file, which then replaces the old one. Call it after the erasure's connection is closed; no other process
    may have the warehouse open (the same "one writer" rule as for every job).
    """
    db_path = Path(db_path)
    fresh = db_path.with_name(f".{db_path.name}.compact")
    for leftover in (fresh, fresh.with_name(fresh.name + ".wal")):
        leftover.unlink(missing_ok=True)
    conn = duckdb.connect()
    try:
        conn.execute("attach ? as erased_src (read_only)", [str(db_path)])
        conn.execute("attach ? as erased_dst", [str(fresh)])
        conn.execute("copy from database erased_src to erased_dst")
        conn.execute("detach erased_dst")
        conn.execute("detach erased_src")
    except BaseException:
        conn.close()
        fresh.unlink(missing_ok=True)
        raise
    conn.close()
    fresh.replace(db_path)
    db_path.with_name(db_path.name + ".wal").unlink(missing_ok=True)


def compact_postgres(conn) -> list[str]:
    """PostgreSQL keeps a deleted or updated row's old version in the table's files until the space is
    reused: the erasure's own deletes, and earlier ones too (the render queue is emptied after every run).
    ``VACUUM FULL`` rewrites every table that can name a person (and the ledger, whose rows were rewritten)
    into new files and drops the old ones; ``ANALYZE`` replaces the column statistics, whose samples may
    hold the address. Like DuckDB's ``compact_warehouse`` this rewrites the data, so it takes as long as
    copying the tables. Runs outside a transaction (the connection is in autocommit mode). WAL segments and
    backups still hold the data until they expire: their retention is the operator's (docs/operations.md).
    """
    tables = sorted(
        {*_tables_with_person_columns(conn), "mail.sends"}
        | {t for t in ("raw.quarantine", "raw.event_quarantine") if _exists(conn, *t.split("."))}
    )
    for table in tables:
        conn.execute(f"vacuum (full, analyze) {table}")
    # ANALYZE replaced the statistics rows, and dbt's rebuilds dropped others: their old versions, samples
    # of the address among them, stay in the catalog's own files until it is rewritten too. PostgreSQL lets
    # a superuser or the database's owner do that; anyone else gets a warning and the catalog is skipped.
    if may_rewrite_catalogs(conn):
        conn.execute("vacuum full pg_catalog.pg_statistic")
        tables.append("pg_catalog.pg_statistic")
    return tables


def may_rewrite_catalogs(conn) -> bool:
    """Whether the connection's role is a superuser or has the privileges of the database's owner."""
    return bool(
        conn.execute(
            "select r.rolsuper or pg_has_role(current_user, d.datdba, 'USAGE') "
            "from pg_database d, pg_roles r where d.datname = current_database() and r.rolname = current_user"
        ).fetchone()[0]
    )


def _erase_outbox(outbox_dir: Path, emails: set[str]) -> int:
    deleted = 0
    for payload_path in outbox_dir.glob("*.json"):
        try:
            payload = json.loads(payload_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        recipients = {
            to.get("email", "").lower()
            for personalization in payload.get("personalizations", [])
            for to in personalization.get("to", [])
        }
        if recipients & emails:
            for sibling in outbox_dir.glob(payload_path.stem + ".*"):
                sibling.unlink()
                deleted += 1
    return deleted


def _names_person(line: bytes, emails: set[str]) -> bool:
    """An event line is about the person if its ``email`` is one of their addresses; a line that does not
    parse is judged by its text, so nothing unreadable that mentions them survives either."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):
        doc = None
    email = doc.get("email") if isinstance(doc, dict) else None
    if isinstance(email, str) and email.strip().lower() in emails:
        return True
    text = line.decode("utf-8", errors="replace").lower()
    return any(address in text for address in emails)


def _erase_landing(conns: list, landing: Path, emails: set[str], report: ErasureReport) -> None:
    events = landing / SENDGRID_EVENTS_TABLE
    for path in sorted(events.glob("*.ndjson")) if events.is_dir() else []:
        data = path.read_bytes()
        lines = data.split(b"\n")
        kept = [line for line in lines if not (line.strip() and _names_person(line, emails))]
        removed = len(lines) - len(kept)
        if not removed:
            continue
        old_hash = hashlib.sha256(data).hexdigest()
        if any(line.strip() for line in kept):
            new_data = b"\n".join(kept)
            write_durably(events, path.name, new_data)
            # The events that stay were loaded already: record the new content as loaded, so the
            # rewritten file is not read again (the erased person's events are gone from the table too).
            for conn in conns:
                if _exists(conn, "raw", "loaded_files"):
                    conn.execute(
                        "update raw.loaded_files set content_hash = ? where path = ? and content_hash = ?",
                        [hashlib.sha256(new_data).hexdigest(), str(path), old_hash],
                    )
        else:
            path.unlink()
        report.event_files_rewritten += 1
        report.event_lines_removed += removed
    consents = landing / CONSENTS_TABLE
    for path in sorted(consents.glob("*.csv")) if consents.is_dir() else []:
        # Only the web service's own one-event files; a shop export is the shop's to correct.
        try:
            rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        if (
            len(rows) == 1
            and tuple(rows[0]) == CONSENT_COLUMNS
            and rows[0]["source"] == "mail_link"
            and (rows[0]["email"] or "").strip().lower() in emails
        ):
            path.unlink()
            report.consent_files_deleted += 1
