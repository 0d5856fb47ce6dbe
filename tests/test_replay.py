"""Logical time across runs: `nachfass replay` decides tick by tick exactly as live Dagster runs at the
same moments do; a mail run earlier than the warehouse's last one is refused; cadences follow the schedule."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nachfass.cli.main import main, run_job
from nachfass.core import paths
from nachfass.core.campaigns import load_campaigns
from nachfass.core.dbt import dbt_vars_arg
from nachfass.core.replay import (
    DECISION_TABLES_SQL,
    ReplayError,
    TickModel,
    _dbt,
    campaigns_due,
    close_decision_spans,
    duckdb_memory_budget,
    fits_in_memory,
    last_builds,
    parse_every,
    record_tick_decisions,
    replay,
    tick_times,
)
from nachfass.devtools.datagen.generate import generate_exports

FREQUENT_CAMPAIGNS = [n for n, c in load_campaigns().items() if c.cadence == "every_15_minutes"]
DAILY_CAMPAIGNS = [n for n, c in load_campaigns().items() if c.cadence == "daily"]
AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # Tuesday, 11:00 in Berlin
TICKS = [AS_OF - timedelta(days=2), AS_OF - timedelta(days=1), AS_OF]


def query(warehouse: Path, sql: str, params: list | None = None) -> list[tuple]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        return conn.execute(sql, params or []).fetchall()
    finally:
        conn.close()


LEDGER = (
    "select campaign, step, trigger_key, status, variant, as_of from mail.sends "
    "order by campaign, step, trigger_key"
)


def _replay_ticks(landing: Path, folder: Path, *, outbox: Path | None = None, **options):
    """A replay of TICKS (daily) into ``folder``/warehouse.duckdb and its outbox."""
    return replay(
        landing=landing,
        warehouse=folder / "warehouse.duckdb",
        outbox=outbox or folder / "outbox",
        start=TICKS[0],
        end=TICKS[-1],
        every=timedelta(days=1),
        progress=lambda _line: None,
        **options,
    )


@pytest.mark.slow
@pytest.mark.clock
def test_replay_sends_what_live_runs_at_the_same_moments_send(workspace, dbt_manifest, tmp_path) -> None:
    landing = workspace["landing"]
    generate_exports(landing, customers=300, seed=5, as_of=AS_OF)

    # live: the main Dagster job at each tick on one warehouse (ingest, dbt build, render, send)
    for tick in TICKS:
        assert run_job(tick.isoformat())
    live_ledger = query(workspace["warehouse"], LEDGER)
    live_decisions = query(
        workspace["warehouse"],
        "select campaign, step, trigger_key, decision, reason from eligibility.mail_candidates order by all",
    )

    # replay: the same ticks into a fresh warehouse
    replayed = tmp_path / "replay" / "warehouse.duckdb"
    report = _replay_ticks(landing, tmp_path / "replay")
    assert [t.as_of for t in report.ticks] == TICKS
    assert live_ledger and query(replayed, LEDGER) == live_ledger
    assert {row[-1] for row in live_ledger} == {t.replace(tzinfo=None) for t in TICKS}  # sent at each tick
    last_tick = query(
        replayed,
        "select campaign, step, trigger_key, decision, reason from replay.decisions where as_of = ? "
        "order by all",
        [AS_OF.replace(tzinfo=None)],
    )
    assert last_tick == live_decisions

    # the same mails, byte for byte in their SendGrid payloads
    live_outbox = {p.name: json.loads(p.read_text()) for p in workspace["outbox"].glob("*.json")}
    replay_outbox = {
        p.name: json.loads(p.read_text()) for p in (tmp_path / "replay" / "outbox").glob("*.json")
    }
    assert replay_outbox == live_outbox and len(live_outbox) == sum(1 for r in live_ledger if r[3] == "sent")

    # the per-day table counts the ledger
    assert sum(row[2] for row in report.daily) == len(live_outbox)
    # the replayed warehouse reads as of its last tick in a later session too (views included)
    assert query(replayed, "select count(*) from staging.stg_sends") == query(
        replayed, "select count(*) from mail.sends"
    )

    # mail_candidates decided lean (the first rules' triggers without the customer tables) decides every
    # trigger as the whole model does, on the replayed warehouse as of its last tick
    compiled = tmp_path / "replay" / ".warehouse.duckdb.replay" / "compile" / "compiled" / "nachfass"
    model_sql = (compiled / "models" / "eligibility" / "mail_candidates.sql").read_text(encoding="utf-8")
    # what the replay records of a tick's decisions (replay.record_tick_decisions): every row has it; a row
    # decided early has nothing else (it goes straight to the table, past the later rules)
    recorded = ("campaign", "step", "trigger_key", "customer_id", "decision", "reason", "decided_at")
    conn = duckdb.connect(str(replayed), read_only=True)
    try:
        conn.execute("set variable nachfass_as_of = ?", [AS_OF.replace(tzinfo=None)])
        decided = {}
        for lean in (True, False):
            conn.execute("set variable nachfass_lean_candidates = ?", [lean])
            result = conn.execute(
                f"select *, first_name is null and has_marketing_consent is null as decided_early "
                f"from ({model_sql}) order by campaign, step, trigger_key"
            )
            names = [column[0] for column in result.description]
            decided[lean] = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    finally:
        conn.close()

    def record(rows: list[dict]) -> list[tuple]:
        return [tuple(row[name] for name in recorded) for row in rows]

    assert record(decided[True]) == record(decided[False])
    early = [row for row in decided[True] if row["decided_early"]]
    assert early and {row["reason"] for row in early} <= {
        "already_sent",
        "expired",
        "purchased",
        "already_reminded",
        "not_inactive_yet",
        "not_logged_in",
        "order_returned",
        "order_cancelled",
        "empty_cart",
    }
    assert all(row["decision"] == "skip" and row["variant"] is None and row["email"] is None for row in early)
    assert not any(row["decided_early"] for row in decided[False])
    # every other row whole, as the model decides it in full
    whole = {(row["campaign"], row["step"], row["trigger_key"]): row for row in decided[False]}
    rest = [row for row in decided[True] if not row["decided_early"]]
    assert rest and all(row == whole[(row["campaign"], row["step"], row["trigger_key"])] for row in rest)

    # the segments built as at a tick that builds them again later (lean payloads, macro segment_rows): no
    # payload on a trigger mail_candidates skips unread (exited for good, expired), the rest of every row
    # as built whole; mail_candidates decides the same on them, and carries the same payloads (on a copy
    # without the last tick's mails, both built afresh as of that tick: what it decided before sending)
    lean_copy = tmp_path / "lean" / "warehouse.duckdb"  # the catalog the compiled SQL names: "warehouse"
    lean_copy.parent.mkdir()
    shutil.copy(replayed, lean_copy)
    as_of = AS_OF.replace(tzinfo=None)
    conn = duckdb.connect(str(lean_copy))
    try:
        conn.execute("set variable nachfass_as_of = ?", [as_of])
        conn.execute("delete from mail.sends where as_of = ?", [as_of])
        left_out, kept, decided_on = 0, 0, {}
        for lean in (False, True):
            conn.execute("set variable nachfass_lean_payloads = ?", [lean])
            conn.execute("set variable nachfass_lean_candidates = ?", [lean])
            for name in FREQUENT_CAMPAIGNS + DAILY_CAMPAIGNS:
                sql = (compiled / "models" / "segments" / f"{name}.sql").read_text(encoding="utf-8")
                conn.execute(f"create or replace table {'lean' if lean else 'whole'}_{name} as {sql}")
                conn.execute(f"create or replace table segments.{name} as {sql}")
            decided_on[lean] = conn.execute(
                f"select {', '.join(recorded)}, payload from ({model_sql}) order by all"
            ).fetchall()
        for name in FREQUENT_CAMPAIGNS + DAILY_CAMPAIGNS:
            rows = "select * exclude (payload) from {}_{} order by all"
            assert (
                conn.execute(rows.format("lean", name)).fetchall()
                == conn.execute(rows.format("whole", name)).fetchall()
            )
            counts = conn.execute(
                "select count(*) filter (where lean.payload is null), "
                "count(*) filter (where lean.payload is null and not (? > lean.expires_at "
                "or lean.exit_reason is not null)), "
                "count(*) filter (where lean.payload is not null and lean.payload <> whole.payload) "
                f"from lean_{name} as lean inner join whole_{name} as whole "
                "using (campaign, step, trigger_key)",
                [as_of],
            ).fetchone()
            assert counts[1:] == (0, 0), name
            left_out += counts[0]
            kept += conn.execute(f"select count(*) from lean_{name} where payload is not null").fetchone()[0]
        assert left_out > 0 and kept > 0
    finally:
        conn.close()
    assert [row[:-1] for row in decided_on[True]] == [row[:-1] for row in decided_on[False]]
    sent = [row for row in decided_on[False] if row[4] == "send"]
    assert sent and all(row[-1] is not None for row in sent)
    # the payloads of the mails sent and of the holdouts, the same (an early row has none in either)
    assert [row for row in decided_on[True] if row[-1] is not None] == [
        row for row in decided_on[False] if row[-1] is not None
    ]

    # the ticks on the warehouse file (--on-disk) decide and record the same as on the copy in memory, and
    # so does a replay deciding every tick's triggers with all their columns
    on_disk = tmp_path / "on-disk" / "warehouse.duckdb"
    _replay_ticks(landing, tmp_path / "on-disk", in_memory=False, lean_candidates=False)
    decisions = "select * from replay.decisions order by all"
    assert query(on_disk, LEDGER) == live_ledger
    assert query(on_disk, decisions) == query(replayed, decisions)
    assert len({row[0] for row in query(replayed, decisions)}) == len(TICKS)

    # a replay needs a fresh warehouse
    with pytest.raises(ReplayError, match="fresh warehouse"):
        _replay_ticks(landing, tmp_path / "replay", outbox=tmp_path / "again")


# not in the shifted-clock pass (CI time): the daily-tick test above checks the replay under the shifted clock
@pytest.mark.slow
def test_hourly_ticks_build_and_send_what_the_15_minute_runs_do(workspace, dbt_manifest, tmp_path) -> None:
    """Between two daily runs a live 15-minute run builds only its campaigns' models and reads the daily
    campaigns' segments as the last daily run left them; an hourly replay's ticks do the same, so they
    decide, send and leave the tables as those runs do."""
    landing = workspace["landing"]
    generate_exports(landing, customers=300, seed=5, as_of=AS_OF)
    daily_tick = datetime(2026, 11, 24, 8, tzinfo=UTC)  # the daily schedule's 09:00 in Berlin

    # live: everything at the daily tick, then the 15-minute job at the next two hours' slots
    assert run_job(daily_tick.isoformat())
    for slot in ("2026-11-24-09:45", "2026-11-24-10:45"):  # Berlin slots ending 09:00 and 10:00 UTC
        assert main(["run", "--job", "frequent_mails_job", "--partition", slot]) == 0
    live = workspace["warehouse"]
    segments = {
        name: f"select * from segments.{name} order by all" for name in FREQUENT_CAMPAIGNS + DAILY_CAMPAIGNS
    }

    lines: list[str] = []
    folder = tmp_path / "replay"
    report = replay(
        landing=landing,
        warehouse=folder / "warehouse.duckdb",
        outbox=folder / "outbox",
        start=daily_tick,
        end=AS_OF,
        every=timedelta(hours=1),
        progress=lines.append,
    )
    replayed = folder / "warehouse.duckdb"
    assert [sorted(t.campaigns) for t in report.ticks] == [
        sorted(FREQUENT_CAMPAIGNS + DAILY_CAMPAIGNS),
        sorted(FREQUENT_CAMPAIGNS),
        sorted(FREQUENT_CAMPAIGNS),
    ]

    live_ledger = query(live, LEDGER)
    # the daily campaigns mailed at the daily tick only, the 15-minute ones later too
    daily = daily_tick.replace(tzinfo=None)
    assert {row[-1] for row in live_ledger if row[0] in DAILY_CAMPAIGNS} == {daily}
    assert {row[-1] for row in live_ledger if row[0] in FREQUENT_CAMPAIGNS} - {daily}
    assert query(replayed, LEDGER) == live_ledger
    assert query(
        replayed,
        "select campaign, step, trigger_key, decision, reason from replay.decisions where as_of = ? "
        "order by all",
        [AS_OF.replace(tzinfo=None)],
    ) == query(
        live,
        "select campaign, step, trigger_key, decision, reason from eligibility.mail_candidates order by all",
    )
    # the daily segments as of the daily tick, the 15-minute ones as of the last tick, in both
    for name, sql in segments.items():
        assert query(replayed, sql) == query(live, sql), name
    # the recommendations of carts only, as the last 15-minute run left them
    targets = "select distinct target_type from intermediate.int_product_recommendations order by 1"
    assert query(replayed, targets) == query(live, targets) == [("cart",)]
    live_outbox = {p.name: json.loads(p.read_text()) for p in workspace["outbox"].glob("*.json")}
    assert live_outbox == {p.name: json.loads(p.read_text()) for p in (folder / "outbox").glob("*.json")}
    left_out = next(line for line in lines if "leave out" in line)
    assert "int_customer_order_gaps" in left_out and "cross_sell" in left_out
    assert "abandoned_cart" not in left_out.split("leave out")[1]


# not in the shifted-clock pass: it orders logical as_of values only; the test above has the clock
@pytest.mark.slow
def test_a_mail_run_before_the_last_one_is_refused_but_loading_is_not(
    workspace, dbt_manifest, capsys
) -> None:
    generate_exports(workspace["landing"], customers=120, seed=8, as_of=AS_OF)
    assert run_job(AS_OF.isoformat())
    earlier = AS_OF - timedelta(hours=3)
    assert not run_job(earlier.isoformat())
    err = capsys.readouterr().err
    assert "is earlier than that of run" in err and "Backfill missed slots oldest first" in err
    assert query(workspace["warehouse"], "select count(*) from mail.sends where as_of = ?", [earlier]) == [
        (0,)
    ]
    # loading events and refreshing analytics decide nothing that lasts: allowed at any logical time
    assert run_job(earlier.isoformat(), job_name="events_job")
    # the same slot again (a retry) is fine, and sends nothing twice
    before = query(workspace["warehouse"], "select count(*) from mail.sends")
    assert run_job(AS_OF.isoformat())
    assert query(workspace["warehouse"], "select count(*) from mail.sends") == before


@pytest.mark.slow
def test_a_replay_mails_nobody_the_live_warehouse_erased(workspace, dbt_manifest, tmp_path, capsys) -> None:
    """An erased person whom the shop's next export names again stays suppressed live (int_suppressions);
    a replay of those exports carries the live erasures, so it mails and counts them as live would."""
    landing = workspace["landing"]
    generate_exports(landing, customers=300, seed=5, as_of=AS_OF)
    assert run_job(AS_OF.isoformat())
    mailed = query(
        workspace["warehouse"],
        "select email, count(*) from mail.sends where status = 'sent' "
        "group by email order by 2 desc, 1 limit 1",
    )
    person, live_mails = mailed[0]
    assert live_mails >= 1
    assert main(["erase", "--email", person, "--as-of", AS_OF.isoformat()]) == 0
    # the erasure scrubbed the landing files; the shop's next export still names the person
    generate_exports(landing, customers=300, seed=5, as_of=AS_OF)
    assert any(person in p.read_text(encoding="utf-8") for p in landing.rglob("*.csv"))
    capsys.readouterr()

    folder = tmp_path / "replay"
    argv = ["replay", "--from", TICKS[0].isoformat(), "--to", TICKS[-1].isoformat(), "--every", "1d"]
    argv += ["--warehouse", str(folder / "warehouse.duckdb"), "--outbox", str(folder / "outbox")]
    assert main(argv) == 0
    assert "1 erased addresses stay suppressed" in capsys.readouterr().out
    replayed = folder / "warehouse.duckdb"
    live_salt = query(workspace["warehouse"], "select salt from mail.erasure_salt")
    assert query(replayed, "select salt from mail.erasure_salt") == live_salt
    assert query(replayed, "select email_hash, erased_at from mail.erasures") == query(
        workspace["warehouse"], "select email_hash, erased_at from mail.erasures"
    )
    # the person's triggers are all skipped, those that would have been mailed as suppressed
    decisions = query(
        replayed,
        "select distinct c.decision, c.reason from replay.decisions as c "
        "inner join staging.stg_customers as k on c.customer_id = k.customer_id where lower(k.email) = ?",
        [person.lower()],
    )
    assert {decision for decision, _ in decisions} == {"skip"} and ("skip", "suppressed") in decisions
    sends = query(replayed, "select count(*) from mail.sends where lower(email) = ?", [person.lower()])
    assert sends == [(0,)]
    outbox = list((folder / "outbox").glob("*.json"))
    assert outbox and not [p.name for p in outbox if person.lower() in p.read_text(encoding="utf-8").lower()]


@pytest.mark.parametrize(
    ("previous", "tick", "expected"),
    [
        # hourly ticks: the 09:00 Berlin (08:00 UTC) daily schedule fires in (07:00, 08:00] UTC only
        ("2026-11-24T07:00:00Z", "2026-11-24T08:00:00Z", FREQUENT_CAMPAIGNS + DAILY_CAMPAIGNS),
        ("2026-11-24T08:00:00Z", "2026-11-24T09:00:00Z", FREQUENT_CAMPAIGNS),
        # a tick between two 15-minute slots: nothing fired since the last tick
        ("2026-11-24T09:01:00Z", "2026-11-24T09:10:00Z", []),
        # daily ticks cover every schedule
        ("2026-11-23T10:00:00Z", "2026-11-24T10:00:00Z", FREQUENT_CAMPAIGNS + DAILY_CAMPAIGNS),
    ],
)
def test_a_tick_sends_the_campaigns_whose_schedule_fired_since_the_last(previous, tick, expected) -> None:
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    assert sorted(campaigns_due(parse(previous), parse(tick))) == sorted(expected)


def test_a_model_is_built_whole_at_its_last_build_and_lean_before() -> None:
    """The last tick building each model, as the replay's loop decides (its lean payloads end there)."""
    day = datetime(2026, 11, 23, 22)
    ticks = [day + timedelta(hours=h) for h in range(4)]  # 22:00, 23:00, then the next day's 00:00, 01:00
    only_a = frozenset({"a"})
    plans = [None, only_a, only_a, None]

    def model(name: str, **fields) -> TickModel:
        return TickModel(f"model.nachfass.{name}", f'"w"."s"."{name}"', "table", "select 1", **fields)

    every_tick = model("every_tick")
    left_out_for_a = model("left_out_for_a", partial=((only_a, None),))
    daily = model("daily", grain="day")
    not_last = model("not_last", partial=((frozenset({"b"}), None),))
    assert last_builds([every_tick, left_out_for_a, daily, not_last], ticks, plans) == {
        every_tick.unique_id: 4,
        left_out_for_a.unique_id: 4,
        daily.unique_id: 3,  # the next day's first tick; the dbt build before the ticks built the first day
        not_last.unique_id: 4,
    }
    assert last_builds([left_out_for_a, daily], ticks[:3], plans[:3]) == {
        left_out_for_a.unique_id: 1,
        daily.unique_id: 3,
    }


