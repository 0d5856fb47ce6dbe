"""`dagster dev` from the repo's workspace.yaml, as the data team starts it: the asset graph, jobs, schedules
and sensors load, and the main job launched through GraphQL (as the UI's "Materialize" / "Launch run" does)
runs end to end into a warehouse and outbox in tmp_path."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from tests_support import ALL_JOBS, REPO_ROOT

# The sensor test reads the clock (sensors compare file times with it, the schedule slot is the clock's):
# CI runs it again with the clock 400 days ahead. The graph test's run has a fixed as_of, as the CLI
# runs that do pass through that pass; it stays out of it to keep CI well under an hour.
pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 120
RUN_TIMEOUT_S = 150
AS_OF = "2026-11-24T10:00:00Z"
SECRET_ENV = (
    "SENDGRID_API_KEY",
    "SENDGRID_API_HOST",
    "NACHFASS_LINK_SIGNING_KEY",
    "SENDGRID_WEBHOOK_PUBLIC_KEY",
)

EXPECTED_ASSETS = {
    # ingest
    "raw/customers": "ingest",
    "raw/consents": "ingest",
    "raw/session_events": "ingest",
    "raw/orders": "ingest",
    # dbt
    "staging/stg_customers": "dbt",
    "segments/abandoned_cart": "dbt",
    "eligibility/mail_candidates": "dbt",
    "analytics/ab_results": "dbt",
    # render, send, events
    "mail/rendered_mails": "mail",
    "mail/sent_mails": "mail",
    "events/sendgrid_events": "events",
}
JOBS = set(ALL_JOBS)
SCHEDULES = {"frequent_mails_schedule", "daily_mails_schedule", "warehouse_checks_schedule"}
SENSORS = {"landing_sensor", "events_sensor"}

REPOSITORIES = """
{ repositoriesOrError { __typename
    ... on RepositoryConnection { nodes {
        name location { name }
        jobs { name }
        schedules { name cronSchedule executionTimezone scheduleState { status } }
        sensors { name sensorState { status } }
    } }
    ... on PythonError { message }
} }
"""
LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""
RUN_STATUS = """
query Status($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }
"""
RUN_FAILURE = """
query Failure($runId: ID!) { logsForRun(runId: $runId) { __typename
  ... on EventConnection { events { __typename ... on MessageEvent { message stepKey level } } } } }
