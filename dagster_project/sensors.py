"""Sensors on the landing folder: new export files start ingestion, new event files start event ingest.

A file is picked up only when it is complete: writers that follow the contract write a dot-file or
`*.tmp` and rename it (never seen here), and as a guard for writers that don't, a file must have kept its
size and modification time for `SETTLE_SECONDS` before it counts.
"""

import hashlib
import json
import time
from pathlib import Path

import dagster as dg

from dagster_project.jobs import events_job, ingest_job
from dagster_project.resources import LandingResource
from nachfass.core.contract import EXPORT_TABLES
from nachfass.core.events import event_files
from nachfass.core.ingest import landing_files

SETTLE_SECONDS = 10


def settled_files(files: list[Path], now: float, settle_seconds: float = SETTLE_SECONDS) -> dict[str, list]:
    """{path: [size, mtime]} of files untouched for settle_seconds (pure, for tests)."""
    out: dict[str, list] = {}
    for path in files:
        try:
            stat = path.stat()
        except FileNotFoundError:  # renamed or removed between listing and stat
            continue
        if now - stat.st_mtime >= settle_seconds:
            out[str(path)] = [stat.st_size, stat.st_mtime]
    return out


def new_files(seen: dict[str, list], current: dict[str, list]) -> list[str]:
    """Files that are new or changed since the cursor."""
    return sorted(path for path, sig in current.items() if seen.get(path) != sig)


def _sensor_step(context: dg.SensorEvaluationContext, files: list[Path], job_name: str):
    seen = json.loads(context.cursor) if context.cursor else {}
    current = settled_files(files, time.time())
    fresh = new_files(seen, current)
    if not fresh:
        return dg.SkipReason(f"no new settled files ({len(files)} files in the folder)")
    context.update_cursor(json.dumps(current))
    digest = hashlib.sha256(json.dumps({p: current[p] for p in fresh}).encode()).hexdigest()[:16]
    return dg.RunRequest(run_key=f"{job_name}:{digest}", tags={"nachfass/new_files": str(len(fresh))})


@dg.sensor(
    job=ingest_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Starts ingest_job when new export files have settled in the landing folder.",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingResource):
    root = landing.resolved_path()
    files = [path for table in EXPORT_TABLES for path in landing_files(root, table)]
    return _sensor_step(context, files, "ingest_job")


@dg.sensor(
    job=events_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Starts events_job when the webhook receiver has written new SendGrid event files.",
)
def events_sensor(context: dg.SensorEvaluationContext, landing: LandingResource):
    return _sensor_step(context, event_files(landing.resolved_path()), "events_job")


sensors = [landing_sensor, events_sensor]