@pytest.mark.slow
def test_a_segment_with_a_payload_record_but_no_rows_macro_does_not_compile(tmp_path: Path) -> None:
    """segment_payload leaves the payload a record in a replay's lean compile, for segment_rows to turn into
    JSON: a segment edited to end in `select * from final` would hand mail_candidates a record as its
    payload, so it stops at compile time with what to write instead."""
    project = tmp_path / "dbt"
    shutil.copytree(
        paths.dbt_project_dir(), project, ignore=shutil.ignore_patterns("target", "logs", ".user.yml")
    )
    segment = project / "models" / "segments" / "abandoned_cart.sql"
    text = segment.read_text(encoding="utf-8")
    assert "{{ segment_rows('final', campaign) }}" in text
    segment.write_text(text.replace("{{ segment_rows('final', campaign) }}", "select * from final"))
    with pytest.raises(
        ReplayError, match=r"segment_payload builds a record that segment_rows turns into JSON"
    ):
        _dbt(
            [
                "compile",
                "--select",
                "abandoned_cart",
                *dbt_vars_arg(as_of_source="variable", segments=project / "models" / "segments"),
            ],
            target_path=tmp_path / "target",
            env_warehouse=tmp_path / "warehouse.duckdb",
            project=project,
        )


def test_ticks_and_spacing() -> None:
    assert parse_every("15m") == timedelta(minutes=15)
    assert parse_every("1h") == timedelta(hours=1)
    assert parse_every("2d") == timedelta(days=2)
    for bad in ("", "0h", "1w", "h", "-1h"):
        with pytest.raises(ReplayError):
            parse_every(bad)
    start = datetime(2026, 11, 17, 9, tzinfo=UTC)
    ticks = tick_times(start, start + timedelta(days=7), timedelta(hours=1))
    assert len(ticks) == 7 * 24 + 1 and ticks[-1] == start + timedelta(days=7)
    with pytest.raises(ReplayError):
        tick_times(start, start - timedelta(hours=1), timedelta(hours=1))


