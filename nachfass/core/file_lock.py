"""An advisory lock beside a file that a long process holds in memory and writes back only at its end.

A replay runs its ticks on a copy of the warehouse in memory and replaces the file when it is done; a
backtest writes its results at the end. While they run, nothing holds the DuckDB file itself, so DuckDB's
one-writer rule cannot tell another process (an erasure, a second replay into the same folder) that the
file is about to be replaced. The process holds ``.<name>.lock`` beside the file instead (``flock``: the
kernel releases it when the process dies, so a crash leaves no stale lock).
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


class LockHeld(RuntimeError):
    """Another process holds the lock; the message names the file."""


def lock_path(target: Path) -> Path:
    target = Path(target)
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def hold(path: Path) -> Iterator[None]:
    """Hold the lock file ``path`` (see ``lock_path``) exclusively, without waiting: LockHeld when another
    process has it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"{path} is held by a running process") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
