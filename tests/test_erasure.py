"""DSGVO erasure through the real pipeline: generated exports → main job → `nachfass erase` → nothing about
the person left in the warehouse or the outbox, the ledger pseudonymised, SendGrid's erasejob requested; a
later export that brings the person back does not mail them until they confirm consent anew."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import sendgrid
from tests_support import REPO_ROOT

from nachfass.cli.main import main
from nachfass.core import file_lock
from nachfass.devtools.sendgrid_server import run_sandbox
from nachfass.privacy.erasure import SENDGRID_ERASE_BATCH, compact_warehouse, erase_person, salted_hash

pytestmark = pytest.mark.slow

AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ERASED_AS_OF = AS_OF + timedelta(hours=3)  # the erasure's logical time (`nachfass erase --as-of`)
PERSON_ID = "C0000001"  # scenario: abandoned cart step 1 due, consent confirmed
PERSON_EMAIL = "juergen.mueller1@example.de"
API_KEY = "SG.erasure-test-key-0123456789"
SECRET_ENV = (
    "SENDGRID_API_KEY",
    "SENDGRID_API_HOST",
    "NACHFASS_LINK_SIGNING_KEY",
    "SENDGRID_WEBHOOK_PUBLIC_KEY",
)
SCANNED_SCHEMAS = ("raw", "staging", "intermediate", "segments", "eligibility", "analytics", "mail")
COPY_SCHEMAS = (*SCANNED_SCHEMAS, "replay", "backtest")  # what a replay's or backtest's files hold besides
EXEMPT = {"mail.sends", "mail.erasures"}  # pseudonymised / bookkeeping, checked separately
NEW_CART = "KSERASED1"
HOLIDAYS = {(12, 24), (12, 25), (12, 26), (12, 31), (1, 1)}


def _env(tmp: Path) -> dict[str, str]:
    return {
        "NACHFASS_WAREHOUSE": str(tmp / "warehouse.duckdb"),
        "NACHFASS_LANDING": str(tmp / "landing"),
        "NACHFASS_OUTBOX": str(tmp / "outbox"),
        "NACHFASS_DATA": str(tmp / "data"),  # previews of the run land here, not in the repo
    }


def _run(as_of: datetime) -> None:
    from nachfass.cli.main import run_job

    assert run_job(as_of.isoformat()), f"main job failed as of {as_of}"


def _connect(world: dict, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(world["warehouse"]), read_only=read_only)


def _traces(
    conn: duckdb.DuckDBPyConnection,
    needles: dict[str, str],
    schemas: tuple[str, ...] = SCANNED_SCHEMAS,
    exempt: set[str] = EXEMPT,
) -> dict[str, int]:
    """{table: rows} of every table/view in the scanned schemas whose row, cast to text (all columns, JSON
    and nested values included), contains the address or one of the ids (as a whole token)."""
    relations = conn.execute(
        f"select table_schema || '.' || table_name from information_schema.tables "
        f"where table_schema in ({','.join('?' * len(schemas))})",
        list(schemas),
    ).fetchall()
    found: dict[str, int] = {}
    for (name,) in relations:
        if name in exempt:
            continue
        conditions = [f"contains(lower(t::varchar), '{needles['email']}')"]
        for token in needles["ids"]:
            conditions.append(f"regexp_matches(t::varchar, '(^|[^0-9A-Za-z]){token}([^0-9A-Za-z]|$)')")
        n = conn.execute(f"select count(*) from {name} as t where {' or '.join(conditions)}").fetchone()[0]
        if n:
            found[name] = n
    return found


def _file_hits(db: Path) -> int:
    """Occurrences of the address in the bytes of the DuckDB file (and its WAL), deleted rows included."""
    needle = PERSON_EMAIL.encode()
    files = [db, db.with_name(db.name + ".wal")]
    return sum(f.read_bytes().count(needle) for f in files if f.exists())


def _write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name)  # the export contract: write hidden, then rename
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    tmp.rename(path)


def _webhook_files(landing: Path) -> dict[str, Path]:
    from nachfass.core.landing_files import write_sendgrid_batch

    def ev(n: int, email: str) -> dict:
        return {
            "sg_event_id": f"erasure-ev-{n}",
            "event": "delivered",
            "email": email,
            "timestamp": 1795000000 + n,
        }

    mixed = write_sendgrid_batch(
        landing, [ev(1, PERSON_EMAIL), ev(2, "someone.else@example.de"), ev(3, PERSON_EMAIL.upper())], AS_OF
    )
    only_person = write_sendgrid_batch(landing, [ev(4, PERSON_EMAIL)], AS_OF)
    return {"mixed": mixed, "only_person": only_person}


def _unsubscribe_file(landing: Path) -> Path:
    """The person clicked the unsubscribe link in the mail they got: the web service wrote this file."""
    from nachfass.core.landing_files import write_consent_event

    path, _ = write_consent_event(
        landing, email=PERSON_EMAIL, customer_id=PERSON_ID, event="withdrawn", occurred_at=AS_OF
    )
    return path


def _scenario_rows(landing: Path, table: str, customer_id: str) -> tuple[list[str], list[dict]]:
    with (landing / table / "scenarios.csv").open(encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), [r for r in reader if r["customer_id"] == customer_id]


def _next_send_day(after: datetime) -> datetime:
    """10:00 UTC (11:00 in Berlin) on the first working day at least a day after `after`."""
    day = (after + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    if day <= after + timedelta(hours=6):
        day += timedelta(days=1)
    while day.weekday() >= 5 or (day.month, day.day) in HOLIDAYS:
        day += timedelta(days=1)
    return day


@pytest.fixture(scope="module")
def world(tmp_path_factory, dbt_manifest):
    """Exports → main job (outbox) → erase the person with the local SendGrid server configured."""
    from nachfass.devtools.datagen.generate import generate_exports

    tmp = tmp_path_factory.mktemp("erasure")
    env = _env(tmp)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        for name in (*SECRET_ENV, "DAGSTER_HOME"):
            mp.delenv(name, raising=False)
        landing = Path(env["NACHFASS_LANDING"])
        generate_exports(landing, customers=200, seed=11, as_of=AS_OF)
        # What the web service wrote: SendGrid events about the person and others, and their unsubscribe.
        world_events = _webhook_files(landing)
        _run(AS_OF)

        world = {"tmp": tmp, "landing": landing, "warehouse": Path(env["NACHFASS_WAREHOUSE"])}
        world["outbox"] = Path(env["NACHFASS_OUTBOX"])
        with _connect(world) as conn:
            world["sends_before"] = conn.execute(
                "select count(*) from mail.sends where customer_id = ? and status = 'sent'", [PERSON_ID]
            ).fetchone()[0]
            world["order_ids"] = [
                r[0]
                for r in conn.execute(
                    "select distinct order_id from raw.orders where customer_id = ?", [PERSON_ID]
                ).fetchall()
            ]
            world["traces_before"] = _traces(conn, {"email": PERSON_EMAIL, "ids": [PERSON_ID]})
        world["outbox_before"] = sorted(p.name for p in world["outbox"].iterdir())
        # A marketer's backtest of the run's moment: two replayed warehouses, their outboxes and the results,
        # in a folder of their choosing, each with its own copy of the person.
        backtest = tmp / "my-backtests" / "pr-42"
        tick = AS_OF.isoformat()
        assert main(["backtest", "--rules", str(REPO_ROOT / "dbt"), "--from", tick, "--to", tick,
                     "--workdir", str(backtest), "--mail-files"]) == 0  # fmt: skip
        # and what a replay that died while writing its copy back leaves beside it
        interrupted = backtest / "after" / "warehouse.duckdb.new"
        interrupted.write_bytes((backtest / "after" / "warehouse.duckdb").read_bytes())
        # A replay into a file and an outbox named on the command line, beside a file that is no copy.
        replayed, replay_outbox = tmp / "elsewhere" / "replayed.duckdb", tmp / "elsewhere-mails"
        world["not_a_copy"] = tmp / "elsewhere" / "unrelated.duckdb"
        world["not_a_copy"].parent.mkdir()
        with duckdb.connect(str(world["not_a_copy"])) as other:
            other.execute("create table notes as select ? as email", [PERSON_EMAIL])
        assert main(["replay", "--warehouse", str(replayed), "--outbox", str(replay_outbox),
                     "--from", tick, "--to", tick]) == 0  # fmt: skip
        mp.setenv("NACHFASS_WAREHOUSE", env["NACHFASS_WAREHOUSE"])  # the replay pointed it at its copy
        world["copies"] = sorted([*backtest.rglob("*.duckdb"), interrupted, replayed])
        world["copy_outboxes"] = sorted([*(p for p in backtest.rglob("outbox") if p.is_dir()), replay_outbox])
        world["copy_traces_before"] = _copy_traces(world)
        world["copy_file_hits_before"] = _copy_file_hits(world)
        world_events["consent"] = _unsubscribe_file(landing)

        def erase_in_a_subprocess() -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "nachfass.cli.main", "erase", "--email", PERSON_EMAIL],
                cwd=REPO_ROOT,
                env=os.environ.copy(),
                capture_output=True,
                text=True,
                timeout=120,
            )

        # While a backtest still holds one of the copies, the erasure refuses before it erases anything.
        with duckdb.connect(str(backtest / "results.duckdb")):
            world["held"] = erase_in_a_subprocess()
        # While a replay runs its ticks on a copy in memory, only its lock says so: the erasure refuses too.
        with file_lock.hold(file_lock.lock_path(backtest / "before" / "warehouse.duckdb")):
            world["locked"] = erase_in_a_subprocess()
        with file_lock.hold(file_lock.lock_path(replayed)):
            world["replay_locked"] = erase_in_a_subprocess()
        with _connect(world) as conn:
            world["traces_while_held"] = _traces(conn, {"email": PERSON_EMAIL, "ids": [PERSON_ID]})
        # what DuckDB spilled to disk in a replay that was killed
        spill = backtest / "after" / ".warehouse.duckdb.replay" / "tmp" / "duckdb_temp_storage_DEFAULT-0.tmp"
        spill.parent.mkdir(parents=True, exist_ok=True)
        spill.write_bytes(b"\0" * 4096 + PERSON_EMAIL.encode() + b"\0" * 4096)
        world["spills"] = [spill, replayed.parent / f".{replayed.name}.replay" / "tmp" / spill.name]
        world["spills"][1].parent.mkdir(parents=True, exist_ok=True)
        world["spills"][1].write_bytes(spill.read_bytes())

        with run_sandbox(api_key=API_KEY) as sandbox:
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "nachfass.cli.main",
                    "erase",
                    "--email",
                    PERSON_EMAIL.upper(),
                    "--as-of",
                    ERASED_AS_OF.isoformat(),
                ],
                cwd=REPO_ROOT,
                env={**os.environ, "SENDGRID_API_KEY": API_KEY, "SENDGRID_API_HOST": sandbox.url},
                capture_output=True,
                text=True,
                timeout=120,
            )
            world["erasejobs"] = sandbox.erasejobs()
        assert result.returncode == 0, result.stdout + result.stderr
        world["erase_output"] = result.stdout + result.stderr
        world["file_hits_after_cli"] = _file_hits(world["warehouse"])
        world["copy_traces_after"] = _copy_traces(world)
        world["webhook_files"] = world_events
        yield world


def _copy_traces(world: dict) -> dict[str, dict[str, int]]:
    """{copy file: {table: rows naming the person}} over the backtest's files, their simulated ledgers
    included."""
    needles = {"email": PERSON_EMAIL, "ids": [PERSON_ID, *world["order_ids"]]}
    found = {}
    for path in world["copies"]:
        with duckdb.connect(str(path), read_only=True) as conn:
            traces = _traces(conn, needles, COPY_SCHEMAS, exempt=set())
        found[f"{path.parent.name}/{path.name}"] = traces
    return found


def _copy_file_hits(world: dict) -> dict[str, int]:
    return {f"{path.parent.name}/{path.name}": _file_hits(path) for path in world["copies"]}


def test_person_was_mailed_before(world):
    assert world["sends_before"] >= 1
    # The scan itself works: before the erasure it finds the person in raw, staging, eligibility, mail
    assert {"raw.customers", "raw.consents", "eligibility.mail_candidates"} <= set(world["traces_before"])


def test_no_row_names_the_person_anymore(world):
    with _connect(world) as conn:
        traces = _traces(conn, {"email": PERSON_EMAIL, "ids": [PERSON_ID, *world["order_ids"]]})
    assert traces == {}, f"rows about the erased person remain: {traces}"
    assert "erased: 1 address(es), 1 customer id(s)" in world["erase_output"]


def test_ledger_rows_are_pseudonymised(world):
    with _connect(world) as conn:
        salt = conn.execute("select salt from mail.erasure_salt").fetchone()[0]
        expected = salted_hash(salt, PERSON_EMAIL)
        rows = conn.execute(
            "select email, customer_id, email_hash, trigger_key, status from mail.sends where email_hash = ?",
            [expected],
        ).fetchall()
        leftovers = conn.execute(
            "select count(*) from mail.sends where lower(email) = ? or customer_id = ?",
            [PERSON_EMAIL, PERSON_ID],
        ).fetchone()[0]
        erasures = conn.execute("select email_hash, sendgrid_erasure_requested from mail.erasures").fetchall()
    assert leftovers == 0
    assert len([r for r in rows if r[4] == "sent"]) == world["sends_before"]
    for email, customer_id, _, trigger_key, _ in rows:
        assert email is None and customer_id is None
        assert trigger_key.startswith("erased:")
        assert PERSON_ID not in trigger_key
    assert erasures == [(expected, True)]
    assert PERSON_EMAIL not in expected and len(expected) == 64


def test_outbox_files_of_the_person_are_gone(world):
    remaining = sorted(p.name for p in world["outbox"].iterdir())
    deleted = set(world["outbox_before"]) - set(remaining)
    assert len(deleted) == 2 * world["sends_before"]  # .eml + .json per mail
    assert remaining, "the other customers' outbox files stay"
    for path in world["outbox"].iterdir():
        text = path.read_text(encoding="utf-8", errors="replace").lower()
        assert PERSON_EMAIL not in text, path.name


def test_web_service_files_of_the_person_are_rewritten(world):
    files = world["webhook_files"]
    mixed = files["mixed"].read_text(encoding="utf-8")
    assert PERSON_EMAIL not in mixed.lower()
    assert [json.loads(line)["sg_event_id"] for line in mixed.splitlines()] == ["erasure-ev-2"]
    assert not files["only_person"].exists() and not files["consent"].exists()
    for path in world["landing"].rglob("*"):
        if path.is_file() and path.parent.name in ("sendgrid_events",):
            assert PERSON_EMAIL not in path.read_text(encoding="utf-8").lower()
    assert "removed 3 SendGrid event lines from 2 landing files" in world["erase_output"]
    assert "deleted 1 unsubscribe-page consent files" in world["erase_output"]
    # The rewritten file is recorded as loaded: the next event load reads nothing again.
    from nachfass.core.events import load_events

    with _connect(world, read_only=False) as conn:
        assert load_events(conn, world["landing"]).files_loaded == 0
        assert (
            conn.execute(
                "select count(*) from raw.sendgrid_events where sg_event_id = 'erasure-ev-2'"
            ).fetchone()[0]
            == 1
        )


def test_erasure_is_stamped_with_its_logical_time(world):
    with _connect(world) as conn:
        stamps = conn.execute("select erased_at from mail.erasures").fetchall()
    assert stamps == [(ERASED_AS_OF.replace(tzinfo=None),)]


def test_sendgrid_erasejob_requested(world):
    assert [job["email_addresses"] for job in world["erasejobs"]] == [[PERSON_EMAIL]]
    assert "SendGrid erasure requests: 1" in world["erase_output"]


def test_erase_command_leaves_no_bytes_of_the_address_in_the_file(world):
    assert world["file_hits_after_cli"] == 0


def test_compact_warehouse_removes_the_deleted_bytes_and_keeps_the_data(world):
    with _connect(world) as conn:
        before = conn.execute("select count(*), count(distinct send_id) from mail.sends").fetchone()
    compact_warehouse(world["warehouse"])
    assert _file_hits(world["warehouse"]) == 0
    with _connect(world) as conn:
        assert conn.execute("select count(*), count(distinct send_id) from mail.sends").fetchone() == before
        constraints = conn.execute(
            "select constraint_type from information_schema.table_constraints "
            "where table_schema = 'mail' and table_name = 'sends'"
        ).fetchall()
    assert ("UNIQUE",) in constraints and ("PRIMARY KEY",) in constraints


def test_person_in_a_later_export_is_suppressed_until_consent_is_confirmed_anew(world):
    landing = world["landing"]
    with _connect(world) as conn:
        erased_at = conn.execute("select max(erased_at) from mail.erasures").fetchone()[0].replace(tzinfo=UTC)
    later = _next_send_day(max(AS_OF, erased_at))

    # The shop exports the person again: customer record, their old consent history, a fresh cart.
    header, customers = _scenario_rows(landing, "customers", PERSON_ID)
    customers[0]["updated_at"] = (later - timedelta(days=1)).isoformat()
    _write_csv(landing / "customers" / "reexport.csv", header, customers)
    header, consents = _scenario_rows(landing, "consents", PERSON_ID)
    assert any(r["event"] == "confirmed" for r in consents)
    for n, row in enumerate(consents):
        row["consent_event_id"] = f"CSREEX{n:03d}"
    _write_csv(landing / "consents" / "reexport.csv", header, consents)
    header, _ = _scenario_rows(landing, "session_events", PERSON_ID)
    started = later - timedelta(hours=2, minutes=5)
    events = [
        ("page_view", "", "", ""),
        ("add_to_cart", NEW_CART, "P00012", "1"),
        ("add_to_cart", NEW_CART, "P00040", "2"),
    ]
    rows = [
        {
            **dict.fromkeys(header, ""),
            "event_id": f"ESREEX{n:03d}",
            "session_id": "SSREEX1",
            "customer_id": PERSON_ID,
            "is_logged_in": "true",
            "event_type": event_type,
            "cart_id": cart,
            "product_id": product,
            "quantity": quantity,
            "unit_price": "19.90" if cart else "",
            "currency": "EUR" if cart else "",
            "occurred_at": (started + timedelta(minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for n, (event_type, cart, product, quantity) in enumerate(events)
    ]
    _write_csv(landing / "session_events" / "reexport.csv", header, rows)

    env = _env(world["tmp"])
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        for name in (*SECRET_ENV, "DAGSTER_HOME"):
            mp.delenv(name, raising=False)

        _run(later)
        with _connect(world) as conn:
            decision = conn.execute(
                "select decision, reason, suppression_reason from eligibility.mail_candidates "
                "where trigger_key = ?",
                [NEW_CART],
            ).fetchall()
            sends = conn.execute(
                "select count(*) from mail.sends where lower(email) = ? or trigger_key = ?",
                [PERSON_EMAIL, NEW_CART],
            ).fetchone()[0]
        assert decision == [("skip", "suppressed", "erased")]
        assert sends == 0

        # A new double opt-in after the erasure lifts the suppression.
        confirmed_at = erased_at + timedelta(minutes=1)
        assert confirmed_at < later
        confirm = {
            **consents[-1],
            "consent_event_id": "CSREEX900",
            "event": "confirmed",
            "source": "mail_link",
            "occurred_at": confirmed_at.isoformat(),
        }
        _write_csv(landing / "consents" / "reconfirmed.csv", list(confirm), [confirm])
        _run(later)
        with _connect(world) as conn:
            decision = conn.execute(
                "select decision, reason from eligibility.mail_candidates where trigger_key = ?", [NEW_CART]
            ).fetchall()
            sent = conn.execute(
                "select status from mail.sends where trigger_key = ? and lower(email) = ?",
                [NEW_CART, PERSON_EMAIL],
            ).fetchall()
    assert decision == [("send", "due")]
    assert sent == [("sent",)]


# --- SendGrid's erasejob: the local server's endpoint and the 5,000-address chunking ------------------------


def _post(url: str, body: bytes, key: str | None = API_KEY) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        url + "/v3/recipients/erasejob", data=body, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_sandbox_erasejob_endpoint():
    with run_sandbox(api_key=API_KEY) as sandbox:
        status, answer = _post(
            sandbox.url, json.dumps({"email_addresses": ["a@example.de", "a@example.de"]}).encode()
        )
        assert status == 202 and answer["job_id"]
        too_many = [f"p{n}@example.de" for n in range(SENDGRID_ERASE_BATCH + 1)]
        status, answer = _post(sandbox.url, json.dumps({"email_addresses": too_many}).encode())
        assert status == 400 and answer["errors"][0]["field"] == "email_addresses"
        assert _post(sandbox.url, json.dumps({"email_addresses": []}).encode())[0] == 400
        assert _post(sandbox.url, json.dumps({"email_addresses": ["not-an-address"]}).encode())[0] == 400
        assert _post(sandbox.url, b"{not json")[0] == 400
        assert _post(sandbox.url, b'{"email_addresses": ["b@example.de"]}', key="SG.wrong")[0] == 401
        assert _post(sandbox.url, b'{"email_addresses": ["b@example.de"]}', key=None)[0] == 401
        with urllib.request.urlopen(sandbox.url + "/_sandbox/erasejobs") as response:
            over_http = json.loads(response.read())
        jobs = sandbox.erasejobs()
    assert over_http == jobs
    assert [job["email_addresses"] for job in jobs] == [["a@example.de"]]  # deduplicated, failures not kept


def test_erasure_of_more_than_5000_addresses_is_chunked(tmp_path):
    """One customer id with 5,001 addresses (an account that changed its address a lot): two requests."""
    from nachfass.core.schema import ensure_raw_schema

    addresses = [f"person{n:05d}@example.de" for n in range(SENDGRID_ERASE_BATCH + 1)]
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_raw_schema(conn)
    conn.execute(
        "insert into raw.customers (customer_id, email, _file, _row, _loaded_at) "
        "select 'CBIG', unnest(?), 'x.csv', 1, now()",
        [addresses],
    )
    with run_sandbox(api_key=API_KEY) as sandbox:
        client = sendgrid.SendGridAPIClient(api_key=API_KEY, host=sandbox.url)
        report = erase_person(conn, customer_id="CBIG", sendgrid_client=client)
        jobs = sandbox.erasejobs()
    assert report.emails == len(addresses)
    assert report.sendgrid_requests == 2
    assert [len(job["email_addresses"]) for job in jobs] == [SENDGRID_ERASE_BATCH, 1]
    assert sorted(a for job in jobs for a in job["email_addresses"]) == addresses
    assert conn.execute("select count(*) from raw.customers").fetchone()[0] == 0
    assert conn.execute("select bool_and(sendgrid_erasure_requested) from mail.erasures").fetchone()[0]
    conn.close()


def test_erasing_again_restarts_the_suppression(tmp_path):
    """Erased, confirmed anew, erased again: the second erasure's time counts (else the old opt-in would
    lift the new suppression)."""
    from nachfass.core.schema import ensure_raw_schema

    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    ensure_raw_schema(conn)
    row = (
        "insert into raw.customers (customer_id, email, _file, _row, _loaded_at) "
        "values ('C9', 'x@example.de', 'f', 1, now())"
    )
    conn.execute(row)
    first, second = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    erase_person(conn, email="x@example.de", now=first)
    conn.execute(row)  # a later export brings them back
    erase_person(conn, customer_id="C9", now=second)
    assert conn.execute("select erased_at from mail.erasures").fetchall() == [(second.replace(tzinfo=None),)]
    conn.close()


def test_replays_and_backtests_lose_the_person_too(world):
    """A backtest and a replay copy the exports into warehouses of their own, in folders and files the user
    named: the erasure finds them (copies.json) and deletes the person from their tables (simulated ledger
    included), files and outboxes, and leaves another DuckDB file beside a replay's alone."""
    before = world["copy_traces_before"]
    assert set(before) == {
        "pr-42/results.duckdb",
        "before/warehouse.duckdb",
        "after/warehouse.duckdb",
        "after/warehouse.duckdb.new",
        "elsewhere/replayed.duckdb",
    }
    assert {"raw.customers", "replay.decision_spans"} <= set(before["elsewhere/replayed.duckdb"])
    assert {"raw.customers", "replay.decision_spans", "mail.sends"} <= set(before["before/warehouse.duckdb"])
    assert "backtest.sends" in before["pr-42/results.duckdb"]
    hits = world["copy_file_hits_before"]
    assert (
        hits["before/warehouse.duckdb"]
        and hits["after/warehouse.duckdb"]
        and hits["after/warehouse.duckdb.new"]
    )

    assert world["copy_traces_after"] == {name: {} for name in before}
    assert _copy_file_hits(world) == {name: 0 for name in before}
    remaining = [path for outbox in world["copy_outboxes"] for path in outbox.iterdir()]
    assert remaining, "the other customers' simulated mails stay"
    for path in remaining:
        assert PERSON_EMAIL not in path.read_text(encoding="utf-8", errors="replace").lower(), path
    assert "rows from the replay/backtest copy" in world["erase_output"]
    assert "outbox files of replays and backtests" in world["erase_output"]
    with duckdb.connect(str(world["not_a_copy"]), read_only=True) as other:
        assert other.execute("select email from notes").fetchall() == [(PERSON_EMAIL,)]


def test_a_replay_running_in_memory_stops_the_erasure_before_it_starts(world):
    locked = world["locked"]
    assert locked.returncode == 1
    assert "a replay or backtest is running" in locked.stderr and "nothing was erased" in locked.stderr
    assert "pr-42/before" in locked.stderr  # names the running one's folder
    replay_locked = world["replay_locked"]
    assert replay_locked.returncode == 1
    assert "a replay or backtest is running" in replay_locked.stderr and "elsewhere" in replay_locked.stderr


def test_what_a_killed_replay_spilled_is_deleted(world):
    assert not any(spill.exists() for spill in world["spills"])
    assert "deleted 2 spill files a replay or backtest left when it died" in world["erase_output"]


def test_a_copy_held_by_a_running_backtest_stops_the_erasure_before_it_starts(world):
    held = world["held"]
    assert held.returncode == 1
    assert "cannot open the replay/backtest copy" in held.stderr and "results.duckdb" in held.stderr
    assert "nothing was erased" in held.stderr
    # the warehouse still named the person after the refused attempt
    assert {"raw.customers", "raw.consents"} <= set(world["traces_while_held"])