# ---- decisions stored as spans of ticks ------------------------------------------------------------------

DECISIONS = [("send", "due"), ("skip", "frequency_cap"), ("defer", "quiet_hours"), ("skip", "already_sent")]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["k1", "k2", "k3", "k4"]),
            st.tuples(st.sampled_from(DECISIONS), st.sampled_from(["C1", "C2", None])),
            max_size=4,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_replay_decisions_hold_every_tick_s_candidates(ticks: list[dict]) -> None:
    """Whatever the ticks decide, replay.decisions reads back every tick's mail_candidates row for row
    (stored as spans of ticks with the same decision)."""
    conn = duckdb.connect()
    conn.execute(DECISION_TABLES_SQL)
    conn.execute("create schema eligibility")
    expected = []
    for number, candidates in enumerate(ticks):
        moment = datetime(2026, 11, 1) + timedelta(hours=number)
        rows = [
            ("cart", "1", key, customer, decision, reason)
            for key, ((decision, reason), customer) in candidates.items()
        ]
        conn.execute(
            "create or replace table eligibility.mail_candidates (campaign varchar, step varchar, "
            "trigger_key varchar, customer_id varchar, decision varchar, reason varchar)"
        )
        if rows:
            conn.executemany("insert into eligibility.mail_candidates values (?, ?, ?, ?, ?, ?)", rows)
        record_tick_decisions(conn, moment)
        expected += [(moment, *row) for row in rows]
    close_decision_spans(conn)
    got = conn.execute("select * from replay.decisions").fetchall()
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    # one span per stretch of equal decisions: never more rows than the naive table
    assert conn.execute("select count(*) from replay.decision_spans").fetchone()[0] <= len(expected)


