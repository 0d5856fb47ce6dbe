"""A throwaway local PostgreSQL server for tests, benchmarks and the demo on the PostgreSQL engine.

It runs Debian's PostgreSQL binaries (``postgresql`` package) on a fresh cluster in a temporary folder,
listening on 127.0.0.1 at a free port with trust authentication, and removes everything when stopped. A
production warehouse is never started this way: point ``PGHOST``/``PGPORT``/... at it instead.

``initdb`` refuses to run as root; as root the server runs as the ``postgres`` system user the Debian
package creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl`` (newest Debian version first), or None."""
    env = os.environ.get("NACHFASS_PG_BINDIR")
    if env:
        return Path(env) if (Path(env) / "initdb").exists() else None
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: _version(p), reverse=True)
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb and shutil.which("pg_ctl") else None


def _version(bindir: Path) -> int:
    try:
        return int(bindir.parent.name)
    except ValueError:
        return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalPostgres:
    bindir: Path
    root: Path
    port: int
    user: str = "postgres"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def env(self, dbname: str) -> dict[str, str]:
        """The libpq variables the project reads (NACHFASS_ENGINE=postgres selects the engine)."""
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": dbname,
            "PGPASSWORD": "",
        }

    def create_database(self, name: str) -> str:
        """A new empty database with byte-order ("C") collation, as the project expects; returns its name."""
        self._psql(
            f"create database \"{name}\" template template0 encoding 'UTF8' lc_collate 'C' lc_ctype 'C'"
        )
        return name

    def drop_database(self, name: str) -> None:
        self._psql(f'drop database if exists "{name}" with (force)')

    def _psql(self, sql: str) -> None:
        subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        )

    def stop(self) -> None:
        _as_server_user(
            [str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"],
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def _server_user() -> str | None:
    """The user to run the server as: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresUnavailable("running as root, and no 'postgres' system user to run the server") from exc
    return "postgres"


def _as_server_user(cmd: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    user = _server_user()
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def start(*, max_connections: int = 100) -> LocalPostgres:
    """Start a fresh cluster; the caller stops it (``LocalPostgres.stop``)."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="nachfass-pg-"))
    user = _server_user()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data = root / "data"
    try:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
        _as_server_user([*initdb, "--no-sync"])
        port = _free_port()
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections={max_connections} "
            # a throwaway cluster: durability is not needed, speed is
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(root / "server.log")
        _as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start"])
    except subprocess.CalledProcessError as exc:
        log = root / "server.log"
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"could not start PostgreSQL: {exc.stderr or exc.stdout}{detail}") from exc
    return LocalPostgres(bindir=bindir, root=root, port=port)


@contextlib.contextmanager
def running() -> Iterator[LocalPostgres]:
    server = start()
    try:
        yield server
    finally:
        server.stop()
