"""DSGVO erasure on the PostgreSQL engine: `nachfass erase` after a real `nachfass run` on PostgreSQL.

The same promises as on DuckDB (tests/test_erasure.py): no row in the warehouse names the person any more,
their ledger rows are pseudonymised and their address stays suppressed, and no copy of the address is left
in the bytes of the tables' files. Two places are PostgreSQL's own: the local DuckDB staging file the
exports are parsed in (it holds copies of the raw exports) and the old row versions PostgreSQL keeps in a
table's files after a delete or update (``VACUUM FULL`` rewrites the tables the erasure touched).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, timedelta

import duckdb
import pytest
from test_erasure import (
    AS_OF,
    ERASED_AS_OF,
    PERSON_EMAIL,
    PERSON_ID,
    SCANNED_SCHEMAS,
    _file_hits,
    _traces,
    _unsubscribe_file,
    _webhook_files,
)
from tests_support import REPO_ROOT

from nachfass.core.pgconn import PgConnection
from nachfass.core.warehouse.settings import PostgresSettings
from nachfass.devtools.datagen.generate import generate_exports
from nachfass.privacy.erasure import salted_hash

pytestmark = pytest.mark.slow

DB = "erasure"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    code = f"from nachfass.cli.main import main; raise SystemExit(main({list(args)!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900
    )


def _pg_traces(pg: PgConnection, needles: list[str]) -> dict[str, int]:
    """{table: rows} of every table and view in the scanned schemas whose row, as text, names the address
    or one of the ids (as a whole token); the ledger and the erasure bookkeeping are checked apart."""
    found: dict[str, int] = {}
    relations = pg.execute(
        "select table_schema || '.' || table_name from information_schema.tables "
        f"where table_schema in ({','.join('?' * len(SCANNED_SCHEMAS))})",
        list(SCANNED_SCHEMAS),
    ).fetchall()
    for (name,) in relations:
        if name in ("mail.sends", "mail.erasures"):
            continue
        conditions = ["strpos(lower(t::text), ?) > 0"] + [
            "t::text ~ ?" for _ in needles[1:]
        ]  # the ids as whole tokens: C0000001 must not match C00000010
        params = [needles[0]] + [f"(^|[^0-9A-Za-z]){token}([^0-9A-Za-z]|$)" for token in needles[1:]]
        n = pg.execute(
            f"select count(*) from {name} as t where {' or '.join(conditions)}", params
        ).fetchone()[0]
        if n:
            found[name] = n
    return found


def _database_file_hits(pg: PgConnection, server) -> dict[str, int]:
    """{relation: occurrences of the address} in the files of the test database's tables, indexes and
    TOAST tables (old row versions included), after a checkpoint wrote every page out."""
    pg.execute("checkpoint")
    oid = pg.execute("select oid from pg_database where datname = current_database()").fetchone()[0]
    folder = server.root / "data" / "base" / str(oid)
    needle = PERSON_EMAIL.encode()
    hits: dict[str, int] = {}
    for path in folder.iterdir():
        n = path.read_bytes().count(needle) if path.is_file() else 0
        if n:
            filenode = path.name.split("_")[0].split(".")[0]
            name = pg.execute("select pg_filenode_relation(0, ?)::text", [int(filenode)]).fetchone()[0]
            hits[name or path.name] = hits.get(name or path.name, 0) + n
    return hits


@pytest.fixture(scope="module")
def world(tmp_path_factory, postgres_server, dbt_manifest):
    tmp = tmp_path_factory.mktemp("erasure-pg")
    landing = tmp / "landing"
    generate_exports(landing, customers=200, seed=11, as_of=AS_OF)
    webhook_files = _webhook_files(landing)
    postgres_server.drop_database(DB)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "NACHFASS_", "SENDGRID_"))} | {
        "NACHFASS_ENGINE": "postgres",
        "NACHFASS_LANDING": str(landing),
        "NACHFASS_DATA": str(tmp / "data"),
        "NACHFASS_OUTBOX": str(tmp / "outbox"),
        **postgres_server.env(postgres_server.create_database(DB)),
    }
    run = _cli(env, "run", "--as-of", AS_OF.isoformat())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    settings = PostgresSettings(
        host=postgres_server.host, port=postgres_server.port, user="postgres", dbname=DB
    )
    staging = tmp / "data" / "staging.duckdb"
    world = {"env": env, "settings": settings, "staging": staging, "landing": landing}
    world["webhook_files"] = webhook_files
    with PgConnection.open(settings) as pg:
        world["sends_before"] = pg.execute(
            "select count(*) from mail.sends where customer_id = ? and status = 'sent'", [PERSON_ID]
        ).fetchone()[0]
        world["order_ids"] = [
            r[0]
            for r in pg.execute(
                "select distinct order_id from raw.orders where customer_id = ?", [PERSON_ID]
            ).fetchall()
        ]
        world["traces_before"] = _pg_traces(pg, [PERSON_EMAIL, PERSON_ID])
        # What autovacuum does at its own moment: column statistics whose samples hold the address.
        pg.execute("analyze")
        world["file_hits_before"] = _database_file_hits(pg, postgres_server)
    with duckdb.connect(str(staging), read_only=True) as duck:
        world["staging_traces_before"] = _traces(duck, {"email": PERSON_EMAIL, "ids": [PERSON_ID]})
    world["staging_hits_before"] = _file_hits(staging)
    webhook_files["consent"] = _unsubscribe_file(landing)

    erase = _cli(env, "erase", "--email", PERSON_EMAIL.upper(), "--as-of", ERASED_AS_OF.isoformat())
    assert erase.returncode == 0, erase.stdout[-3000:] + erase.stderr[-3000:]
    world["erase_output"] = erase.stdout + erase.stderr
    with PgConnection.open(settings) as pg:
        world["traces_after"] = _pg_traces(pg, [PERSON_EMAIL, PERSON_ID, *world["order_ids"]])
        world["file_hits_after"] = _database_file_hits(pg, postgres_server)
    yield world


def test_the_person_was_in_the_warehouse_and_the_staging_file(world):
    assert world["sends_before"] >= 1
    # The scans find what they look for: before the erasure the person is everywhere.
    assert {"raw.customers", "raw.consents", "eligibility.mail_candidates"} <= set(world["traces_before"])
    assert {"raw.customers", "raw.consents"} <= set(world["staging_traces_before"])
    assert world["file_hits_before"] and world["staging_hits_before"] > 0
    assert "pg_statistic" in world["file_hits_before"], "the column statistics sample the address"


def test_no_row_in_postgres_names_the_person_anymore(world):
    assert world["traces_after"] == {}, f"rows about the erased person remain: {world['traces_after']}"
    assert "erased: 1 address(es), 1 customer id(s)" in world["erase_output"]


def test_no_copy_of_the_address_is_left_in_the_tables_files(world):
    """Deleted and updated rows leave their old versions in PostgreSQL's files until the table is
    rewritten; the erasure rewrites what it touched."""
    assert world["file_hits_after"] == {}


def test_the_staging_file_is_erased_too(world):
    with duckdb.connect(str(world["staging"]), read_only=True) as duck:
        traces = _traces(duck, {"email": PERSON_EMAIL, "ids": [PERSON_ID, *world["order_ids"]]})
    assert traces == {}
    assert _file_hits(world["staging"]) == 0
    assert "in the staging file" in world["erase_output"]


def test_ledger_rows_are_pseudonymised_and_the_address_stays_suppressed(world):
    with PgConnection.open(world["settings"]) as pg:
        salt = pg.execute("select salt from mail.erasure_salt").fetchone()[0]
        expected = salted_hash(salt, PERSON_EMAIL)
        rows = pg.execute(
            "select email, customer_id, trigger_key, status from mail.sends where email_hash = ?", [expected]
        ).fetchall()
        erasures = pg.execute("select email_hash, erased_at from mail.erasures").fetchall()
    assert len([r for r in rows if r[3] == "sent"]) == world["sends_before"]
    for email, customer_id, trigger_key, _ in rows:
        assert email is None and customer_id is None and trigger_key.startswith("erased:")
        assert PERSON_ID not in trigger_key
    # The same salted hash as DuckDB's erasure computes (dbt's int_suppressions recomputes it).
    assert erasures == [(expected, ERASED_AS_OF.astimezone(UTC).replace(tzinfo=None))]


def test_the_rewritten_event_file_is_not_loaded_again(world):
    """The landing's event file without the person is recorded as loaded in PostgreSQL and in the staging
    file, so the next run neither parses nor copies it again (the other events stay, once)."""
    mixed = world["webhook_files"]["mixed"]
    assert PERSON_EMAIL not in mixed.read_text(encoding="utf-8").lower()
    later = (ERASED_AS_OF + timedelta(hours=1)).isoformat()
    run = _cli(world["env"], "run", "--as-of", later, "--no-summary")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with PgConnection.open(world["settings"]) as pg:
        assert (
            pg.execute(
                "select count(*) from raw.sendgrid_events where sg_event_id = 'erasure-ev-2'"
            ).fetchone()[0]
            == 1
        )
        assert (
            pg.execute("select count(*) from raw.loaded_files where path = ?", [str(mixed)]).fetchone()[0]
            == 1
        )
        assert _pg_traces(pg, [PERSON_EMAIL, PERSON_ID]) == {}


def test_old_statistics_samples_go_only_when_the_role_may_rewrite_the_catalog(postgres_server):
    """ANALYZE leaves the replaced statistics row, with its sample of the address, in pg_statistic's file.
    A superuser or the database's owner rewrites the catalog; any other role cannot (VACUUM only warns), and
    the erasure's caller is told so instead of a silent leftover."""
    from nachfass.privacy.erasure import compact_postgres

    name = postgres_server.create_database("erasure_statistics")

    def as_role(user: str) -> PgConnection:
        return PgConnection.open(
            PostgresSettings(host=postgres_server.host, port=postgres_server.port, user=user, dbname=name)
        )

    def sample_the_address_then_delete_it(pg: PgConnection) -> None:
        pg.execute(
            "create table raw.customers as select 'kunde' || g || '@example.org' as email "
            "from generate_series(1, 50) as g"  # few enough for every address to be in the histogram
        )
        pg.execute("insert into raw.customers values (?)", [PERSON_EMAIL])
        pg.execute("analyze raw.customers")
        hits = _database_file_hits(pg, postgres_server)
        assert "pg_statistic" in hits, hits
        pg.execute("delete from raw.customers where email = ?", [PERSON_EMAIL])

    try:
        with as_role("postgres") as pg:
            pg.execute("drop role if exists erasure_clerk")
            pg.execute("create role erasure_clerk login in role pg_checkpoint")  # for the scans
            pg.execute(f'grant create on database "{name}" to erasure_clerk')
        with as_role("erasure_clerk") as pg:  # owns the tables, not the database
            pg.execute("create schema raw")
            pg.execute("create schema mail")
            pg.execute("create table mail.sends (email text)")
            sample_the_address_then_delete_it(pg)
            assert "pg_catalog.pg_statistic" not in compact_postgres(pg)
            hits = _database_file_hits(pg, postgres_server)
        assert "pg_statistic" in hits, hits
        with as_role("postgres") as pg:
            pg.execute(f'alter database "{name}" owner to erasure_clerk')
        with as_role("erasure_clerk") as pg:
            pg.execute("drop table raw.customers")
            sample_the_address_then_delete_it(pg)
            assert "pg_catalog.pg_statistic" in compact_postgres(pg)
            assert _database_file_hits(pg, postgres_server) == {}
    finally:
        postgres_server.drop_database(name)
        with PgConnection.open(
            PostgresSettings(
                host=postgres_server.host, port=postgres_server.port, user="postgres", dbname="postgres"
            )
        ) as pg:
            pg.execute("drop role if exists erasure_clerk")
