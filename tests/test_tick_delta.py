"""A replay's tick updates int_carts, stg_orders, stg_customers, int_orders, int_customer_order_gaps and
int_consent_state from the tables an earlier tick built (only the keys whose rows may have changed since,
`replay.build_tick_model`): each table must end exactly as computing the model whole at that tick leaves it,
whatever the gap between the builds, including carts that gain events, leave the window, get bought, or hold
a product whose version changed in between, and orders and customers whose versions change or that appear."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests_support import DBT_DIR

from nachfass.core.dbt import dbt_vars_arg
from nachfass.core.replay import (
    AS_OF_VARIABLE,
    MAX_DELTA_GAP,
    TickModel,
    _dbt,
    _open_in_memory,
    _tick_models,
    _with_deltas,
    build_tick_model,
    create_tick_model,
    load_exports,
)
from nachfass.devtools.datagen.generate import generate_exports

AS_OF = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
START = (AS_OF - timedelta(days=3)).replace(tzinfo=None)  # naive UTC, as the replay's ticks
END = AS_OF.replace(tzinfo=None)
INT_CARTS = "model.nachfass.int_carts"
UPDATED = {
    INT_CARTS: "cart_id",
    "model.nachfass.stg_orders": "order_id",
    "model.nachfass.stg_customers": "customer_id",
    "model.nachfass.int_orders": "order_id",
    "model.nachfass.int_customer_order_gaps": "customer_id",
    "model.nachfass.int_consent_state": "email",
}
# stamped inside the ticks: a product of many carts renamed, an order moved to another cart
PRODUCT_CHANGE = START + timedelta(hours=5, minutes=30)
ORDER_CHANGE = START + timedelta(hours=7, minutes=10)
CUSTOMER_CHANGE = START + timedelta(hours=3, minutes=20)
NEW_EMAIL = "neue.adresse@example.org"
MAX_GAP_MINUTES = int(MAX_DELTA_GAP.total_seconds() // 60)


@pytest.fixture(scope="module")
def carts(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path):
    """A warehouse as a replay has it before its first tick (exports loaded, dbt built as of START, the
    tick models compiled whole and as deltas), open in memory, with the models up to int_carts."""
    folder = tmp_path_factory.mktemp("tick_delta")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NACHFASS_DATA", str(folder / "data"))
        landing = folder / "landing"
        landing.mkdir()
        generate_exports(landing, customers=400, seed=11, as_of=AS_OF)
        warehouse = folder / "warehouse.duckdb"
        load_exports(landing=landing, warehouse=warehouse, end=AS_OF, progress=lambda _line: None)
        changed = _change_versions(warehouse)
        segments = DBT_DIR / "models" / "segments"
        work = folder / "work"
        _dbt(
            ["build", *dbt_vars_arg(START, segments=segments)],
            target_path=work / "build",
            env_warehouse=warehouse,
        )
        _dbt(
            ["compile", "--full-refresh", *dbt_vars_arg(as_of_source="variable", segments=segments)],
            target_path=work / "compile",
            env_warehouse=warehouse,
        )
        manifest = json.loads((work / "compile" / "manifest.json").read_text(encoding="utf-8"))
        models = _with_deltas(
            _tick_models(manifest), work=work, warehouse=warehouse, project=DBT_DIR, segments=segments
        )
    # the models updated from tick to tick and every tick model they read (stg_products …), in order
    wanted = set().union(*(_ancestors(manifest, uid) for uid in UPDATED))
    needed = [m for m in models if m.unique_id in wanted]
    assert {m.unique_id for m in needed if m.delta is not None} == set(UPDATED)
    conn = _open_in_memory(warehouse, catalog=needed[0].relation.split(".")[0].strip('"'), work=work)
    yield conn, needed, changed
    conn.close()


def _ancestors(manifest: dict, uid: str) -> set[str]:
    found, stack = set(), [uid]
    while stack:
        node = stack.pop()
        if node not in found and node in manifest["nodes"]:
            found.add(node)
            stack += manifest["nodes"][node]["depends_on"]["nodes"]
    return found


def _change_versions(warehouse: Path) -> dict[str, str]:
    """New versions stamped inside the ticks: the product in the most carts of the days before END renamed,
    an order's later version naming another cart (one still open) than the order did, a customer's new
    address."""
    conn = duckdb.connect(str(warehouse))
    try:
        product = conn.execute(
            "select product_id from raw.session_events where event_type = 'add_to_cart' and occurred_at > ? "
            "group by 1 order by count(distinct cart_id) desc, 1 limit 1",
            [START - timedelta(days=3)],
        ).fetchone()[0]
        conn.execute(
            "insert into raw.products select * replace (name || ' (neu)' as name, ? as updated_at, "
            "_row + 100000 as _row) from raw.products where product_id = ? order by updated_at desc limit 1",
            [PRODUCT_CHANGE, product],
        )
        order, old_cart = conn.execute(
            "select order_id, cart_id from raw.orders where cart_id is not null "
            "and coalesce(updated_at, placed_at) < ? and placed_at > ? "
            "order by placed_at desc, order_id limit 1",
            [START, START - timedelta(days=9)],
        ).fetchone()
        new_cart = conn.execute(
            "select cart_id from raw.session_events "
            "where cart_id is not null and occurred_at between ? and ? "
            "and cart_id not in (select cart_id from raw.orders where cart_id is not null) "
            "and cart_id not in (select cart_id from raw.session_events where event_type = 'purchase') "
            "order by cart_id limit 1",
            [START - timedelta(days=1), START],
        ).fetchone()[0]
        conn.execute(
            "insert into raw.orders select * replace (? as cart_id, ? as updated_at, 'shipped' as status, "
            "_row + 100000 as _row) from raw.orders where order_id = ? limit 1",
            [new_cart, ORDER_CHANGE, order],
        )
        customer = conn.execute(
            "select customer_id from raw.customers where coalesce(updated_at, created_at) < ? "
            "order by customer_id limit 1",
            [START],
        ).fetchone()[0]
        conn.execute(
            "insert into raw.customers select * replace (? as email, ? as updated_at, _row + 100000 as _row) "
            "from raw.customers where customer_id = ? limit 1",
            [NEW_EMAIL, CUSTOMER_CHANGE, customer],
        )
    finally:
        conn.close()
    return {
        "product": product,
        "order": order,
        "old_cart": old_cart,
        "new_cart": new_cart,
        "customer": customer,
    }


def _tick(
    conn: duckdb.DuckDBPyConnection, models: list[TickModel], moment: datetime, held: datetime | None
) -> set[bool]:
    """The models as of ``moment``, those with a delta updated from their tables as of ``held`` (None:
    computed whole), each compared with what computing it whole gives; returns whether they were updated."""
    conn.execute(f"set variable {AS_OF_VARIABLE} = ?", [moment])
    updated = set()
    for model in models:
        if model.delta is None:
            create_tick_model(conn, model, moment)
            continue
        updated.add(build_tick_model(conn, model, moment, model.sql, held))
        assert UPDATED[model.unique_id] == model.delta_key
        whole = conn.execute(f"select * from ({model.sql}) order by all").fetchall()
        table = conn.execute(f"select * from {model.relation} order by all").fetchall()
        assert whole and table == whole, (model.unique_id, moment, held)
    return updated


def _restart(conn: duckdb.DuckDBPyConnection, models: list[TickModel]) -> None:
    _tick(conn, models, START, None)


def _value(conn: duckdb.DuckDBPyConnection, sql: str, params: list) -> object:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


@pytest.mark.slow
def test_hourly_updates_leave_the_tables_as_computing_them_whole(carts) -> None:
    conn, models, changed = carts
    _restart(conn, models)
    held, seen = START, {}
    for hours in range(1, 25):
        moment = START + timedelta(hours=hours)
        assert _tick(conn, models, moment, held) == {True}  # every such model updated, each as computed whole
        held = moment
        seen[hours] = (
            _value(
                conn,
                "select count(*) from intermediate.int_carts where items like ?",
                [f"%{changed['product']}%(neu)%"],
            ),
            _value(
                conn,
                "select purchased_at is not null from intermediate.int_carts where cart_id = ?",
                [changed["new_cart"]],
            ),
            _value(conn, "select cart_id from staging.stg_orders where order_id = ?", [changed["order"]]),
            _value(
                conn, "select email from staging.stg_customers where customer_id = ?", [changed["customer"]]
            ),
        )
    # the renamed product shows in the carts holding it from the tick after its new version (05:30) on
    assert seen[5][0] == 0 and seen[6][0] > 0
    # the order's later version (07:10) moves the purchase to the other cart at the tick after it
    assert seen[7][1:3] == (False, changed["old_cart"])
    assert seen[8][1:3] == (True, changed["new_cart"])
    # the customer's new address (03:20) from the tick after it on
    assert seen[3][3] != NEW_EMAIL and seen[4][3] == NEW_EMAIL


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gaps=st.lists(st.integers(min_value=0, max_value=MAX_GAP_MINUTES + 240), max_size=5))
def test_updates_at_any_spacing_match_computing_the_models_whole(carts, gaps: list[int]) -> None:
    """Ticks any minutes apart (0: the same moment again); a gap beyond MAX_DELTA_GAP computes them whole."""
    conn, models, _changed = carts
    _restart(conn, models)
    held = START
    for minutes in gaps:
        moment = min(held + timedelta(minutes=minutes), END)
        assert _tick(conn, models, moment, held) == {moment - held <= MAX_DELTA_GAP}
        held = moment


@pytest.mark.slow
def test_a_tick_before_the_tables_build_computes_the_models_whole(carts) -> None:
    conn, models, _changed = carts
    _tick(conn, models, START + timedelta(hours=12), None)
    assert _tick(conn, models, START + timedelta(hours=2), START + timedelta(hours=12)) == {False}


@pytest.mark.slow
def test_a_model_computed_once_a_day_is_not_updated(carts) -> None:
    """A model read as of the day's start (meta as_of_grain: day) declaring a delta is computed whole."""
    conn, models, _changed = carts
    _restart(conn, models)
    daily = [dataclasses.replace(m, grain="day") if m.delta is not None else m for m in models]
    assert _tick(conn, daily, START + timedelta(hours=1), START) == {False}
    assert _tick(conn, models, START + timedelta(hours=2), START + timedelta(hours=1)) == {True}
