"""Where replays, backtests and kept diffs wrote their copies of the exports, so an erasure finds them all.

A replay, a backtest and ``nachfass diff --keep`` copy the exports (names, addresses, orders) into DuckDB
files and simulated outboxes. By default they write below ``$NACHFASS_DATA/replay``,
``$NACHFASS_DATA/backtest`` and ``$NACHFASS_DATA/diff``, where ``nachfass erase`` always looks; with
``--warehouse``, ``--outbox``, ``--workdir`` or ``--keep`` they write anywhere. Each command records
what it writes in ``$NACHFASS_DATA/copies.json`` before it writes, and the erasure reads the file:

- ``folders``: a backtest's work folder or a diff's kept folder, which the command writes only into; every
  DuckDB file, outbox and spill folder below it is a copy, like the default folders;
- ``warehouses``: a replay's warehouse file (with what beside it belongs to it: ``<name>.new``, the
  ``.<name>.lock`` and the ``.<name>.replay/tmp`` spill folder), and nothing else of its folder;
- ``outboxes``: a replay's outbox folder.

The file holds paths only. Entries whose path is gone are dropped when the erasure reads the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

REGISTRY_NAME = "copies.json"
KINDS = ("folders", "warehouses", "outboxes")


@dataclass(frozen=True)
class CopyPlaces:
    """The places an erasure treats as copies (see the module docstring). ``exclude``: files and folders that
    are never a copy even when a folder holds them (the live warehouse and outbox, the PostgreSQL engine's
    staging file)."""

    folders: tuple[Path, ...] = ()
    warehouses: tuple[Path, ...] = ()
    outboxes: tuple[Path, ...] = ()
    exclude: frozenset[Path] = frozenset()

    def _kept(self, paths: Iterable[Path]) -> list[Path]:
        excluded = {Path(p).resolve() for p in self.exclude}
        return sorted({Path(p).resolve() for p in paths} - excluded)

    def lock_files(self) -> list[Path]:
        """The locks a running replay or backtest holds (``nachfass/core/file_lock.py``)."""
        found = [lock for folder in self.folders for lock in Path(folder).rglob(".*.lock")]
        found += [db.parent / f".{db.name}.lock" for db in self.warehouses]
        return [p for p in self._kept(found) if p.is_file()]

    def duckdb_files(self) -> list[Path]:
        # *.duckdb.new: a replay's copy that was being written back when its process died
        found = [
            db
            for folder in self.folders
            for pattern in ("*.duckdb", "*.duckdb.new")
            for db in Path(folder).rglob(pattern)
        ]
        found += [p for db in self.warehouses for p in (db, db.with_name(db.name + ".new"))]
        return [p for p in self._kept(found) if p.is_file()]

    def outbox_dirs(self) -> list[Path]:
        found = [p for folder in self.folders for p in Path(folder).rglob("outbox")]
        return [p for p in self._kept([*found, *self.outboxes]) if p.is_dir()]

    def spill_dirs(self) -> list[Path]:
        """What DuckDB spilled to disk in a replay that died (a finished one removes it)."""
        found = [p for folder in self.folders for p in Path(folder).rglob(".*.replay/tmp")]
        found += [db.parent / f".{db.name}.replay" / "tmp" for db in self.warehouses]
        return [p for p in self._kept(found) if p.is_dir()]


def registry_path(data_dir: Path) -> Path:
    return Path(data_dir) / REGISTRY_NAME


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[Path]:
    """The registry, locked against another command writing it at the same time (waits for it)."""
    path = registry_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, list[str]]:
    if not path.is_file():
        return {kind: [] for kind in KINDS}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}): it lists where replays and backtests wrote copies of the "
            "exports; repair it or add the folders again, then erase"
        ) from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object with the keys {', '.join(KINDS)}")
    return {kind: [str(p) for p in data.get(kind) or []] for kind in KINDS}


def _write(path: Path, data: dict[str, list[str]]) -> None:
    fresh = path.with_name(f".{path.name}.new")
    fresh.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(fresh, path)


def register(
    data_dir: Path,
    *,
    folders: Iterable[Path] = (),
    warehouses: Iterable[Path] = (),
    outboxes: Iterable[Path] = (),
) -> None:
    """Record that a command is about to write copies of the exports at these places (absolute paths)."""
    new = {"folders": folders, "warehouses": warehouses, "outboxes": outboxes}
    with _locked(data_dir) as path:
        data = _read(path)
        for kind, places in new.items():
            data[kind] = sorted({*data[kind], *(str(Path(p).resolve()) for p in places)})
        _write(path, data)


def _exists(kind: str, path: Path) -> bool:
    # a replay killed while it ran may have left only its spill folder beside the warehouse's name
    return path.exists() or (kind == "warehouses" and (path.parent / f".{path.name}.replay").exists())


def registered(data_dir: Path, *, prune: bool = False) -> CopyPlaces:
    """The places recorded in ``data_dir``'s registry that still exist; ``prune`` drops the others from it."""
    with _locked(data_dir) as path:
        data = _read(path)
        alive = {kind: [p for p in data[kind] if _exists(kind, Path(p))] for kind in KINDS}
        if prune and path.is_file() and alive != data:
            _write(path, alive)
    return CopyPlaces(**{kind: tuple(Path(p) for p in alive[kind]) for kind in KINDS})
