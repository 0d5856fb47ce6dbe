"""Event ingest: files from the webhook receiver load once, events deduplicate on sg_event_id across
files and runs (SendGrid retries and reorders), bad lines are quarantined with their line number and reason
while the rest loads (poison never blocks), and events carrying a send id reconcile `unknown` ledger rows."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nachfass.core.events import load_events
from nachfass.core.schema import prepare_warehouse


def event(n: int, kind: str = "delivered", send_id: str | None = "s_1", ts: int = 1_795_000_000) -> dict:
    return {
        "sg_event_id": f"ev-{n}",
        "event": kind,
        "email": "Kunde@Example.de",
        "timestamp": ts + n,
        "sg_message_id": "msg123.filter0001.00001.0",
        "send_id": send_id,
        "campaign": "abandoned_cart",
        "step": "1",
        "variant": "b",
    }


def write(landing: Path, name: str, lines: list) -> Path:
    folder = landing / "sendgrid_events"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.fixture
def conn(tmp_path: Path):
    connection = duckdb.connect(str(tmp_path / "w.duckdb"))
    prepare_warehouse(connection)
    yield connection
    connection.close()


def test_duplicates_across_files_count_once_and_files_load_once(tmp_path: Path, conn) -> None:
    write(tmp_path, "b.ndjson", [event(2), event(1)])  # out of order
    write(tmp_path, "a.ndjson", [event(1), event(3, "open")])  # a retried batch overlapping the other
    write(tmp_path, ".c.ndjson.tmp", [event(9)])  # being written: never read
    report = load_events(conn, tmp_path)
    assert (report.files_loaded, report.events_read, report.events_new, report.duplicates) == (2, 4, 3, 1)
    assert conn.execute("select count(*) from raw.sendgrid_events").fetchone()[0] == 3
    email, message_id = conn.execute(
        "select email, message_id from raw.sendgrid_events where sg_event_id = 'ev-1'"
    ).fetchone()
    assert (email, message_id) == ("kunde@example.de", "msg123")
    again = load_events(conn, tmp_path)
    assert (
        again.files_loaded == 0
        and conn.execute("select count(*) from raw.sendgrid_events").fetchone()[0] == 3
    )


def test_an_event_file_is_read_again_only_when_it_changed(tmp_path: Path, conn) -> None:
    """The webhook's files pile up in the landing folder; a run reads only the new or changed ones (the
    digest kept for a settled file, nachfass/core/file_digests.py). An erasure rewrites a file, which gives
    it a new modification time: then it is hashed again."""
    path = write(tmp_path, "a.ndjson", [event(1)])
    an_hour_ago = time.time_ns() - 3600 * 10**9  # stamped by the clock the loader compares with
    os.utime(path, ns=(an_hour_ago, an_hour_ago))
    assert load_events(conn, tmp_path).files_loaded == 1
    assert conn.execute("select count(*) from raw.landing_file_digests").fetchone()[0] == 1
    # other bytes of the same size at the same time: the kept digest is used, the file not read again
    path.write_text(path.read_text().replace("ev-1", "ev-7"))
    os.utime(path, ns=(an_hour_ago, an_hour_ago))
    assert load_events(conn, tmp_path).files_loaded == 0
    os.utime(path, ns=(an_hour_ago + 10**9, an_hour_ago + 10**9))  # rewritten: a new modification time
    assert load_events(conn, tmp_path).files_loaded == 1
    assert {r[0] for r in conn.execute("select sg_event_id from raw.sendgrid_events").fetchall()} == {
        "ev-1",
        "ev-7",
    }


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path, conn) -> None:
    write(tmp_path, "a.ndjson", [event(1), "{not json", {"event": "open"}, event(2)])
    report = load_events(conn, tmp_path)
    assert report.events_new == 2 and report.malformed == 2


def test_unknown_ledger_rows_are_reconciled_from_events(tmp_path: Path, conn) -> None:
    conn.execute(
        "insert into mail.sends (send_id, campaign, step, trigger_key, status, reason, as_of, created_at, "
        "updated_at, attempts) values "
        "('s_1', 'abandoned_cart', '1', 'K-1', 'unknown', 'timeout', '2026-11-24 10:00', now(), now(), 1), "
        "('s_2', 'abandoned_cart', '1', 'K-2', 'unknown', 'timeout', '2026-11-24 10:00', now(), now(), 1)"
    )
    write(tmp_path, "a.ndjson", [event(1, "processed", send_id="s_1")])
    report = load_events(conn, tmp_path)
    assert report.reconciled == 1
    rows = dict(conn.execute("select send_id, status from mail.sends").fetchall())
    assert rows == {"s_1": "sent", "s_2": "unknown"}  # no event for s_2: stays unknown, never resent
    assert (
        conn.execute("select sg_message_id from mail.sends where send_id = 's_1'").fetchone()[0] == "msg123"
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.integers(min_value=0, max_value=15), max_size=8), min_size=1, max_size=5))
def test_property_any_batching_and_order_gives_each_event_once(tmp_path_factory, batches) -> None:
    landing = tmp_path_factory.mktemp("landing")
    for number, batch in enumerate(batches):
        write(landing, f"{number:03d}.ndjson", [event(n) for n in batch])
    connection = duckdb.connect()
    prepare_warehouse(connection)
    load_events(connection, landing)
    stored = {row[0] for row in connection.execute("select sg_event_id from raw.sendgrid_events").fetchall()}
    assert stored == {f"ev-{n}" for batch in batches for n in batch}


# ---- poison never blocks ---------------------------------------------------------------------------------


def test_poison_event_is_quarantined_and_the_rest_loads(tmp_path: Path, conn) -> None:
    """Issue 12: a signed event with ``"timestamp": 1e20`` used to stop event loading for good."""
    write(tmp_path, "001.ndjson", [{**event(0), "timestamp": 1e20}])
    write(tmp_path, "002.ndjson", [event(n) for n in range(1, 101)])
    report = load_events(conn, tmp_path)
    assert (report.files_loaded, report.events_new, report.quarantined) == (2, 100, 1)
    assert conn.execute("select count(*) from raw.sendgrid_events").fetchone()[0] == 100
    line, reason, sg_event_id = conn.execute(
        "select line_number, reason, sg_event_id from raw.event_quarantine"
    ).fetchone()
    assert (line, sg_event_id) == (1, "ev-0")
    assert reason.startswith("timestamp out of range")
    write(tmp_path, "003.ndjson", [event(200)])  # later files keep loading
    assert load_events(conn, tmp_path).events_new == 1


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[" * 60_000, "JSON nested too deeply"),
        (b'{"sg_event_id": "a", "event": "open", "timestamp": NaN}', "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({**event(1), "timestamp": "1795000000"}).encode(), "timestamp not a number"),
        (json.dumps({**event(1), "timestamp": -5}).encode(), "timestamp out of range"),
        (json.dumps({**event(1), "timestamp": 10**400}).encode(), "timestamp out of range"),
        (json.dumps({**event(1), "timestamp": True}).encode(), "timestamp not a number"),
        (json.dumps({**event(1), "sg_event_id": 7}).encode(), "sg_event_id not a string"),
        (json.dumps({**event(1), "email": ["a"]}).encode(), "email not a string"),
        (json.dumps({**event(1), "url": "x" * 9000}).encode(), "url longer than"),
        (json.dumps({**event(1), "pad": "x" * 70_000}).encode(), "event larger than"),
        (
            b'{"sg_event_id": "a", "event": "open", "timestamp": 1795000000, "url": "\\ud800"}',
            "invalid Unicode",
        ),
        (b'{"sg_event_id": "a\\u0000", "event": "open", "timestamp": 1795000000}', "NUL"),
    ],
)
def test_each_bad_line_has_its_reason(tmp_path: Path, conn, line: bytes, reason: str) -> None:
    folder = tmp_path / "sendgrid_events"
    folder.mkdir()
    (folder / "a.ndjson").write_bytes(json.dumps(event(9)).encode() + b"\n" + line + b"\n")
    report = load_events(conn, tmp_path)
    assert (report.events_new, report.quarantined) == (1, 1)
    line_number, stored_reason = conn.execute(
        "select line_number, reason from raw.event_quarantine"
    ).fetchone()
    assert line_number == 2 and reason in stored_reason


_HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([1e20, -1, 0, 2**63, 4_102_444_800, 946_684_799, "x" * 9000]),
)


@st.composite
def hostile_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "bytes", "nested", "json"]))
    if kind == "valid":
        return json.dumps(event(draw(st.integers(0, 30)))).encode()
    if kind == "mutated":
        doc = event(draw(st.integers(0, 30)))
        for field in draw(st.lists(st.sampled_from([*doc, "sg_machine_open", "url", "type"]), max_size=3)):
            if draw(st.booleans()):
                doc[field] = draw(_HOSTILE_VALUES)
            else:
                doc.pop(field, None)
        return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", errors="surrogatepass")
    if kind == "bytes":
        return draw(st.binary(min_size=1, max_size=40)).replace(b"\n", b" ")
    if kind == "nested":
        return b"[" * draw(st.integers(1, 5000)) + draw(st.sampled_from([b"", b"]", b"{}"]))
    return json.dumps(draw(_HOSTILE_VALUES)).encode("utf-8", errors="surrogatepass")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(st.lists(hostile_line(), min_size=1, max_size=12), min_size=1, max_size=4))
def test_property_hostile_batches_never_raise_and_every_line_is_loaded_or_quarantined(
    tmp_path_factory, files
) -> None:
    landing = tmp_path_factory.mktemp("landing")
    folder = landing / "sendgrid_events"
    folder.mkdir()
    for number, lines in enumerate(files):
        (folder / f"{number:03d}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    connection = duckdb.connect()
    prepare_warehouse(connection)
    report = load_events(connection, landing)  # never raises
    non_blank = sum(1 for lines in files for line in lines if line.strip())
    assert report.events_read == non_blank
    assert report.events_new + report.duplicates + report.quarantined == non_blank
    quarantined = connection.execute("select count(*) from raw.event_quarantine").fetchone()[0]
    assert quarantined == report.quarantined
    # Every loaded or quarantined line can be found again by its file and line number or its event id.
    loaded_ids = {r[0] for r in connection.execute("select sg_event_id from raw.sendgrid_events").fetchall()}
    assert len(loaded_ids) == report.events_new
    assert load_events(connection, landing).files_loaded == 0  # and nothing is loaded twice
