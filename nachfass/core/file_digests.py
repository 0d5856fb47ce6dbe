"""The content hash of a landing file, which identifies it in ``raw.loaded_files`` (exports and SendGrid
event files alike), and the loader's memory of it (``raw.landing_file_digests``): a scheduled run hashes
only the files that are new or changed, not the whole history every 15 minutes."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import duckdb


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# A file modified less than this before it was hashed may still change within the file system's timestamp
# granularity (a few ms) without its size or modification time changing: its hash is not remembered
# ("racy git" has the same rule).
DIGEST_SETTLE_NS = 2_000_000_000


def landing_file_digest(conn: duckdb.DuckDBPyConnection, path: Path) -> str:
    """The file's content hash (``file_hash``), read from ``raw.landing_file_digests`` while the file's size
    and modification time (ns) are those it had when it was hashed; otherwise hashed, and remembered once
    the file had been unmodified for 2 s when hashing began. A file rewritten in place (an erasure, a
    re-export) gets a new modification time and is hashed again. Modification times are the file system's
    wall clock, so this compares them with the wall clock, never with the run's as_of."""
    stat = path.stat()
    known = known_digest(conn, path, stat)
    if known:
        return known
    hashed_at_ns = time.time_ns()
    digest = file_hash(path)
    remember_digest(conn, path, stat, digest, hashed_at_ns)
    return digest


def known_digest(conn: duckdb.DuckDBPyConnection, path: Path, stat: os.stat_result) -> str | None:
    """The remembered hash of the file as it is now (same size and modification time), if any."""
    known = conn.execute(
        "select content_hash from raw.landing_file_digests "
        "where path = ? and file_size = ? and file_mtime_ns = ?",
        [str(path), stat.st_size, stat.st_mtime_ns],
    ).fetchone()
    return known[0] if known else None


def remember_digest(
    conn: duckdb.DuckDBPyConnection, path: Path, stat: os.stat_result, digest: str, hashed_at_ns: int
) -> None:
    """Remember ``digest`` of the file as ``stat`` saw it, if it had settled when hashing began."""
    if stat.st_mtime_ns < hashed_at_ns - DIGEST_SETTLE_NS:
        conn.execute(
            "insert or replace into raw.landing_file_digests values (?, ?, ?, ?)",
            [str(path), stat.st_size, stat.st_mtime_ns, digest],
        )
