"""The two replays of a backtest in one DuckDB instance, computing the models both rule sets share once a
tick instead of twice.

A rule change touches a few models (the changed segment, mail_candidates); the order, cart and
recommendation models above them compile to the same SQL with both rule sets and read the same exports,
so at every tick both sides computed the same tables: ~70 % of a tick's work at 100,000 customers
(docs/benchmarks.md). Here each side's warehouse is an in-memory catalog of one DuckDB instance
("before", "after"). A model is *shared* when its compiled SQL is the same in both projects and so is
everything it reads, recursively, down to the exports; the send ledger (the `mail` sources) differs
between the sides from the first send on, so nothing reading it is shared. At each tick the shared models
are computed once, in the first side's catalog, by a thread of their own; then each side computes its
own models, reading the shared ones from there, and decides, renders and records as a replay alone does.
The next tick's shared models are computed as soon as both sides have committed their models, while they
still render and write the tick's mails. At the end the other side copies the shared tables into its own
catalog, so both warehouses written back are whole.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from datetime import datetime
from pathlib import Path

import duckdb

from nachfass.core import duckdb_config
from nachfass.core.replay import AS_OF_VARIABLE, ReplayError, TickModel, _literal, create_tick_model

# sources a tick writes to (the send ledger and what erasure keeps beside it): a model reading them
# differs between the sides
SIDE_SOURCE_SCHEMAS = frozenset({"mail"})
_RELATION = re.compile(r'"([^"]+)"\."([^"]+)"\."([^"]+)"')


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
    """One DuckDB instance for the sides of a backtest (``sides``; the first, the owner, holds the shared
    models in its catalog). Each side's replay thread calls ``join`` once, then at every tick
    ``before_tick`` (waits for the tick's shared models) and ``models_done`` (its models are committed: it
    reads no shared table until the next tick), and ``finish`` after the last tick. A thread of its own
    computes the shared models of the next tick as soon as every side is done with the last one's, so it
    runs while the sides record, render and write the tick's mails. ``abort`` (any thread) stops it and
    releases the sides waiting when one side fails."""

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
        self._plans: dict[str, list[frozenset[str] | None]] = {}
        self._ticks: list[datetime] = []
        self.shared: list[TickModel] = []  # the owner's shared models, in dependency order
        self._joined = threading.Barrier(len(sides), action=self._plan)
        self._state = threading.Condition()
        self._ready = 0  # how many ticks' shared models are computed (the tables hold the last one's)
        self._done = dict.fromkeys(sides, 0)  # how many ticks' shared models each side is done reading
        self._failure: str | None = None  # why the ticks cannot go on (a side stopped, the models failed)
        self._failed_here = False  # the shared models failed (not a side)
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._worker: threading.Thread | None = None

    # -- called by each side's thread -------------------------------------------------------------------
    def join(
        self,
        side: str,
        *,
        warehouse: Path,
        manifest: dict,
        models: list[TickModel],
        ticks: list[datetime],
        plans: list[frozenset[str] | None] | None = None,
    ) -> tuple[duckdb.DuckDBPyConnection, list[TickModel], list[TickModel]]:
        """Copy the side's warehouse into its catalog and wait for the other sides (``ticks``: the replay's,
        naive UTC, the same for every side; ``plans``: what each tick builds, replay.tick_plans). Returns
        the side's connection (its catalog the default), the models it computes at each tick (the shared
        ones read from the owner's catalog) and all its tick models as its own warehouse defines them (for
        the views pinned at the end)."""
        conn = self.db.cursor()
        try:
            conn.execute(f"attach {_literal(warehouse)} as {side}_source (read_only)")
            conn.execute(f"attach ':memory:' as {side}")
            conn.execute(f"copy from database {side}_source to {side}")
            conn.execute(f"detach {side}_source")
            conn.execute(f"use {side}")
        except Exception:
            conn.close()
            self.abort(f"{side} could not copy its warehouse")
            raise
        self._manifests[side] = manifest
        self._models[side] = models
        self._plans[side] = list(plans) if plans is not None else [None] * len(ticks)
        if self._ticks and self._ticks != ticks:
            self.abort("the sides have different ticks")
        self._ticks = ticks
        try:
            self._joined.wait()
        except threading.BrokenBarrierError:
            conn.close()
            raise ReplayError(f"cancelled: {self._failure or 'the other side stopped'}") from None
        shared = {model.relation for model in self.shared}
        own = [self._rewrite(m, shared if side != self.owner else set()) for m in models]
        ticking = [m for m in own if m.relation not in shared]
        home = [self._rewrite(m, set()) for m in models]
        return conn, ticking, home

    def before_tick(self, side: str, moment: datetime) -> None:
        """Wait until the shared models of ``moment`` (the side's next tick) are computed."""
        number = self._done[side] + 1
        if self._ticks[number - 1] != moment:
            raise ReplayError(
                f"{side} is at {moment}, the backtest's tick {number} is {self._ticks[number - 1]}"
            )
        with self._state:
            self._state.wait_for(lambda: self._ready >= number or self._failure is not None)
            if self._failure is not None:
                raise ReplayError(self._failure if self._failed_here else f"cancelled: {self._failure}")

    def models_done(self, side: str) -> None:
        """The side's models of its current tick are committed: the next tick's shared models may replace
        the tables it read."""
        with self._state:
            self._done[side] += 1
            self._state.notify_all()

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

    def abort(self, reason: str = "the other side stopped", *, here: bool = False) -> None:
        """Stop the ticks for ``reason`` (the first reason given stays); ``here``: the shared models failed,
        the sides report ``reason`` as their error."""
        with self._state:
            if self._failure is None:
                self._failure, self._failed_here = reason, here
            self._state.notify_all()
        self._joined.abort()

    def close(self) -> None:
        self.abort("the backtest ended")
        if self._worker is not None:
            if self._cursor is not None:
                self._cursor.interrupt()  # a shared model still running for a tick nobody will take
            self._worker.join()
        if self._cursor is not None:
            self._cursor.close()
        self.db.close()

    # -- the shared models ------------------------------------------------------------------------------
    def _plan(self) -> None:
        """(The joining barrier's action, once every side has joined.) Which models are shared; starts the
        thread that computes them."""
        same = same_nodes({side: self._manifests[side] for side in self.sides})
        everywhere = set.intersection(*({m.unique_id for m in self._models[side]} for side in self.sides))
        owner = self._models[self.owner]
        same &= everywhere - self._built_differently()
        self.shared = [self._rewrite(m, set()) for m in owner if m.unique_id in same]
        self._cursor = self.db.cursor()
        self._cursor.execute(f"use {self.owner}")
        self._worker = threading.Thread(target=self._compute_ticks, name="backtest-shared", daemon=True)
        self._worker.start()

    def _compute_ticks(self) -> None:
        conn = self._cursor
        assert conn is not None
        # the dbt build before the ticks built the first tick's day
        built_at = {model.unique_id: self._ticks[0] for model in self.shared}
        plans = self._plans[self.owner]
        try:
            for number, (moment, plan) in enumerate(zip(self._ticks, plans, strict=True), start=1):
                with self._state:  # every side done with the last tick's shared models
                    self._state.wait_for(
                        lambda n=number: self._failure is not None or min(self._done.values()) >= n - 1
                    )
                    if self._failure is not None:
                        return
                conn.execute(f"set variable {AS_OF_VARIABLE} = ?", [moment])
                conn.execute("begin transaction")
                try:
                    for model in self.shared:
                        sql = model.sql_for(plan)
                        if sql is not None and model.due(moment, built_at[model.unique_id]):
                            create_tick_model(conn, model, moment, sql)
                            built_at[model.unique_id] = moment
                    conn.execute("commit")
                except BaseException:
                    conn.execute("rollback")
                    raise
                with self._state:
                    self._ready = number
                    self._state.notify_all()
        except Exception as exc:  # the sides name it when they stop
            self.abort(f"computing the models both sides share failed: {exc}", here=True)

    def _built_differently(self) -> set[str]:
        """The tick models some tick builds differently on the sides (a rule change moved a campaign to
        another cadence, or changed what only its job builds), and every tick model reading one of them."""
        same_plans = all(self._plans[side] == self._plans[self.owner] for side in self.sides)
        partials = [{m.unique_id: m.partial for m in self._models[side]} for side in self.sides]
        different = set()
        for uid, partial in partials[0].items():
            if (partial and not same_plans) or any(other.get(uid) != partial for other in partials[1:]):
                different.add(uid)
        nodes = self._manifests[self.owner]["nodes"]
        for model in self._models[self.owner]:  # dependency order: a reader comes after what it reads
            if set(nodes[model.unique_id]["depends_on"]["nodes"]) & different:
                different.add(model.unique_id)
        return different

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
            partial=tuple(
                (campaigns, None if sql is None else _RELATION.sub(relation, sql))
                for campaigns, sql in model.partial
            ),
            relation=_RELATION.sub(lambda m: f'"{m.group(2)}"."{m.group(3)}"', model.relation),
        )


def _parts(relation: str) -> tuple[str, str]:
    """("schema", "name") of '"catalog"."schema"."name"' or '"schema"."name"'."""
    parts = [part.strip('"') for part in relation.split('"."')]
    return parts[-2], parts[-1]
