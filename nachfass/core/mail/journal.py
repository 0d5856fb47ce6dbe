"""The send journal: a per-run, append-only record of which claimed mails were handed to the transport.

The ledger row (``sending``) is committed before a mail may leave the process; that makes sending at most
once, but a crash used to turn *every* claimed row into ``unknown``, including mails that were still
waiting in the process and provably never sent. The journal closes that gap:

* a worker writes ``{"d": send_id}`` immediately before it calls the transport for that mail, and
  ``{"o": send_id, "s": status, ...}`` as soon as the transport answered;
* after a crash, :func:`settle_crashed` reads the journal of each run that left ``sending`` rows: a row
  whose mail was never dispatched is released (deleted: the next run claims it again), a row with a
  recorded outcome gets that outcome, and only mails dispatched without an outcome become ``unknown``.

A line is written with one ``write()`` to a file opened with ``O_APPEND``: once the call returns, the line
is in the kernel's page cache and survives the death of the process (SIGKILL, OOM kill). It does not
necessarily survive a crash of the machine, so the journal records the kernel's boot id and is trusted only
within the boot that wrote it; after a reboot every leftover row becomes ``unknown`` as before.

Journals live next to the warehouse (``<warehouse>.send-journal/``); an in-memory warehouse has none.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
JOURNAL_SUFFIX = ".send-journal"


def boot_id() -> str | None:
    """The running kernel's boot id (Linux); None where the system does not tell."""
    try:
        return BOOT_ID_FILE.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def default_journal_dir(conn: duckdb.DuckDBPyConnection) -> Path | None:
    """``<warehouse file>.send-journal``, or None for an in-memory database; on PostgreSQL (no warehouse
    file) ``<data>/postgres.send-journal`` on the machine that sends."""
    if getattr(conn, "engine", None) == "postgres":
        from nachfass.core import paths

        return paths.data_dir().resolve() / ("postgres" + JOURNAL_SUFFIX)
    rows = conn.execute(
        "select path from duckdb_databases() where database_name = current_database()"
    ).fetchall()
    path = rows[0][0] if rows else None
    if not path or path == ":memory:":
        return None
    return Path(path).with_name(Path(path).name + JOURNAL_SUFFIX)


def journal_path(folder: Path, run_id: str) -> Path:
    # Run ids come from Dagster (uuids) or callers (anything): hash them into a safe file name.
    return folder / f"{hashlib.sha256(run_id.encode('utf-8')).hexdigest()[:32]}.jsonl"


class SendJournal:
    """Append-only journal of one send run; thread-safe (workers write, the main thread closes)."""

    def __init__(self, folder: Path, run_id: str) -> None:
        self.boot_id = boot_id()
        self.path = journal_path(folder, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._write({"run_id": run_id, "boot_id": self.boot_id, "pid": os.getpid()})

    def _write(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                raise RuntimeError("send journal is closed")
            written = os.write(self._fd, line)
        if written != len(line):  # a regular file takes small writes whole; anything else is a broken disk
            raise OSError(f"short write to the send journal {self.path}")

    def dispatched(self, send_id: str) -> None:
        """Call immediately before the transport is called for this mail."""
        self._write({"d": send_id})

    def outcome(
        self, send_id: str, status: str, message_id: str | None, error: str | None, attempts: int
    ) -> None:
        """Call as soon as the transport answered (``release`` for a request that certainly failed)."""
        self._write({"o": send_id, "s": status, "m": message_id, "e": error, "a": attempts})

    def close(self, *, remove: bool) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        if remove:
            self.path.unlink(missing_ok=True)


@dataclass
class JournalRecord:
    run_id: str | None = None
    boot_id: str | None = None
    dispatched: set[str] = field(default_factory=set)
    outcomes: dict[str, dict] = field(default_factory=dict)
    damaged: bool = False  # a line that does not parse: absence of a dispatch line proves nothing then

    @property
    def trusted(self) -> bool:
        current = boot_id()
        return current is not None and self.boot_id == current


def read_journal(path: Path) -> JournalRecord:
    record = JournalRecord()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle):
            try:
                entry = json.loads(raw)
            except ValueError:
                record.damaged = True
                continue
            if number == 0 and "run_id" in entry:
                record.run_id, record.boot_id = entry.get("run_id"), entry.get("boot_id")
            elif "d" in entry:
                record.dispatched.add(entry["d"])
            elif "o" in entry:
                record.outcomes[entry["o"]] = entry
    return record
