"""Durable appends to the landing folder: the only thing the web service writes.

A file appears in the landing folder only complete: it is written under a hidden temporary name
(``.<name>.tmp``) in the same folder, fsynced, renamed into place (atomic on POSIX within one file
system) and the folder is fsynced so the rename itself survives a crash. The ingest sensor ignores
names starting with ``.`` or ending in ``.tmp``, so it never sees a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SENDGRID_EVENTS_TABLE = "sendgrid_events"
CONSENTS_TABLE = "consents"

# Column order of the export contract's consents table (docs: /work/shared/spec/exports.md).
CONSENT_COLUMNS = ("consent_event_id", "customer_id", "email", "purpose", "event", "source", "occurred_at")


def utc_stamp(moment: datetime) -> str:
    """Sortable, filename-safe UTC timestamp, e.g. ``20261120T140311.123456Z``."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (the export contract takes offsets as given)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/name`` so that it is either absent or complete, and durable on return."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    tmp = folder / f".{name}.tmp"
    # O_EXCL: two writers can never share a temp file (names carry a uuid, so this is a safety net).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return final


def write_sendgrid_batch(landing_dir: Path, events: Iterable[Mapping[str, Any]], now: datetime) -> Path:
    """Store one webhook batch as ``<landing>/sendgrid_events/<stamp>-<uuid>.ndjson``, one event a line."""
    lines = [json.dumps(event, ensure_ascii=False, separators=(",", ":")) for event in events]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    name = f"{utc_stamp(now)}-{uuid.uuid4().hex}.ndjson"
    return write_durably(Path(landing_dir) / SENDGRID_EVENTS_TABLE, name, data)


def write_consent_event(
    landing_dir: Path,
    *,
    email: str,
    customer_id: str | None,
    event: str,
    occurred_at: datetime,
    source: str = "mail_link",
    purpose: str = "marketing_email",
) -> tuple[Path, str]:
    """Append one consent event as its own CSV file in the export contract's format.

    Returns the file path and the ``consent_event_id``.
    """
    event_id = str(uuid.uuid4())
    row = {
        "consent_event_id": event_id,
        "customer_id": customer_id or "",  # empty field = NULL in the contract
        "email": email,
        "purpose": purpose,
        "event": event,
        "source": source,
        "occurred_at": iso_utc(occurred_at),
    }
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CONSENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerow(row)
    name = f"{utc_stamp(occurred_at)}-{event_id}.csv"
    path = write_durably(Path(landing_dir) / CONSENTS_TABLE, name, buffer.getvalue().encode("utf-8"))
    return path, event_id
