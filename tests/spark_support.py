"""Apache Spark for the engine tests: the warehouse's source tables copied from DuckDB into Spark parquet
tables, and every model's rows read back, each in a Spark process of its own.

Why processes: the catalog is an embedded Derby metastore, which one JVM at a time can open, and dbt-spark's
session method starts its own JVM inside `dbt`. So the copy runs first (`python -m tests.spark_support load`),
then dbt, then the read-back (`... dump`); each exits before the next starts. The three use the same
settings, which the profile (dbt/profiles.yml, output `spark`) reads from the NACHFASS_SPARK_* variables:
`spark_env` gives them for a directory of the test's own.

Types: varchar/json → string (JSON kept as text), decimal(p,s) as is, list types → array<…>, timestamps →
timestamp (the session time zone is UTC, as in the profile), the rest by name.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import duckdb

_SCALAR_TYPES = {
    "VARCHAR": "string",
    "JSON": "string",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamp",
    "DATE": "date",
    "BOOLEAN": "boolean",
    "BIGINT": "bigint",
    "INTEGER": "int",
    "SMALLINT": "smallint",
    "DOUBLE": "double",
    "FLOAT": "float",
    "HUGEINT": "decimal(38,0)",
    "BLOB": "binary",
}


def spark_type(duckdb_type: str) -> str:
    """The Spark SQL type of a DuckDB column type."""
    t = duckdb_type.upper().strip()
    if t.endswith("[]"):
        return f"array<{spark_type(t[:-2])}>"
    decimal = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", t)
    if decimal:
        return f"decimal({decimal.group(1)},{decimal.group(2)})"
    if t not in _SCALAR_TYPES:
        raise ValueError(f"no Spark type for DuckDB type {duckdb_type}")
    return _SCALAR_TYPES[t]


def spark_available() -> str | None:
    """Why Spark cannot run here (None when java and pyspark are both there)."""
    import shutil

    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no java on PATH (Spark needs Java 17+: apt-get install openjdk-17-jre-headless)"
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e '.[spark]')"
    return None


def spark_env(root: Path) -> dict[str, str]:
    """The settings of a Spark warehouse of its own under `root`, for dbt and the helper processes."""
    return {
        "NACHFASS_ENGINE": "spark",
        "NACHFASS_SPARK_WAREHOUSE_DIR": str(root / "warehouse"),
        "NACHFASS_SPARK_METASTORE_DIR": str(root / "metastore_db"),
        "NACHFASS_SPARK_MASTER": os.environ.get("NACHFASS_SPARK_MASTER", "local[2]"),
        "NACHFASS_SPARK_DRIVER_MEMORY": os.environ.get("NACHFASS_SPARK_DRIVER_MEMORY", "2g"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        # pyspark turns session-zone timestamps into Python datetimes in the process's local time
        "TZ": "UTC",
    }


def _session():  # noqa: ANN202 (pyspark is optional)
    """A session with the profile's settings (dbt/profiles.yml, output spark), from the environment."""
    from nachfass.core.warehouse.spark import spark_session

    return spark_session()


def _run_helper(action: str, argument: Path, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.spark_support", action, str(argument)],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise AssertionError(f"spark {action} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")


def copy_warehouse_to_spark(
    duckdb_path: Path | str, env: dict[str, str], staging: Path, schemas: Iterable[str] = ("raw", "mail")
) -> dict[str, int]:
    """Every table of `schemas` in the DuckDB file, written to parquet under `staging` and created afresh as a
    Spark parquet table (in a Spark process of its own). Returns the rows copied per `schema.table`."""
    staging.mkdir(parents=True, exist_ok=True)
    tables, copied = [], {}
    source = duckdb.connect(str(duckdb_path), read_only=True)
    try:
        for schema in schemas:
            names = source.execute(
                "select table_name from information_schema.tables where table_schema = ? "
                "and table_type = 'BASE TABLE' order by table_name",
                [schema],
            ).fetchall()
            for (table,) in names:
                columns = source.execute(
                    "select column_name, data_type from information_schema.columns "
                    "where table_schema = ? and table_name = ? order by ordinal_position",
                    [schema, table],
                ).fetchall()
                # JSON as its text; everything else in its own parquet type
                select = ", ".join(
                    f'cast("{name}" as varchar) as "{name}"' if dtype == "JSON" else f'"{name}"'
                    for name, dtype in columns
                )
                path = staging / f"{schema}.{table}.parquet"
                source.execute(
                    f'copy (select {select} from "{schema}"."{table}") to \'{path}\' (format parquet)'
                )
                copied[f"{schema}.{table}"] = source.execute(
                    f'select count(*) from "{schema}"."{table}"'
                ).fetchone()[0]
                tables.append(
                    {
                        "schema": schema,
                        "table": table,
                        "path": str(path),
                        "columns": [[name, spark_type(dtype)] for name, dtype in columns],
                    }
                )
    finally:
        source.close()
    manifest = staging / "manifest.json"
    manifest.write_text(json.dumps(tables), encoding="utf-8")
    _run_helper("load", manifest, env)
    return copied


def read_spark_tables(env: dict[str, str], schemas: Iterable[str], out: Path) -> dict[str, tuple[list, list]]:
    """Every table and view of `schemas` in the Spark warehouse: {schema.table: (columns, rows)}, the rows as
    Python values (timestamps naive UTC, arrays as lists, structs as dicts)."""
    request = out.with_suffix(".json")
    request.write_text(json.dumps({"schemas": list(schemas), "out": str(out)}), encoding="utf-8")
    _run_helper("dump", request, env)
    with out.open("rb") as handle:
        return pickle.load(handle)


def _load(manifest: Path) -> None:
    spark = _session()
    tables = json.loads(manifest.read_text(encoding="utf-8"))
    for schema in sorted({t["schema"] for t in tables}):
        spark.sql(f"create database if not exists `{schema}`")
    for t in tables:
        name = f"`{t['schema']}`.`{t['table']}`"
        ddl = ", ".join(f"`{column}` {dtype}" for column, dtype in t["columns"])
        spark.sql(f"drop table if exists {name}")
        spark.sql(f"create table {name} ({ddl}) using parquet")
        frame = spark.read.parquet(t["path"])
        casts = ", ".join(f"cast(`{column}` as {dtype}) as `{column}`" for column, dtype in t["columns"])
        frame.createOrReplaceTempView("source_rows")
        spark.sql(f"insert into {name} select {casts} from source_rows")
    spark.stop()


def _python(value: object) -> object:
    from pyspark.sql import Row

    if isinstance(value, Row):
        return {k: _python(v) for k, v in value.asDict().items()}
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_python(v) for v in value]
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None)
    return value


def _dump(request_path: Path) -> None:
    request = json.loads(request_path.read_text(encoding="utf-8"))
    spark = _session()
    result: dict[str, tuple[list, list]] = {}
    databases = {row[0] for row in spark.sql("show databases").collect()}
    for schema in request["schemas"]:
        if schema not in databases:
            continue
        for row in spark.sql(f"show tables in `{schema}`").collect():
            if row.isTemporary:
                continue
            frame = spark.table(f"`{schema}`.`{row.tableName}`")
            rows = [tuple(_python(v) for v in r) for r in frame.collect()]
            result[f"{schema}.{row.tableName}"] = (frame.columns, rows)
    spark.stop()
    with open(request["out"], "wb") as handle:
        pickle.dump(result, handle)


if __name__ == "__main__":
    action, argument = sys.argv[1], Path(sys.argv[2])
    {"load": _load, "dump": _dump}[action](argument)
