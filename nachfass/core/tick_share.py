"""The two replays of a backtest in one DuckDB instance, computing the models both rule sets share once a
tick instead of twice.

A rule change touches a few models (the changed segment, mail_candidates); the order, cart and
recommendation models above them compile to the same SQL with both rule sets and read the same exports,
so at every tick both sides computed the same tables: ~70 % of a tick's work at 100,000 customers
(docs/benchmarks.md). Here each side's warehouse is an in-memory catalog of one DuckDB instance
("before", "after"). A model is *shared* when its compiled SQL is the same in both projects and so is
everything it reads, recursively, down to the exports; the send ledger differs between the sides from the
first send on, so nothing reading it is shared (the erasures beside it, which no tick writes, are shared
when both sides hold the same rows). At each tick the shared models
are computed once by a thread of their own; then each side computes its own models, reading the shared
ones, and decides, renders and records as a replay alone does.

The shared tables are kept twice, one copy for the odd ticks (in the first side's catalog) and one for the
even ticks (an in-memory catalog of their own): nothing a side writes feeds them, so the thread computes the
next tick's shared models while the sides compute, decide and send the current one, instead of both sides
waiting for them at every tick. A side reads the copy of its tick. A model a tick does not re-create (once a
day, or left out by the tick's job) is copied from the other copy when that one holds a newer build. At the
end each side copies the last tick's shared tables into its own catalog, so both warehouses written back
are whole.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from datetime import datetime
from pathlib import Path

import duckdb

from nachfass.core import duckdb_config
from nachfass.core.replay import (
    AS_OF_VARIABLE,
    LeanPayloads,
    ReplayError,
    TickModel,
    _literal,
    build_tick_model,
    last_builds,
)

# the sources of the sides' own state (the send ledger, and the erasures carried beside it): a model reading
# them differs between the sides, unless the source is one no tick writes and every side holds the same rows
# (``SharedTicks._same_side_sources``)
SIDE_SOURCE_SCHEMAS = frozenset({"mail"})
# what a tick writes of them: the ledger (the erasures are carried in before the first tick, never during)
TICK_WRITTEN_SOURCES = frozenset({("mail", "sends")})
# the catalog holding the shared tables of the even ticks (the first side's holds the odd ticks')
EVEN_TICKS_CATALOG = "backtest_shared_even"
_RELATION = re.compile(r'"([^"]+)"\."([^"]+)"\."([^"]+)"')


def same_nodes(
    manifests: dict[str, dict], same_sources: frozenset[tuple[str, str]] = frozenset()
) -> set[str]:
    """The unique ids of the models, seeds and sources that are the same for every side: a source outside
    the sides' own state or in ``same_sources`` ((schema, table): the same rows on every side, never written
    by a tick), a seed with the same file, a model whose compiled SQL, materialisation and inputs are all
    the same."""
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
            result = (
                mine["schema"] not in SIDE_SOURCE_SCHEMAS
                or (mine["schema"], mine.get("identifier") or mine["name"]) in same_sources
            )
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
    computes the shared models of each tick into the copy of its parity (``_buffers``) as soon as every side
    is done with the tick two before, which read that copy last: the next tick's shared models are computed
    while the sides compute, decide and send the current one. ``abort`` (any thread) stops it and releases
    the sides waiting when one side fails."""

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
        # where the shared tables of tick n (1-based) are: _buffers[(n - 1) % 2]; the first holds what the
        # dbt build before the ticks built
        self._buffers = (self.owner, EVEN_TICKS_CATALOG)
        self._shared_in: tuple[list[TickModel], ...] = ()  # self.shared as computed into each buffer
        self._variants: dict[str, tuple[list[TickModel], ...]] = {}  # a side's models reading each buffer
        self._ticking: dict[str, list[TickModel]] = {}  # the list join returned, set at each tick
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
        the side's connection (its catalog the default), the models it computes at each tick (reading the
        shared ones from the copy of that tick: ``before_tick`` sets the list's contents for the tick) and
        all its tick models as its own warehouse defines them (for the views pinned at the end)."""
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
        home = [self._rewrite(m, set()) for m in models]
        own = [m for m, at_home in zip(models, home, strict=True) if at_home.relation not in shared]
        self._variants[side] = tuple(
            [self._rewrite(m, shared, catalog) for m in own] for catalog in self._buffers
        )
        ticking = self._ticking[side] = list(self._variants[side][0])
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
            # a later tick's shared models failing leaves this one's to be ticked; any other failure stops
            if self._failure is not None and not (self._failed_here and self._ready >= number):
                raise ReplayError(self._failure if self._failed_here else f"cancelled: {self._failure}")
        self._ticking[side][:] = self._variants[side][(number - 1) % 2]

    def models_done(self, side: str) -> None:
        """The side's models of its current tick are committed: the next tick's shared models may replace
        the tables it read."""
        with self._state:
            self._done[side] += 1
            self._state.notify_all()

    def finish(self, conn: duckdb.DuckDBPyConnection, side: str) -> None:
        """After the last tick: the last tick's shared tables into this side's catalog (unless they are
        there already: the owner's, when the last tick is odd)."""
        source = self._buffers[(len(self._ticks) - 1) % 2]
        if source == side:
            return
        for model in self.shared:
            if model.materialized == "table":
                schema, name = _parts(model.relation)
                conn.execute(
                    f'create or replace table "{schema}"."{name}" as '
                    f'select * from "{source}"."{schema}"."{name}"'
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
        same = same_nodes({side: self._manifests[side] for side in self.sides}, self._same_side_sources())
        everywhere = set.intersection(*({m.unique_id for m in self._models[side]} for side in self.sides))
        owner = self._models[self.owner]
        same &= everywhere - self._built_differently()
        self.shared = [self._rewrite(m, set()) for m in owner if m.unique_id in same]
        shared = {model.relation for model in self.shared}
        self._shared_in = tuple(  # from the owner's models: _rewrite reads the catalog names off them
            [self._rewrite(m, shared, catalog, others=self.owner) for m in owner if m.unique_id in same]
            for catalog in self._buffers
        )
        self._cursor = self.db.cursor()
        self._cursor.execute(f"attach ':memory:' as {EVEN_TICKS_CATALOG}")
        for schema in sorted({_parts(model.relation)[0] for model in self.shared}):
            self._cursor.execute(f'create schema if not exists {EVEN_TICKS_CATALOG}."{schema}"')
        self._cursor.execute(f"use {self.owner}")
        self._worker = threading.Thread(target=self._compute_ticks, name="backtest-shared", daemon=True)
        self._worker.start()

    def _compute_ticks(self) -> None:
        conn = self._cursor
        assert conn is not None
        # the dbt build before the ticks built the first tick's day, into the owner's catalog (buffer 0)
        built_at = {model.unique_id: self._ticks[0] for model in self.shared}
        last_build = dict.fromkeys(built_at, 0)  # the tick (0: the dbt build) that built the model last
        holds: tuple[dict[str, int], ...] = (dict(last_build), {})  # which build each buffer holds
        # ... and as of when: a model updated from tick to tick (build_tick_model) is updated from that
        held_at: tuple[dict[str, datetime], ...] = (dict(built_at), {})
        plans = self._plans[self.owner]
        # the segments' lean payloads at every build but a model's last, as the sides' own models
        payloads = LeanPayloads(conn, last_builds(self.shared, self._ticks, plans), lean=True)
        try:
            for number, (moment, plan) in enumerate(zip(self._ticks, plans, strict=True), start=1):
                with self._state:  # every side done with the tick that read this buffer last
                    self._state.wait_for(
                        lambda n=number: self._failure is not None or min(self._done.values()) >= n - 2
                    )
                    if self._failure is not None:
                        return
                buffer = (number - 1) % 2
                conn.execute(f"set variable {AS_OF_VARIABLE} = ?", [moment])
                conn.execute("begin transaction")
                try:
                    for model in self._shared_in[buffer]:
                        uid = model.unique_id
                        sql = model.sql_for(plan)
                        if sql is not None and model.due(moment, built_at[uid]):
                            payloads.before(model, number)
                            build_tick_model(conn, model, moment, sql, held_at[buffer].get(uid))
                            built_at[uid], last_build[uid] = moment, number
                        elif holds[buffer].get(uid) != last_build[uid]:
                            self._copy_build(conn, model, self._buffers[1 - buffer])
                        holds[buffer][uid] = last_build[uid]
                        held_at[buffer][uid] = built_at[uid]
                    conn.execute("commit")
                except BaseException:
                    conn.execute("rollback")
                    raise
                with self._state:
                    self._ready = number
                    self._state.notify_all()
        except Exception as exc:  # the sides name it when they stop
            self.abort(f"computing the models both sides share failed: {exc}", here=True)

    def _copy_build(self, conn: duckdb.DuckDBPyConnection, model: TickModel, source: str) -> None:
        """A model this tick does not re-create, as the last tick building it left it (in ``source``, the
        other buffer); a view is defined again, reading this buffer."""
        if model.materialized == "view":
            conn.execute(f"create or replace view {model.relation} as {model.sql}")
            return
        schema, name = _parts(model.relation)
        conn.execute(
            f'create or replace table {model.relation} as select * from "{source}"."{schema}"."{name}"'
        )

    def _same_side_sources(self) -> frozenset[tuple[str, str]]:
        """The sources of the sides' own state that no tick writes and that hold the same rows in every
        side's catalog (the erasures both sides of a backtest carry from the live warehouse): the models
        reading them (int_suppressions) are computed once a tick like any other shared model."""
        found = set()
        cursor = self.db.cursor()
        try:
            for source in self._manifests[self.owner]["sources"].values():
                table = (source["schema"], source.get("identifier") or source["name"])
                if source["schema"] not in SIDE_SOURCE_SCHEMAS or table in TICK_WRITTEN_SOURCES:
                    continue
                rows = set()
                for side in self.sides:
                    try:
                        rows.add(
                            tuple(
                                cursor.execute(
                                    f'select * from {side}."{table[0]}"."{table[1]}" order by all'
                                ).fetchall()
                            )
                        )
                    except duckdb.Error:
                        rows.add(None)  # not there on this side: not the same
                if len(rows) == 1 and None not in rows:
                    found.add(table)
        finally:
            cursor.close()
        return frozenset(found)

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
    def _rewrite(
        self, model: TickModel, shared: set[str], catalog: str | None = None, *, others: str | None = None
    ) -> TickModel:
        """The model's SQL and relation with the ``shared`` relations, the model's own among them, in
        ``catalog`` (a buffer), and the others in ``others``, by default with the warehouse's catalog name
        dropped (the side's catalog is the connection's default; a view in the even ticks' catalog would
        look for them there)."""
        shared_parts = {_parts(relation) for relation in shared}

        def relation(match: re.Match) -> str:
            schema, name = match.group(2), match.group(3)
            if (schema, name) in shared_parts:
                return f'"{catalog}"."{schema}"."{name}"'
            return f'"{others}"."{schema}"."{name}"' if others else f'"{schema}"."{name}"'

        return dataclasses.replace(
            model,
            sql=_RELATION.sub(relation, model.sql),
            partial=tuple(
                (campaigns, None if sql is None else _RELATION.sub(relation, sql))
                for campaigns, sql in model.partial
            ),
            relation=_RELATION.sub(relation, model.relation),
            delta=None if model.delta is None else _RELATION.sub(relation, model.delta),
        )


def _parts(relation: str) -> tuple[str, str]:
    """("schema", "name") of '"catalog"."schema"."name"' or '"schema"."name"'."""
    parts = [part.strip('"') for part in relation.split('"."')]
    return parts[-2], parts[-1]
