"""Operations without running anything heavy: sensor file logic, schedule run requests, job selections,
asset checks and executors of the one Definitions object."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from tests_support import ALL_JOBS

from dagster_project.jobs import JOB_CAMPAIGN_CONFIG, MAIL_JOB_SPECS, RENDER_OP, SEND_OP
from dagster_project.resources import LandingResource, parse_as_of
from dagster_project.sensors import SETTLE_SECONDS, events_sensor, landing_sensor, new_files, settled_files
from nachfass.core.campaigns import load_campaigns

RENDERED = dg.AssetKey(["mail", "rendered_mails"])
SENT = dg.AssetKey(["mail", "sent_mails"])
CANDIDATES = dg.AssetKey(["eligibility", "mail_candidates"])
CAMPAIGNS = load_campaigns()
# the registry's cadences, written out: what a marketer set in the segment YAML files
FREQUENT_CAMPAIGNS = [n for n, c in CAMPAIGNS.items() if c.cadence == "every_15_minutes"]
DAILY_CAMPAIGNS = [n for n, c in CAMPAIGNS.items() if c.cadence == "daily"]
SCHEDULED_JOBS = ("frequent_mails_job", "daily_mails_job")


def _write(path: Path, text: str = "a,b\n1,2\n", age_s: float = 0.0) -> Path:
    """A file last modified age_s ago by the process's clock. The file system stamps files with the real
    time, which a shifted clock (faketime, a test under another date) does not move: stamp it ourselves."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


# --- settled_files / new_files (pure) -------------------------------------------------------------------


def test_file_written_just_now_is_not_settled_then_is(tmp_path):
    path = _write(tmp_path / "customers" / "export.csv")
    now = time.time()
    assert settled_files([path], now) == {}
    later = path.stat().st_mtime + SETTLE_SECONDS
    settled = settled_files([path], later)
    assert list(settled) == [str(path)]
    assert settled[str(path)] == [path.stat().st_size, path.stat().st_mtime]


def test_vanished_file_is_ignored(tmp_path):
    assert settled_files([tmp_path / "gone.csv"], time.time() + 3600) == {}


def test_new_files_sees_new_and_changed_only():
    seen = {"a.csv": [10, 1.0], "b.csv": [20, 2.0]}
    current = {"a.csv": [10, 1.0], "b.csv": [21, 3.0], "c.csv": [5, 4.0]}
    assert new_files(seen, current) == ["b.csv", "c.csv"]
    assert new_files(current, current) == []
    assert new_files({}, current) == ["a.csv", "b.csv", "c.csv"]


# --- the sensors, with a landing folder in tmp_path ----------------------------------------------------


def _sensor_context(landing: Path) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(resources={"landing": LandingResource(path=str(landing))})


def test_landing_sensor_requests_one_run_per_new_settled_file_set(tmp_path):
    landing = tmp_path / "landing"
    ctx = _sensor_context(landing)
    assert isinstance(landing_sensor(ctx), dg.SkipReason)  # no folder yet

    _write(landing / "customers" / "fresh.csv")  # written just now: not settled
    _write(landing / "customers" / ".partial.csv", age_s=600)  # dot-file: being written, never counts
    _write(landing / "customers" / "_tmp.csv", age_s=600)
    _write(landing / "customers" / "upload.csv.tmp", age_s=600)
    assert isinstance(landing_sensor(ctx), dg.SkipReason)

    _write(landing / "customers" / "settled.csv", age_s=600)
    first = landing_sensor(ctx)
    assert isinstance(first, dg.RunRequest)
    assert first.run_key and first.run_key.startswith("ingest_job:")
    assert first.tags["nachfass/new_files"] == "1"

    again = landing_sensor(ctx)  # nothing changed since the cursor
    assert isinstance(again, dg.SkipReason)

    # the fresh file settles: a new request with a different run key
    past = time.time() - 600
    os.utime(landing / "customers" / "fresh.csv", (past, past))
    second = landing_sensor(ctx)
    assert isinstance(second, dg.RunRequest)
    assert second.run_key != first.run_key
    assert second.tags["nachfass/new_files"] == "1"
    assert isinstance(landing_sensor(ctx), dg.SkipReason)


