"""The registry of places where replays, backtests and kept diffs wrote copies of the exports
(nachfass/privacy/copies.py): what an erasure treats as a copy, and what it never touches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nachfass.privacy.copies import CopyPlaces, register, registered, registry_path


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_registered_places_are_found_and_vanished_ones_pruned(tmp_path: Path) -> None:
    data = tmp_path / "data"
    work = tmp_path / "pr-7"
    replayed = _touch(tmp_path / "mine" / "replay.duckdb")
    gone = tmp_path / "deleted" / "old.duckdb"
    outbox = tmp_path / "mails"
    outbox.mkdir()
    register(data, folders=[work], warehouses=[replayed, gone], outboxes=[outbox])
    register(data, warehouses=[replayed])  # twice: recorded once
    assert json.loads(registry_path(data).read_text())["warehouses"] == sorted([str(replayed), str(gone)])

    _touch(work / "before" / "warehouse.duckdb")
    places = registered(data, prune=True)
    assert places.folders == (work,)
    assert places.warehouses == (replayed,)  # the deleted one is dropped …
    assert json.loads(registry_path(data).read_text())["warehouses"] == [str(replayed)]  # … from the file too
    assert places.outboxes == (outbox,)


def test_a_replay_file_is_a_copy_but_its_neighbours_are_not(tmp_path: Path) -> None:
    replayed = _touch(tmp_path / "home" / "replay.duckdb")
    interrupted = _touch(tmp_path / "home" / "replay.duckdb.new")
    _touch(tmp_path / "home" / "accounting.duckdb")
    lock = _touch(tmp_path / "home" / ".replay.duckdb.lock")
    _touch(tmp_path / "home" / ".accounting.duckdb.lock")
    spill = tmp_path / "home" / ".replay.duckdb.replay" / "tmp"
    _touch(spill / "duckdb_temp_storage-0.tmp")
    places = CopyPlaces(warehouses=(replayed,))
    assert places.duckdb_files() == [replayed, interrupted]
    assert places.lock_files() == [lock]
    assert places.spill_dirs() == [spill]
    assert places.outbox_dirs() == []


def test_a_folder_holds_copies_below_it_except_the_live_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    copies = [_touch(work / side / "warehouse.duckdb") for side in ("after", "before")]
    live = _touch(work / "live" / "warehouse.duckdb")
    live_outbox = work / "live" / "outbox"
    live_outbox.mkdir()
    (work / "before" / "outbox").mkdir()
    places = CopyPlaces(folders=(work,), exclude=frozenset({live, live_outbox}))
    assert places.duckdb_files() == copies
    assert places.outbox_dirs() == [work / "before" / "outbox"]


def test_a_broken_registry_stops_with_a_clear_error(tmp_path: Path) -> None:
    registry_path(tmp_path).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="copies.json is not valid JSON"):
        registered(tmp_path)
    with pytest.raises(ValueError, match="copies.json is not valid JSON"):
        register(tmp_path, folders=[tmp_path / "x"])
    assert registry_path(tmp_path).read_text(encoding="utf-8") == "{not json"  # nothing was overwritten


def test_the_erase_command_looks_in_the_default_folders_and_the_recorded_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nachfass.cli.main import _copy_places

    data = tmp_path / "data"
    live = _touch(data / "warehouse.duckdb")
    monkeypatch.setenv("NACHFASS_DATA", str(data))
    monkeypatch.setenv("NACHFASS_WAREHOUSE", str(live))
    monkeypatch.setenv("NACHFASS_OUTBOX", str(data / "outbox"))
    (data / "outbox").mkdir()
    defaults = [
        _touch(data / "replay" / "warehouse.duckdb"),
        _touch(data / "backtest" / "after" / "warehouse.duckdb"),
        _touch(data / "diff" / "nachfass-diff-k1ll3d" / "after.duckdb"),  # a diff that was killed
    ]
    elsewhere = _touch(tmp_path / "marketing" / "pr-9" / "results.duckdb")
    register(data, folders=[elsewhere.parent], warehouses=[live])  # the live warehouse is never a copy
    assert sorted(_copy_places().duckdb_files()) == sorted([*defaults, elsewhere])
