"""Event ingest: ``<landing>/sendgrid_events/*.ndjson`` (from the webhook receiver) → ``raw.sendgrid_events``.

SendGrid delivers events at least once and out of order: rows are deduplicated on ``sg_event_id`` across
files and runs, each file is loaded once (path + content hash), and ``unknown`` ledger rows are reconciled
from the send ids the events carry (an event for a send id proves SendGrid accepted that mail).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from nachfass.core.file_digests import landing_file_digest
from nachfass.core.schema import ensure_events_schema

EVENTS_FOLDER = "sendgrid_events"

# Plausible event times: SendGrid's Event Webhook dates from 2012; nothing is stamped after 2100. Outside
# this range DuckDB's to_timestamp fails ("Epoch seconds out of range"), so the range is checked first.
MIN_EVENT_TS = 946_684_800  # 2000-01-01
MAX_EVENT_TS = 4_102_444_800  # 2100-01-01
# One event is a few hundred bytes; SendGrid's batches are at most 768 KB in all.
MAX_EVENT_BYTES = 64 * 1024
MAX_STRING_CHARS = 8192  # any one field (urls with tracking parameters, user agents, bounce reasons)
MAX_QUARANTINED_LINE_BYTES = 4096
# Fields copied into columns (the whole event stays in `raw`); each must be a string when present.
_STRING_FIELDS = {
    "email": "email",
    "sg_message_id": "sg_message_id",
    "send_id": "send_id",
    "campaign": "campaign",
    "step": "step",
    "variant": "variant",
    "url": "url",
    "reason": "reason",
    "status": "status",
    "type": "bounce_type",
    "useragent": "useragent",
}
_EVENT_COLUMNS = (
    "sg_event_id",
    "event",
    "email",
    "occurred_at",
    "sg_message_id",
    "message_id",
    "send_id",
    "campaign",
    "step",
    "variant",
    "url",
    "reason",
    "status",
    "bounce_type",
    "is_machine_open",
    "useragent",
    "raw",
)


class BadEvent(ValueError):
    """One event line that breaks the rules; ``reason`` says which rule, in words."""

    def __init__(self, reason: str, sg_event_id: str | None = None, email: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sg_event_id = sg_event_id
        self.email = email


@dataclass
class EventLoadReport:
    files_loaded: int = 0
    files_unreadable: int = 0
    events_read: int = 0
    events_new: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reconciled: int = 0

    @property
    def malformed(self) -> int:
        """Older name of ``quarantined``."""
        return self.quarantined


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_event(raw_line: bytes) -> dict[str, Any]:
    """Validate one NDJSON line of the webhook receiver; return the row for ``raw.sendgrid_events``.

    Raises :class:`BadEvent` with a reason for anything else: not UTF-8, not JSON, not an object, missing
    or mistyped ``sg_event_id``/``event``/``timestamp``, a timestamp outside 2000–2100, oversized values.
    """
    if len(raw_line) > MAX_EVENT_BYTES:
        raise BadEvent(f"event larger than {MAX_EVENT_BYTES} bytes ({len(raw_line)})")
    try:
        text = raw_line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadEvent(f"not UTF-8 (byte {exc.start})") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadEvent("JSON nested too deeply") from None
    except ValueError as exc:
        raise BadEvent(f"not JSON: {str(exc).splitlines()[0][:120]}") from None
    if not isinstance(doc, dict):
        raise BadEvent(f"not a JSON object but {type(doc).__name__}")
    sg_event_id = doc.get("sg_event_id")
    email = doc.get("email") if isinstance(doc.get("email"), str) else None
    email = email.strip().lower()[:MAX_STRING_CHARS] if email else None
    ident = sg_event_id if isinstance(sg_event_id, str) and len(sg_event_id) <= 256 else None

    def bad(reason: str) -> BadEvent:
        return BadEvent(reason, ident, email)

    if not isinstance(sg_event_id, str) or not sg_event_id.strip():
        raise bad(
            "missing sg_event_id"
            if sg_event_id is None
            else f"sg_event_id not a string: {_short(sg_event_id)}"
        )
    if len(sg_event_id) > 256:
        raise bad("sg_event_id longer than 256 characters")
    event = doc.get("event")
    if not isinstance(event, str) or not event.strip():
        raise bad("missing event" if event is None else f"event not a string: {_short(event)}")
    if len(event) > 64:
        raise bad("event name longer than 64 characters")
    ts = doc.get("timestamp")
    if ts is None:
        raise bad("missing timestamp")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise bad(f"timestamp not a number: {_short(ts)}")
    if not (isinstance(ts, int) or math.isfinite(ts)) or not MIN_EVENT_TS <= ts < MAX_EVENT_TS:
        raise bad(f"timestamp out of range (2000-2100): {_short(ts)}")
    row: dict[str, Any] = {
        "sg_event_id": sg_event_id,
        "event": event,
        "occurred_at": datetime.fromtimestamp(ts, UTC).replace(tzinfo=None),
    }
    for field, column in _STRING_FIELDS.items():
        value = doc.get(field)
        if value is not None and not isinstance(value, str):
            raise bad(f"{field} not a string: {_short(value)}")
        if value is not None and len(value) > MAX_STRING_CHARS:
            raise bad(f"{field} longer than {MAX_STRING_CHARS} characters")
        row[column] = value
    row["email"] = email
    row["message_id"] = row["sg_message_id"].split(".", 1)[0] if row["sg_message_id"] is not None else None
    machine_open = doc.get("sg_machine_open")
    row["is_machine_open"] = machine_open is True or machine_open in ("true", "1", 1)
    try:
        # Normalised for DuckDB's JSON type; lone surrogates (valid JSON escapes, invalid text) fail here.
        row["raw"] = json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        row["raw"].encode("utf-8")
        for column in ("sg_event_id", "event", *_STRING_FIELDS.values()):
            if row[column] is not None:
                row[column].encode("utf-8")
    except (ValueError, RecursionError):
        raise bad("contains invalid Unicode (lone surrogate) or a number out of range") from None
    if any(
        row[c] is not None and "\x00" in row[c] for c in ("sg_event_id", "event", *_STRING_FIELDS.values())
    ):
        raise bad("contains a NUL character")
    return row


def event_files(landing_dir: Path) -> list[Path]:
    folder = landing_dir / EVENTS_FOLDER
    if not folder.is_dir():
        return []
    # Files being written are dot-files or *.tmp until renamed: never picked up half-written.
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix == ".ndjson" and not p.name.startswith(".")
    )


def load_events(conn: duckdb.DuckDBPyConnection, landing_dir: Path) -> EventLoadReport:
    """Load every new event file; never raises for anything inside a file.

    Each line is validated on its own (:func:`parse_event`): good events are inserted (deduplicated on
    ``sg_event_id``), every other line goes to ``raw.event_quarantine`` with its line number and reason.
    A file that cannot be read at all is quarantined as a whole (line NULL) and retried next run.
    """
    ensure_events_schema(conn)
    report = EventLoadReport()
    now = datetime.now(UTC).replace(tzinfo=None)  # audit only: no decision depends on it
    for path in event_files(landing_dir):
        try:
            # hashed only when new or changed since its last hashing (nachfass/core/file_digests.py)
            if conn.execute(
                "select 1 from raw.loaded_files where path = ? and content_hash = ?",
                [str(path), landing_file_digest(conn, path)],
            ).fetchall():
                continue
            data = path.read_bytes()
        except OSError as exc:
            _quarantine_file(conn, path, f"file cannot be read: {type(exc).__name__}: {exc.strerror}", now)
            report.files_unreadable += 1
            continue
        digest = hashlib.sha256(data).hexdigest()  # of the bytes loaded, should the file have changed since
        good: list[dict[str, Any]] = []
        bad: list[tuple[int, str, str | None, str | None, str]] = []
        read = 0
        for number, raw_line in enumerate(data.split(b"\n"), start=1):
            if not raw_line.strip():
                continue  # the trailing newline, or blank lines: nothing to load and nothing lost
            read += 1
            try:
                good.append(parse_event(raw_line))
            except BadEvent as exc:
                bad.append((number, exc.reason, exc.sg_event_id, exc.email, _excerpt(raw_line)))
        conn.execute("begin")
        try:
            before = conn.execute("select count(*) from raw.sendgrid_events").fetchall()[0][0]
            if good:
                _insert_events(conn, good, str(path), now)
            after = conn.execute("select count(*) from raw.sendgrid_events").fetchall()[0][0]
            if bad:
                conn.executemany(
                    "insert into raw.event_quarantine values (?, ?, ?, ?, ?, ?, ?)",
                    [
                        [str(path), n, sg_id, email, reason, line, now]
                        for n, reason, sg_id, email, line in bad
                    ],
                )
            conn.execute(
                "insert into raw.loaded_files values (?, ?, ?, ?, ?, ?, ?, ?)",
                [EVENTS_FOLDER, str(path), digest, read, after - before, len(bad), [], now],
            )
            conn.execute("commit")
        except Exception:
            conn.execute("rollback")
            raise
        report.files_loaded += 1
        report.events_read += read
        report.events_new += int(after - before)
        report.quarantined += len(bad)
        report.duplicates += len(good) - int(after - before)
    report.reconciled = reconcile_unknown(conn)
    return report


def _excerpt(raw_line: bytes) -> str:
    """The line as kept in the quarantine: decodable text only, and never more than a few KB."""
    text = raw_line[:MAX_QUARANTINED_LINE_BYTES].decode("utf-8", errors="replace")
    return text.replace("\x00", "\ufffd")


def _quarantine_file(conn: duckdb.DuckDBPyConnection, path: Path, reason: str, now: datetime) -> None:
    # One row per unreadable file and reason, however often the load retries it.
    if not conn.execute(
        "select 1 from raw.event_quarantine where source_file = ? and line_number is null and reason = ?",
        [str(path), reason],
    ).fetchone():
        conn.execute(
            "insert into raw.event_quarantine values (?, null, null, null, ?, null, ?)",
            [str(path), reason, now],
        )


def _insert_events(
    conn: duckdb.DuckDBPyConnection, events: list[dict[str, Any]], source: str, now: datetime
) -> None:
    columns = {name: [e[name] for e in events] for name in _EVENT_COLUMNS}
    batch = pa.table(
        {
            **{
                name: pa.array(values, pa.bool_() if name == "is_machine_open" else pa.string())
                for name, values in columns.items()
                if name != "occurred_at"
            },
            "occurred_at": pa.array(columns["occurred_at"], pa.timestamp("us")),
        }
    )
    conn.register("_event_batch", batch)
    try:
        conn.execute(
            f"""
            insert into raw.sendgrid_events
            select {", ".join(_EVENT_COLUMNS[:-1])}, cast(raw as json), ?, ?
            from _event_batch
            qualify row_number() over (partition by sg_event_id) = 1
            on conflict do nothing
            """,
            [source, now],
        )
    finally:
        conn.unregister("_event_batch")


def reconcile_unknown(conn: duckdb.DuckDBPyConnection) -> int:
    """`unknown` ledger rows whose send id appears in events were accepted by SendGrid: mark them sent."""
    conn.execute("create schema if not exists mail")
    exists = conn.execute(
        "select count(*) from information_schema.tables where table_schema = 'mail' and table_name = 'sends'"
    ).fetchone()[0]
    if not exists:
        return 0
    rows = conn.execute(
        """
        update mail.sends
        set status = 'sent',
            sg_message_id = coalesce(mail.sends.sg_message_id, ev.message_id),
            reason = 'reconciled: SendGrid reported event ' || ev.event || ' for this send id',
            updated_at = now()
        from (
            select send_id, arg_min(message_id, occurred_at) as message_id,
                arg_min(event, occurred_at) as event
            from raw.sendgrid_events where send_id is not null group by send_id
        ) as ev
        where mail.sends.send_id = ev.send_id and mail.sends.status = 'unknown'
        returning mail.sends.send_id
        """
    ).fetchall()
    return len(rows)