def test_landing_sensor_ignores_folders_outside_the_contract(tmp_path):
    landing = tmp_path / "landing"
    _write(landing / "not_a_table" / "x.csv", age_s=600)
    _write(landing / "sendgrid_events" / "batch.ndjson", "{}\n", age_s=600)
    assert isinstance(landing_sensor(_sensor_context(landing)), dg.SkipReason)


def test_events_sensor_picks_settled_ndjson_only(tmp_path):
    landing = tmp_path / "landing"
    folder = landing / "sendgrid_events"
    _write(folder / ".incoming.ndjson", "{}\n", age_s=600)
    _write(folder / "incoming.ndjson.tmp", "{}\n", age_s=600)
    _write(folder / "now.ndjson", "{}\n")
    ctx = _sensor_context(landing)
    assert isinstance(events_sensor(ctx), dg.SkipReason)
    _write(folder / "old.ndjson", "{}\n", age_s=600)
    request = events_sensor(ctx)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key.startswith("events_job:")
    assert isinstance(events_sensor(ctx), dg.SkipReason)


def test_sensors_target_their_jobs_and_start_stopped():
    assert landing_sensor.job_name == "ingest_job"
    assert events_sensor.job_name == "events_job"
    for sensor in (landing_sensor, events_sensor):
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


# --- schedules -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def defs(dbt_manifest):
    from dagster_project.definitions import defs

    return defs


@pytest.mark.parametrize(
    ("name", "job", "campaigns", "cron", "tick", "slot", "slot_end"),
    [
        # a 15-minute slot's run fires at its end and decides as of that moment
        (
            "frequent_mails_schedule",
            "frequent_mails_job",
            FREQUENT_CAMPAIGNS,
            "*/15 * * * *",
            datetime(2026, 11, 24, 11, 0, tzinfo=ZoneInfo("Europe/Berlin")),
            "2026-11-24-10:45",
            datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        ),
        # the daily slot "2026-11-23" runs from 09:00 that day to 09:00 the next, when its tick fires
        (
            "daily_mails_schedule",
            "daily_mails_job",
            DAILY_CAMPAIGNS,
            "0 9 * * *",
            datetime(2026, 11, 24, 9, 0, tzinfo=ZoneInfo("Europe/Berlin")),
            "2026-11-23",
            datetime(2026, 11, 24, 8, 0, tzinfo=UTC),
        ),
    ],
)
def test_schedule_ticks_run_the_slot_that_ended_as_of_its_end(
    defs, name, job, campaigns, cron, tick, slot, slot_end
):
    schedule = defs.resolve_schedule_def(name)
    assert schedule.job_name == job
    assert schedule.cron_schedule == cron
    assert schedule.execution_timezone == "Europe/Berlin"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED

    with dg.build_schedule_context(scheduled_execution_time=tick) as ctx:
        request = schedule.evaluate_tick(ctx).run_requests[0]
    assert request.partition_key == slot
    config = request.run_config
    assert parse_as_of(config["resources"]["clock"]["config"]["as_of"]) == slot_end == tick
    for op in (RENDER_OP, SEND_OP):
        assert config["ops"][op]["config"]["campaigns"] == campaigns
    assert config["ops"] == JOB_CAMPAIGN_CONFIG[job]["ops"]


def test_any_slot_can_be_backfilled_with_its_own_as_of(defs):
    """A backfill of a missed slot gets the slot's end as as_of, whatever day it runs on."""
    job = defs.resolve_job_def("frequent_mails_job")
    keys = job.partitions_def.get_partition_keys()
    assert keys[0] == "2026-11-01-00:00" and "2026-11-24-10:00" in keys
    config = job.get_run_config_for_partition_key("2026-11-24-10:00")
    as_of = parse_as_of(config["resources"]["clock"]["config"]["as_of"])
    assert as_of == datetime(2026, 11, 24, 10, 15, tzinfo=ZoneInfo("Europe/Berlin"))
    daily = defs.resolve_job_def("daily_mails_job").get_run_config_for_partition_key("2026-11-28")
    assert parse_as_of(daily["resources"]["clock"]["config"]["as_of"]) == datetime(
        2026, 11, 29, 9, 0, tzinfo=ZoneInfo("Europe/Berlin")
    )


