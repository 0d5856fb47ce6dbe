"""`nachfass diff`: the cart delay goes from 60 to 30 minutes in a changed copy of the dbt project; the diff
at one as_of names exactly the customers who gain a mail or a decision, and why. Real dbt and DuckDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from nachfass.cli.main import main
from nachfass.core import paths
from nachfass.core.diff import run_diff
from tests.dbt_helpers import copy_dbt_project, hours, load_exports, write_exports
from tests.test_scenarios import AS_OF, World

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, World, Path]:
    root = tmp_path_factory.mktemp("diff")
    world = World()
    for rule, age in (("cart_45", 0.75), ("cart_90", 1.5), ("cart_20", 1 / 3)):
        cid, _ = world.customer(rule)
        world.cart(cid, AS_OF - hours(age))
    cid, _ = world.customer("cart_45_no_consent", consent=())
    world.cart(cid, AS_OF - hours(0.75))
    write_exports(root / "landing", world.rows)
    warehouse = root / "warehouse.duckdb"
    load_exports(warehouse, root / "landing")

    changed = copy_dbt_project(root / "changed")
    cart_yml = changed / "models" / "segments" / "abandoned_cart.yml"
    text = cart_yml.read_text(encoding="utf-8")
    assert "delay_minutes: 60 " in text
    cart_yml.write_text(text.replace("delay_minutes: 60 ", "delay_minutes: 30 ", 1), encoding="utf-8")
    return warehouse, world, changed


def test_a_shorter_cart_delay_gains_exactly_the_carts_between_30_and_60_minutes(
    shop: tuple[Path, World, Path], tmp_path: Path
) -> None:
    warehouse, world, changed = shop
    result = run_diff(warehouse, str(changed), AS_OF, workdir=tmp_path / "work")

    by_kind = {
        kind: {
            (c.campaign, c.step, c.customer_id, c.before, c.after) for c in result.changes if c.kind == kind
        }
        for kind in ("gained", "lost", "changed")
    }
    assert by_kind["gained"] == {("abandoned_cart", "1", world.ids["cart_45"], None, "send (due)")}
    assert by_kind["lost"] == set()
    # due now, but without consent: a new row that says why it is not sent
    assert by_kind["changed"] == {
        ("abandoned_cart", "1", world.ids["cart_45_no_consent"], None, "skip (no_consent)")
    }
    assert result.before_counts[("abandoned_cart", "1")] == 1  # cart_90 only
    assert result.after_counts[("abandoned_cart", "1")] == 2
    assert "| abandoned_cart | 1 | 1 | 2 | +1 | −0 | 1 |" in result.markdown
    assert f"| abandoned_cart | 1 | {world.ids['cart_45']} |" in result.markdown
    assert "— (no row) | send (due) |" in result.markdown


def test_the_cli_writes_the_markdown_and_leaves_the_warehouse_alone(
    shop: tuple[Path, World, Path], tmp_path: Path
) -> None:
    warehouse, _, changed = shop
    before = warehouse.read_bytes()
    out = tmp_path / "diff.md"
    code = main(
        ["diff", "--warehouse", str(warehouse), "--rules", str(changed), "--as-of", AS_OF.isoformat(),
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "+1 | −0" in out.read_text(encoding="utf-8")
    assert warehouse.read_bytes() == before


@pytest.mark.skipif(not (paths.REPO_ROOT / ".git").exists(), reason="needs the repository's git history")
def test_the_checked_out_rules_against_head_change_nothing(
    shop: tuple[Path, World, Path], tmp_path: Path
) -> None:
    warehouse, _, _ = shop
    result = run_diff(warehouse, "HEAD", AS_OF, workdir=tmp_path / "work")
    if result.changes:  # the working tree's models differ from HEAD: then the diff must say so
        assert "No decision changes" not in result.markdown
    else:
        assert "No decision changes" in result.markdown


def test_bad_rules_say_why(shop: tuple[Path, World, Path], tmp_path: Path) -> None:
    warehouse, _, _ = shop
    assert main(["diff", "--warehouse", str(warehouse), "--rules", str(tmp_path / "nope"), "--as-of",
                 AS_OF.isoformat()]) == 1  # fmt: skip