def test_the_ticks_run_in_memory_only_when_the_copy_fits(tmp_path: Path, monkeypatch) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    warehouse.write_bytes(b"\0" * 30_000_000)  # only its size counts
    monkeypatch.setenv("NACHFASS_DUCKDB_MEMORY_LIMIT", "1GiB")
    assert duckdb_memory_budget() == 2**30
    assert fits_in_memory(warehouse) == (True, 150_000_000, 2**30)
    # a backtest runs two copies at once: each gets half
    assert fits_in_memory(warehouse, share=2)[0] and not fits_in_memory(warehouse, share=8)[0]
    monkeypatch.setenv("NACHFASS_DUCKDB_MEMORY_LIMIT", "100MB")
    fits, needed, budget = fits_in_memory(warehouse)
    assert not fits and needed == 150_000_000
    assert budget == pytest.approx(100_000_000, rel=0.01)  # DuckDB shows it rounded: 95.3 MiB
    monkeypatch.setenv("NACHFASS_DUCKDB_MEMORY_LIMIT", "50%")  # DuckDB resolves it against this machine
    assert 0 < duckdb_memory_budget() < 2**50


def test_a_second_replay_into_a_warehouse_being_replayed_is_refused(tmp_path: Path) -> None:
    """The ticks run on a copy in memory, so the file is not held; the replay's lock says it is in use."""
    from nachfass.core import file_lock

    warehouse = tmp_path / "replay" / "warehouse.duckdb"
    with (
        file_lock.hold(file_lock.lock_path(warehouse)),
        pytest.raises(ReplayError, match="another replay or backtest is writing"),
    ):
        _replay_ticks(tmp_path / "landing", tmp_path / "replay")
    assert not warehouse.exists()  # refused before anything was loaded or written