def test_every_job_queues_as_a_warehouse_writer(defs):
    for name in ALL_JOBS:
        assert defs.resolve_job_def(name).tags.get("nachfass/warehouse") == "writer", name


def test_every_campaign_is_scheduled_by_its_cadence():
    assert sorted(FREQUENT_CAMPAIGNS) == [
        "abandoned_cart",
        "checkout_recovery",
        "order_thanks",
        "shipping_update",
    ]
    assert sorted(DAILY_CAMPAIGNS) == ["cross_sell", "reactivation", "review_request", "support_followup"]
    scheduled = [
        c for config in JOB_CAMPAIGN_CONFIG.values() for c in config["ops"][RENDER_OP]["config"]["campaigns"]
    ]
    assert sorted(scheduled) == sorted(CAMPAIGNS)  # each once


# --- jobs ----------------------------------------------------------------------------------------------


def _selected(defs, job_name: str) -> set[dg.AssetKey]:
    return set(defs.resolve_job_def(job_name).asset_layer.selected_asset_keys)


def test_all_jobs_exist_and_run_in_process(defs):
    for name in ALL_JOBS:
        job = defs.resolve_job_def(name)
        # DuckDB allows one writing process: steps must never run in parallel processes.
        assert job.executor_def is dg.in_process_executor, name
        assert job.executor_def.name == "in_process"


def test_scheduled_jobs_render_and_send(defs):
    for name in SCHEDULED_JOBS:
        selected = _selected(defs, name)
        assert {RENDERED, SENT, CANDIDATES} <= selected, name
        assert dg.AssetKey(["raw", "customers"]) in selected
        assert dg.AssetKey(["events", "sendgrid_events"]) in selected


def test_frequent_job_leaves_analytics_out(defs):
    frequent = _selected(defs, "frequent_mails_job")
    assert not [key for key in frequent if key.path[0] == "analytics"]
    daily = _selected(defs, "daily_mails_job")
    assert dg.AssetKey(["analytics", "ab_results"]) in daily


def test_a_cadence_job_builds_the_segments_of_its_own_campaigns(defs):
    """Each scheduled job builds its campaigns' segments and what they read, not the other cadences'
    segments nor what only those need."""
    frequent = {key.path[-1] for key in _selected(defs, "frequent_mails_job")}
    daily = {key.path[-1] for key in _selected(defs, "daily_mails_job")}
    for spec in MAIL_JOB_SPECS:
        selected = {key.path[-1] for key in _selected(defs, spec.job_name)}
        assert set(spec.campaigns) <= selected, spec.job_name
        assert not (set(spec.registry) - set(spec.campaigns)) & selected, spec.job_name
    assert {"cross_sell", "reactivation", "review_request", "support_followup"} <= daily
    # reactivation's order gaps and the support tickets only the daily campaigns read
    assert {"int_customer_order_gaps", "stg_support_tickets"} <= daily - frequent
    # what the cart reminder reads stays, recommendations included
    cart = {"int_carts", "int_product_recommendations", "int_recommendation_lists", "mail_candidates"}
    assert cart <= frequent
    # the carts only the cart campaigns read are the 15-minute job's; the recommendations, which the daily
    # campaigns read too, are built by both
    assert "int_carts" in frequent - daily
    assert {"int_product_recommendations", "int_recommendation_lists", "mail_candidates"} <= daily