"""


def without_faketime(env: dict[str, str]) -> dict[str, str]:
    """The environment for `dagster dev` without libfaketime (CI's shifted-clock pass runs the suite under
    it). libfaketime shifts CLOCK_MONOTONIC too, and glibc's sem_clockwait, which Python's timed lock
    waits use, is not intercepted: a wait with a timeout then never returns, and the Dagster daemon's
    loops (the run queue among them) stall. The runs launched here pass their logical time as run config,
    so what they decide does not depend on the calendar either way; this process stays shifted."""
    cleaned = {k: v for k, v in env.items() if not k.startswith("FAKETIME")}
    preload = [p for p in cleaned.get("LD_PRELOAD", "").split() if "faketime" not in p]
    if preload:
        cleaned["LD_PRELOAD"] = " ".join(preload)
    else:
        cleaned.pop("LD_PRELOAD", None)
    return cleaned


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


def _wait_for_graphql(url: str, proc: subprocess.Popen, log: Path) -> dict:
    """Poll until the code location has loaded (the repository query answers with our jobs)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            data = _graphql(url, REPOSITORIES, timeout=10)["repositoriesOrError"]
            if data["__typename"] == "RepositoryConnection" and data["nodes"]:
                return data
            last_error = str(data)
        except (urllib.error.URLError, ConnectionError, TimeoutError, AssertionError, OSError) as exc:
            last_error = repr(exc)
        time.sleep(1)
    pytest.fail(f"no GraphQL answer within {STARTUP_TIMEOUT_S} s ({last_error}):\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """The whole process group: webserver, daemon, code server and any run worker."""
    if proc.poll() is not None:
        return
    pgid = os.getpgid(proc.pid)
    os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # stragglers (a run worker or code server) of the same group
    proc.wait(timeout=10)


@pytest.fixture
def dagster_dev(tmp_path, dbt_manifest):
    from dagster_project.resources import parse_as_of
    from nachfass.cli.main import prepare_dagster_home
    from nachfass.devtools.datagen.generate import generate_exports

    locations = {
        "NACHFASS_WAREHOUSE": tmp_path / "warehouse.duckdb",
        "NACHFASS_LANDING": tmp_path / "landing",
        "NACHFASS_OUTBOX": tmp_path / "outbox",
        "NACHFASS_DATA": tmp_path / "data",
        "DAGSTER_HOME": tmp_path / "dagster_home",
    }
    prepare_dagster_home(locations["DAGSTER_HOME"])  # as `nachfass dev` does: the project's run queue
    generate_exports(locations["NACHFASS_LANDING"], customers=200, seed=3, as_of=parse_as_of(AS_OF))
    env = without_faketime({k: v for k, v in os.environ.items() if k not in SECRET_ENV})
    env.update({k: str(v) for k, v in locations.items()})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    port = _free_port()
    log = tmp_path / "dagster_dev.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster"),
                "dev",
                "-w",
                str(REPO_ROOT / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole below
        )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        repositories = _wait_for_graphql(url, proc, log)
        yield {"url": url, "repositories": repositories, "log": log, **locations}
    finally:
        _stop(proc)


def test_dagster_dev_shows_the_graph_and_runs_the_main_job(dagster_dev):
    url = dagster_dev["url"]

    # (a) the asset graph with its groups
    nodes = _graphql(url, "{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
    missing = set(EXPECTED_ASSETS) - set(groups)
    assert not missing, f"assets missing from the graph: {sorted(missing)}"
    for key in ("mail/rendered_mails", "mail/sent_mails"):
        assert groups[key] == "mail"
    assert len({k for k in groups if k.startswith("staging/")}) >= 5
    assert len({k for k in groups if k.startswith("segments/")}) >= 5

    # jobs, schedules (stopped: nothing is sent until someone turns them on), sensors
    (repo,) = dagster_dev["repositories"]["nodes"]
    assert {j["name"] for j in repo["jobs"]} >= JOBS
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert set(schedules) == SCHEDULES
    for schedule in schedules.values():
        assert schedule["scheduleState"]["status"] == "STOPPED"
        assert schedule["executionTimezone"] == "Europe/Berlin"
    sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
    assert sensors == dict.fromkeys(SENSORS, "STOPPED")

    # (b) launch the main job as the UI does, with the logical time in run config
    launched = _graphql(
        url,
        LAUNCH,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": repo["location"]["name"],
                    "repositoryName": repo["name"],
                    "jobName": "nachfass_job",
                },
                "runConfigData": {"resources": {"clock": {"config": {"as_of": AS_OF}}}},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    deadline = time.monotonic() + RUN_TIMEOUT_S
    status = None
    while time.monotonic() < deadline:
        status = _graphql(url, RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    if status != "SUCCESS":
        events = _graphql(url, RUN_FAILURE, {"runId": run_id})["logsForRun"].get("events", [])
        errors = [e.get("message") for e in events if e.get("level") in ("ERROR", "CRITICAL")]
        pytest.fail(f"run {run_id} ended {status}: {errors[-5:]}\n{dagster_dev['log'].read_text()[-3000:]}")

    conn = duckdb.connect(str(dagster_dev["NACHFASS_WAREHOUSE"]), read_only=True)
    try:
        sends = dict(conn.execute("select status, count(*) from mail.sends group by 1").fetchall())
        run_ids = conn.execute("select distinct run_id from mail.sends where status = 'sent'").fetchall()
    finally:
        conn.close()
    assert sends.get("sent", 0) > 0, sends
    assert run_ids == [(run_id,)]
    outbox = list(dagster_dev["NACHFASS_OUTBOX"].glob("*.json"))
    assert len(outbox) == sends["sent"]
    assert len(list(dagster_dev["NACHFASS_OUTBOX"].glob("*.eml"))) == sends["sent"]


START_SENSOR = """
mutation Start($selector: SensorSelector!) { startSensor(sensorSelector: $selector) { __typename
  ... on Sensor { sensorState { status } } ... on PythonError { message } } }
"""
RUNS = """
{ runsOrError { __typename ... on Runs { results {
    runId jobName status startTime endTime tags { key value } } } } }
"""


def _settled(path: Path, text: str) -> None:
    """A file that has stayed put for ten minutes, by the clock of `dagster dev`'s sensors: the kernel's,
    read from the file's own fresh mtime. (Under CI's shifted-clock pass this process's time.time() is 400
    days ahead while `dagster dev` runs without libfaketime: stamped by that, the file would lie in the
    sensors' future and never settle.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    stamp = path.stat().st_mtime - 600
    os.utime(path, (stamp, stamp))


@pytest.mark.clock
def test_sensor_runs_and_a_schedule_slot_queue_one_writer_at_a_time(dagster_dev):
    """The landing sensor (a new export), the events sensor (a new event file) and a 15-minute slot of
    the frequent job fire together: with the shipped run queue (config/dagster.yaml) they run one after
    another on the one DuckDB file, and none fails on its lock."""
    from dagster_project.definitions import defs

    url = dagster_dev["url"]
    (repo,) = dagster_dev["repositories"]["nodes"]
    location, repository = repo["location"]["name"], repo["name"]
    landing = dagster_dev["NACHFASS_LANDING"]
    _settled(
        landing / "customers" / "late.csv",
        "customer_id,email,created_at\nC_LATE,late@example.com,2026-11-24T09:00:00Z\n",
    )
    event = {
        "sg_event_id": "ev-queue-1",
        "event": "processed",
        "email": "late@example.com",
        "timestamp": 1795510800,
    }
    _settled(landing / "sendgrid_events" / "batch-1.ndjson", json.dumps(event) + "\n")

    slot = "2026-11-24-10:45"  # ends 11:00 in Berlin = AS_OF
    job = defs.resolve_job_def("frequent_mails_job")
    launched = _graphql(
        url,
        LAUNCH,
        {
            "executionParams": {
                "selector": {
                    "repositoryLocationName": location,
                    "repositoryName": repository,
                    "jobName": "frequent_mails_job",
                },
                "runConfigData": job.get_run_config_for_partition_key(slot),
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": slot}]},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    for sensor in ("landing_sensor", "events_sensor"):
        selector = {"repositoryLocationName": location, "repositoryName": repository, "sensorName": sensor}
        started = _graphql(url, START_SENSOR, {"selector": selector})["startSensor"]
        assert started["__typename"] == "Sensor", started

    deadline = time.monotonic() + 3 * RUN_TIMEOUT_S
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = _graphql(url, RUNS)["runsOrError"]["results"]
        jobs = {run["jobName"] for run in runs}
        done = all(run["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run in runs)
        if {"frequent_mails_job", "ingest_job", "events_job"} <= jobs and done:
            break
        time.sleep(2)
    assert {run["jobName"] for run in runs} >= {"frequent_mails_job", "ingest_job", "events_job"}, runs
    assert all(run["status"] == "SUCCESS" for run in runs), runs
    by_start = sorted(runs, key=lambda run: run["startTime"])
    for earlier, later in zip(by_start, by_start[1:], strict=False):
        assert later["startTime"] >= earlier["endTime"], f"two writers at once: {earlier} and {later}"
    conn = duckdb.connect(str(dagster_dev["NACHFASS_WAREHOUSE"]), read_only=True)
    try:
        assert conn.execute("select count(*) from raw.sendgrid_events").fetchone()[0] == 1
        assert conn.execute("select count(*) from raw.customers where customer_id = 'C_LATE'").fetchone()[0]
        slot_run = conn.execute("select partition_key, as_of from mail.runs").fetchall()
    finally:
        conn.close()
    assert slot_run == [(slot, datetime(2026, 11, 24, 10, 0))]
