"""Secrets never leave the environment: a full run with recognisable fake secrets against the local
SendGrid-compatible server, then every place a secret could end up is searched — the CLI's output, Dagster's
event log and run storage, every table of the warehouse, the outbox and previews, dbt's target/ and logs.
A run with a key the server refuses fails naming SENDGRID_API_KEY, sends nothing and echoes no key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from tests_support import DBT_DIR, REPO_ROOT

from nachfass.devtools.event_simulator import generate_keypair
from nachfass.devtools.sendgrid_server import run_sandbox

pytestmark = pytest.mark.slow

AS_OF = "2026-11-24T10:00:00Z"
API_KEY = "SG.fake-key-DO-NOT-LEAK-1234567890"
LINK_KEY = "link-key-DO-NOT-LEAK-0987654321"
BAD_KEY = "SG.wrong-key-NEVER-ECHO-5555555555"
SECRET_ENV = (
    "SENDGRID_API_KEY",
    "SENDGRID_API_HOST",
    "NACHFASS_LINK_SIGNING_KEY",
    "SENDGRID_WEBHOOK_PUBLIC_KEY",
)


def _needles(public_key: str, *extra: str) -> list[str]:
    # Whole secrets and their distinctive parts (a truncated echo is a leak too). Every P-256 public key
    # starts with the same DER prefix, so its tail is what identifies it.
    return [API_KEY, LINK_KEY, "DO-NOT-LEAK", public_key, public_key[-40:], *extra]


def _hits(text: str, needles: list[str]) -> list[str]:
    return [n for n in needles if n in text]


def _scan_files(root: Path, needles: list[str], newer_than: float = 0.0) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    if not root.exists():
        return found
    encoded = [(n, n.encode()) for n in needles]
    for path in root.rglob("*"):
        if not path.is_file() or path.stat().st_mtime < newer_than:
            continue
        data = path.read_bytes()
        hits = [n for n, raw in encoded if raw in data]
        if hits:
            found[str(path)] = hits
    return found


def _scan_warehouse(db: Path, needles: list[str]) -> dict[str, list[str]]:
    """Every table and view, every column (cast to text, JSON and nested values included)."""
    found: dict[str, list[str]] = {}
    conn = duckdb.connect(str(db), read_only=True)
    try:
        relations = conn.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_catalog = current_database()"
        ).fetchall()
        assert len(relations) > 20
        for (name,) in relations:
            for needle in needles:
                n = conn.execute(f"select count(*) from {name} as t where contains(t::varchar, ?)", [needle])
                if n.fetchone()[0]:
                    found.setdefault(name, []).append(needle)
    finally:
        conn.close()
    return found


def _scan_event_log(dagster_home: Path, needles: list[str]) -> tuple[int, dict[str, list[str]]]:
    """All runs and all their event records of the persistent instance, serialized."""
    import dagster as dg
    from dagster._serdes import serialize_value

    found: dict[str, list[str]] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(dagster_home))
        instance = dg.DagsterInstance.get()
        try:
            runs = instance.get_runs()
            events = 0
            for run in runs:
                hits = _hits(serialize_value(run), needles)
                if hits:
                    found[f"run {run.run_id}"] = hits
                for record in instance.all_logs(run.run_id):
                    events += 1
                    hits = _hits(serialize_value(record), needles)
                    if hits:
                        found[f"event {record.dagster_event_type} {run.run_id}"] = hits
        finally:
            instance.dispose()
    return events, found


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    from dagster_project.resources import parse_as_of
    from nachfass.devtools.datagen.generate import generate_exports

    landing = tmp_path_factory.mktemp("secrets") / "landing"
    generate_exports(landing, customers=200, seed=5, as_of=parse_as_of(AS_OF))
    return landing


def _locations(root: Path, landing: Path) -> dict[str, str]:
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "NACHFASS_LANDING": str(landing),
        "NACHFASS_WAREHOUSE": str(root / "warehouse.duckdb"),
        "NACHFASS_OUTBOX": str(root / "outbox"),
        "NACHFASS_DATA": str(root / "data"),  # previews
        "DAGSTER_HOME": str(home),
    }


def test_secrets_appear_nowhere(tmp_path, landing, dbt_manifest):
    private_key, public_key = generate_keypair()
    del private_key
    needles = _needles(public_key)
    locations = _locations(tmp_path, landing)
    started = time.time() - 1
    with run_sandbox(api_key=API_KEY) as sandbox:
        env = {
            **{k: v for k, v in os.environ.items() if k not in SECRET_ENV},
            **locations,
            "SENDGRID_API_KEY": API_KEY,
            "SENDGRID_API_HOST": sandbox.url,
            "NACHFASS_LINK_SIGNING_KEY": LINK_KEY,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": public_key,
        }
        result = subprocess.run(
            [sys.executable, "-m", "nachfass.cli.main", "run", "--as-of", AS_OF, "--verbose"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        received = sandbox.messages()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    # mails really went out, through the server that only accepts this key
    conn = duckdb.connect(locations["NACHFASS_WAREHOUSE"], read_only=True)
    try:
        sent = conn.execute(
            "select count(*) from mail.sends where status = 'sent' and transport = 'sendgrid'"
        ).fetchone()[0]
    finally:
        conn.close()
    assert sent > 0 and len(received) == sent
    assert "dbt" in output and len(output) > 1000  # verbose: dbt's and Dagster's log lines are in there

    assert _hits(output, needles) == []
    events, in_event_log = _scan_event_log(Path(locations["DAGSTER_HOME"]), needles)
    assert events > 50 and in_event_log == {}
    # the instance's files as bytes: run/event sqlite storage, compute logs, schedules
    assert _scan_files(Path(locations["DAGSTER_HOME"]), needles) == {}
    assert _scan_warehouse(Path(locations["NACHFASS_WAREHOUSE"]), needles) == {}
    assert _scan_files(Path(locations["NACHFASS_WAREHOUSE"]).parent, needles) == {}  # incl. .wal
    assert list((Path(locations["NACHFASS_DATA"]) / "previews").rglob("*.html")), "previews were written"
    assert _scan_files(Path(locations["NACHFASS_DATA"]), needles) == {}
    assert _scan_files(Path(locations["NACHFASS_OUTBOX"]), needles) == {}
    for folder in ("target", "logs"):
        assert _scan_files(DBT_DIR / folder, needles, newer_than=started) == {}
    # the payloads the server got carry signed links, never the signing key itself
    assert _hits(repr(received), needles) == []


def test_refused_key_fails_the_run_naming_the_setting_only(
    tmp_path, landing, dbt_manifest, monkeypatch, capfd
):
    """In process, with a persistent instance: the server wants API_KEY, the environment has BAD_KEY."""
    from nachfass.cli.main import run_job

    public_key = generate_keypair()[1]
    needles = _needles(public_key, BAD_KEY, "NEVER-ECHO")
    locations = _locations(tmp_path, landing)
    with run_sandbox(api_key=API_KEY) as sandbox:
        for name, value in locations.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("SENDGRID_API_KEY", BAD_KEY)
        monkeypatch.setenv("SENDGRID_API_HOST", sandbox.url)
        monkeypatch.setenv("NACHFASS_LINK_SIGNING_KEY", LINK_KEY)
        monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", public_key)
        ok = run_job(AS_OF)
        received = sandbox.messages()
        stats = sandbox.stats()
    captured = capfd.readouterr()
    output = captured.out + captured.err

    assert not ok
    assert received == [] and stats.get("requests", 0) >= 1
    assert "SENDGRID_API_KEY" in output and "mail__sent_mails" in output
    assert _hits(output, needles) == []

    conn = duckdb.connect(locations["NACHFASS_WAREHOUSE"], read_only=True)
    try:
        by_status = dict(conn.execute("select status, count(*) from mail.sends group by 1").fetchall())
    finally:
        conn.close()
    assert "sent" not in by_status and "unknown" not in by_status, by_status
    # the refused request was certainly not accepted: no claim is left as `sending`
    assert "sending" not in by_status, by_status

    events, in_event_log = _scan_event_log(Path(locations["DAGSTER_HOME"]), needles)
    assert events > 10 and in_event_log == {}
    assert _scan_files(Path(locations["DAGSTER_HOME"]), needles) == {}
    assert _scan_warehouse(Path(locations["NACHFASS_WAREHOUSE"]), needles) == {}
