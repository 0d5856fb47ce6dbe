"""The two replays of a backtest in one DuckDB instance, computing the models both rule sets share once a
tick instead of twice.

A rule change touches a few models (the changed segment, mail_candidates); the order, cart and
recommendation models above them compile to the same SQL with both rule sets and read the same exports,
so at every tick both sides computed the same tables: ~70 % of a tick's work at 100,000 customers
(docs/benchmarks.md). Here each side's warehouse is an in-memory catalog of one DuckDB instance
("before", "after"). A model is *shared* when its compiled SQL is the same in both projects and so is
everything it reads, recursively, down to the exports; the send ledger (the `mail` sources) differs
between the sides from the first send on, so nothing reading it is shared. At each tick the shared models
are computed once, in the first side's catalog, with all the instance's threads, while both sides wait;
then each side computes its own models, reading the shared ones from there, and decides, renders and
records as a replay alone does. At the end the other side copies the shared tables into its own catalog,
so both warehouses written back are whole.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from datetime import datetime
from pathlib import Path

import duckdb

from nachfass.core import duckdb_config
from nachfass.core.replay import AS_OF_VARIABLE, ReplayError, TickModel

# sources a tick writes to (the send ledger and what erasure keeps beside it): a model reading them
# differs between the sides
SIDE_SOURCE_SCHEMAS = frozenset({"mail"})
_RELATION = re.compile(r'"([^"]+)"\."([^"]+)"\."([^"]+)"')


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def same_nodes(manifests: dict[str, dict]) -> set[str]:
    """The unique ids of the models, seeds and sources that are the same for every side: a source the
    ticks do not write, a seed with the same file, a model whose compiled SQL, materialisation and
    inputs are all the same."""
    first, *others = manifests.values()
    same: dict[str, bool] = {}

    def node(manifest: dict, uid: str) -> dict | None:
        return manifest["nodes"].get(uid) or manifest["sources"].get(uid)

    def is_same(uid: str) -> bool:
        if uid in same:
            return same[uid]
        same[uid] = False  # a cycle (none in dbt) is not the same
        mine = node(first, uid)
        theirs = [node(m, uid) for m in others]
        if mine is None or any(t is None for t in theirs):
            return False
        kind = mine["resource_type"]
        if kind == "source":
            result = mine["schema"] not in SIDE_SOURCE_SCHEMAS
        elif kind == "seed":
            result = all(t["checksum"] == mine["checksum"] for t in theirs)
        elif kind == "model":
            result = all(
                t.get("compiled_code") == mine.get("compiled_code")
                and t["config"]["materialized"] == mine["config"]["materialized"]
                and t["relation_name"] == mine["relation_name"]
                for t in theirs
            ) and all(is_same(dep) for dep in mine["depends_on"]["nodes"])
        else:
            result = False
        same[uid] = result
        return result

    return {uid for uid in first["nodes"] if is_same(uid)}


class SharedTicks:
    """One DuckDB instance for the sides of a backtest (``sides``, the first computes the shared models
    in its catalog). Each side's replay thread calls ``join`` once, ``before_tick`` at every tick and
    ``finish`` after the last; ``abort`` (any thread) releases the others when one fails."""

    def __init__(self, sides: tuple[str, ...], *, work: Path, threads: int | None) -> None:
        self.sides = sides
        self.owner = sides[0]
        work.mkdir(parents=True, exist_ok=True)
        self.db = duckdb.connect()
        self.db.execute(f"set memory_limit = '{duckdb_config.memory_limit()}'")
        self.db.execute(f"set temp_directory = {_literal(work / 'tmp')}")
        if threads is not None:
            self.db.execute(f"set threads = {max(1, int(threads))}")
        self._manifests: dict[str, dict] = {}
        self._models: dict[str, list[TickModel]] = {}
        self._moments: dict[str, datetime] = {}
        self._built_at: datetime | None = None
        self.shared: list[TickModel] = []  # the owner's shared models, in dependency order
        self._joined = threading.Barrier(len(sides), action=self._plan)
        self._tick = threading.Barrier(len(sides), action=self._compute_shared)
        self._cursor: duckdb.DuckDBPyConnection | None = None

    # -- called by each side's thread -------------------------------------------------------------------
    def join(
        self, side: str, *, warehouse: Path, manifest: dict, models: list[TickModel], start: datetime
    ) -> tuple[duckdb.DuckDBPyConnection, list[TickModel], list[TickModel]]:
        """Copy the side's warehouse into its catalog and wait for the other sides. Returns the side's
        connection (its catalog the default), the models it computes at each tick (the shared ones read
        from the owner's catalog) and all its tick models as its own warehouse defines them (for the
        views pinned at the end)."""
        conn = self.db.cursor()
        try:
            conn.execute(f"attach {_literal(warehouse)} as {side}_source (read_only)")
            conn.execute(f"attach ':memory:' as {side}")
            conn.execute(f"copy from database {side}_source to {side}")
            conn.execute(f"detach {side}_source")
            conn.execute(f"use {side}")
        except Exception:
            conn.close()
            self.abort()
            raise
        self._manifests[side] = manifest
        self._models[side] = models
        self._built_at = start
        self._wait(self._joined, side)
        shared = {model.relation for model in self.shared}
        own = [self._rewrite(m, shared if side != self.owner else set()) for m in models]
        ticking = [m for m in own if m.relation not in shared]
        home = [self._rewrite(m, set()) for m in models]
        return conn, ticking, home

    def before_tick(self, side: str, moment: datetime) -> None:
        """Wait for the other sides at ``moment``; the shared models are then computed for it."""
        self._moments[side] = moment
        self._wait(self._tick, side)

    def finish(self, conn: duckdb.DuckDBPyConnection, side: str) -> None:
        """After the last tick: the shared tables into this side's catalog (the owner has them)."""
        if side == self.owner:
            return
        for model in self.shared:
            if model.materialized == "table":
                schema, name = _parts(model.relation)
                conn.execute(
                    f'create or replace table "{schema}"."{name}" as '
                    f'select * from "{self.owner}"."{schema}"."{name}"'
                )

    def abort(self) -> None:
        self._joined.abort()
        self._tick.abort()

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
        self.db.close()

    # -- the barriers' actions (run by one thread while the others wait) --------------------------------
    def _plan(self) -> None:
        same = same_nodes({side: self._manifests[side] for side in self.sides})
        everywhere = set.intersection(*({m.unique_id for m in self._models[side]} for side in self.sides))
        shared_ids = same & everywhere
        self.shared = [self._rewrite(m, set()) for m in self._models[self.owner] if m.unique_id in shared_ids]
        self._cursor = self.db.cursor()
        self._cursor.execute(f"use {self.owner}")

    def _compute_shared(self) -> None:
        moments = set(self._moments.values())
        if len(moments) != 1:
            raise ReplayError(f"the sides of the backtest are at different ticks: {sorted(moments)}")
        moment = moments.pop()
        conn = self._cursor
        assert conn is not None
        conn.execute(f"set variable {AS_OF_VARIABLE} = ?", [moment])
        conn.execute("begin transaction")
        try:
            for model in self.shared:
                if model.due(moment, self._built_at):
                    conn.execute(f"create or replace {model.materialized} {model.relation} as {model.sql}")
            conn.execute("commit")
        except BaseException:
            conn.execute("rollback")
            raise
        self._built_at = moment

    # -- helpers ----------------------------------------------------------------------------------------
    def _rewrite(self, model: TickModel, shared: set[str]) -> TickModel:
        """The model's SQL and relation with the warehouse's catalog name dropped (the side's catalog is
        the connection's default) and the ``shared`` relations read from the owner's catalog."""
        shared_parts = {_parts(relation) for relation in shared}

        def relation(match: re.Match) -> str:
            schema, name = match.group(2), match.group(3)
            if (schema, name) in shared_parts:
                return f'"{self.owner}"."{schema}"."{name}"'
            return f'"{schema}"."{name}"'

        return dataclasses.replace(
            model,
            sql=_RELATION.sub(relation, model.sql),
            relation=_RELATION.sub(lambda m: f'"{m.group(2)}"."{m.group(3)}"', model.relation),
        )

    def _wait(self, barrier: threading.Barrier, side: str) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            raise ReplayError(f"cancelled: the other side stopped while {side} waited for it") from None


def _parts(relation: str) -> tuple[str, str]:
    """("schema", "name") of '"catalog"."schema"."name"' or '"schema"."name"'."""
    parts = [part.strip('"') for part in relation.split('"."')]
    return parts[-2], parts[-1]