def test_a_replay_tick_builds_what_the_live_job_of_its_campaigns_builds(defs, dbt_manifest):
    """A replay's tick that sends one cadence's campaigns re-creates the models that cadence's live job
    builds up to mail_candidates and no others (replay.campaign_selection mirrors the job's selection)."""
    import json

    from nachfass.core.campaigns import campaigns_by_cron
    from nachfass.core.replay import campaign_selection, tick_plan

    manifest = json.loads(dbt_manifest.read_text(encoding="utf-8"))
    models = {
        node["name"]: uid for uid, node in manifest["nodes"].items() if node["resource_type"] == "model"
    }
    graph = defs.resolve_asset_graph()
    upstream = graph.get(dg.AssetKey(["eligibility", "mail_candidates"])).parent_keys
    for spec in MAIL_JOB_SPECS:
        job = _selected(defs, spec.job_name)
        # the dbt models of the job up to mail_candidates
        wanted = {dg.AssetKey(["eligibility", "mail_candidates"])}
        stack = list(upstream)
        while stack:
            key = stack.pop()
            if key in job and key not in wanted:
                wanted.add(key)
                stack += graph.get(key).parent_keys
        live = {models[key.path[-1]] for key in wanted if key.path[-1] in models}
        # a replay's tick at which only this job's schedule fired
        registry = load_campaigns(check_templates=False)
        plan = tick_plan({spec.cron}, campaigns_by_cron(registry)) or frozenset(registry)
        replayed = campaign_selection(manifest, plan, set(registry))
        assert replayed == live, spec.job_name
        if spec.job_name == "frequent_mails_job":
            assert "model.nachfass.int_customer_order_gaps" not in replayed
            assert "model.nachfass.int_product_recommendations" in replayed


def test_a_replay_tick_builds_the_campaigns_of_every_job_that_fired():
    """At the tick after 09:00 both live jobs ran, each building its own campaigns: the tick builds
    everything; at another tick only the 15-minute job's campaigns."""
    from nachfass.core.campaigns import CADENCES, campaigns_by_cron
    from nachfass.core.replay import tick_plan

    by_cron = campaigns_by_cron(load_campaigns(check_templates=False))
    frequent, daily = CADENCES["every_15_minutes"], CADENCES["daily"]
    assert tick_plan({frequent}, by_cron) == frozenset(FREQUENT_CAMPAIGNS)
    assert tick_plan({daily}, by_cron) == frozenset(DAILY_CAMPAIGNS)
    assert tick_plan({frequent, daily}, by_cron) is None  # every campaign
    assert tick_plan(set(), by_cron) is None  # nothing fired: everything, to record the decisions


def test_main_job_is_everything(defs):
    everything = set(defs.resolve_asset_graph().materializable_asset_keys)
    assert _selected(defs, "nachfass_job") == everything


def test_ingest_and_events_jobs_never_send(defs):
    ingest = _selected(defs, "ingest_job")
    assert ingest and all(key.path[0] == "raw" for key in ingest)
    events = _selected(defs, "events_job")
    assert dg.AssetKey(["events", "sendgrid_events"]) in events
    assert dg.AssetKey(["analytics", "ab_results"]) in events
    assert not {RENDERED, SENT} & events


def test_job_campaign_config_matches_the_jobs_partitions(defs):
    for name in SCHEDULED_JOBS:
        # run_job() passes JOB_CAMPAIGN_CONFIG explicitly for an as_of outside a slot: same campaigns
        job = defs.resolve_job_def(name)
        key = job.partitions_def.get_partition_keys()[-1]
        assert job.get_run_config_for_partition_key(key)["ops"] == JOB_CAMPAIGN_CONFIG[name]["ops"]
    assert "nachfass_job" not in JOB_CAMPAIGN_CONFIG  # the main job sends every campaign


# --- asset checks --------------------------------------------------------------------------------------


def test_asset_checks_exist_and_consent_check_blocks(defs):
    specs = {spec.key: spec for checks_def in defs.asset_checks or [] for spec in checks_def.check_specs}
    consent = dg.AssetCheckKey(CANDIDATES, "marketing_mails_have_consent")
    assert consent in specs and specs[consent].blocking
    unique = dg.AssetCheckKey(SENT, "ledger_trigger_keys_unique")
    assert unique in specs and specs[unique].blocking
    assert dg.AssetCheckKey(SENT, "no_stale_unknown_sends") in specs
    assert dg.AssetCheckKey(dg.AssetKey(["raw", "customers"]), "quarantine_share_customers") in specs
    graph_checks = defs.resolve_asset_graph().asset_check_keys
    assert consent in graph_checks


def test_scheduled_jobs_run_the_consent_check(defs):
    consent = dg.AssetCheckKey(CANDIDATES, "marketing_mails_have_consent")
    for name in (*SCHEDULED_JOBS, "nachfass_job"):
        job = defs.resolve_job_def(name)
        checks = job.asset_layer.asset_graph.asset_check_keys
        assert consent in checks, name
