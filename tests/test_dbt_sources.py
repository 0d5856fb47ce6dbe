"""dbt's sources are the export contract: the file in the repository is what the generator writes."""

from __future__ import annotations

from tests_support import DBT_DIR

from nachfass.core.contract import TABLES
from nachfass.core.dbt_sources import dbt_sources, dbt_sources_yaml


def test_sources_file_is_generated_from_the_contract() -> None:
    on_disk = (DBT_DIR / "models" / "staging" / "_sources.yml").read_text(encoding="utf-8")
    assert on_disk == dbt_sources_yaml(), (
        "dbt/models/staging/_sources.yml is stale: python -m nachfass.core.dbt_sources > "
        "dbt/models/staging/_sources.yml"
    )


def test_every_contract_column_is_a_typed_source_column_with_freshness() -> None:
    raw = next(source for source in dbt_sources()["sources"] if source["name"] == "raw")
    assert raw["config"]["loaded_at_field"] == "_loaded_at"
    assert raw["config"]["freshness"]["warn_after"]
    tables = {table["name"]: table for table in raw["tables"]}
    for name, table in TABLES.items():
        columns = {column["name"]: column for column in tables[name]["columns"]}
        assert set(table.column_names) <= set(columns)
        assert {"_file", "_row", "_loaded_at"} <= set(columns)
        assert all(column["data_type"] and column["description"] for column in columns.values())
