"""The same dbt build on DuckDB and on PostgreSQL (and Spark), from the same exports, in one run (ratios,
not absolutes).

    python bench/bench_engines.py --customers 100000 --workdir /tmp/nachfass_engines [--spark]

1. generate ``days`` (90) of exports for N customers and load them into DuckDB (bench_dbt.prepare: the
   same loader as the ingest asset; reused when the work dir has them);
2. copy the loaded files to PostgreSQL exactly as the ingest asset does on the postgres engine
   (``push_tables``: COPY in one transaction) into a throwaway local cluster (nachfass.devtools.pgserver),
   or into the server of the PG* variables with ``--use-env-server``;
3. ``dbt build --full-refresh`` on each engine, then a second ``dbt build`` (the incremental models only
   add what is new: nothing here, so this is the fixed cost of a scheduled run's dbt step), timing each,
   with peak memory of the PostgreSQL server's processes not measured (shared buffers, separate processes);
4. with ``--spark`` (the ``[spark]`` extra, Java 17, Debian's JDBC driver): what a run on the Spark engine
   does around its build (nachfass/core/warehouse/spark.py): the sources copied from PostgreSQL to Spark
   over JDBC, the two builds on Spark ``local[2]``, the models the Python steps read copied back, and the
   next run's push with nothing new loaded (only the loads Spark lacks travel).

Prints one table; docs/benchmarks.md records the figures with machine and load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_dbt import DBT_DIR, iso, prepare  # noqa: E402

from nachfass.core.dbt import dbt_vars_arg  # noqa: E402


def dbt_build(workdir: Path, env: dict[str, str], as_of: datetime, *extra: str) -> tuple[float, dict]:
    target = workdir / f"target-{env['NACHFASS_ENGINE']}"
    args = [
        str(Path(sys.executable).parent / "dbt"),
        "build",
        "--profiles-dir",
        ".",
        "--target-path",
        str(target),
        *dbt_vars_arg(iso(as_of)),
        *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run(args, cwd=DBT_DIR, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        print(result.stdout[-5000:], result.stderr[-2000:])
        raise SystemExit(f"dbt build on {env['NACHFASS_ENGINE']} failed")
    results = json.loads((target / "run_results.json").read_text())["results"]
    models = {
        r["unique_id"].split(".")[-1]: round(r["execution_time"], 2)
        for r in results
        if r["unique_id"].startswith("model.")
    }
    return elapsed, models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nachfass_engines"))
    parser.add_argument("--as-of", default="2026-11-24T10:00:00Z")
    parser.add_argument("--use-env-server", action="store_true", help="PostgreSQL from the PG* variables")
    parser.add_argument("--spark", action="store_true", help="also the Spark engine (push, builds, pull)")
    parser.add_argument(
        "--build-on",
        default="duckdb,postgres,spark",
        help="the engines whose builds are timed (comma-separated; e.g. spark alone for a second Spark run)",
    )
    args = parser.parse_args(argv)
    as_of = datetime.fromisoformat(args.as_of.replace("Z", "+00:00")).astimezone(UTC)
    workdir = args.workdir.resolve() / f"c{args.customers}"
    stats = prepare(workdir, args.customers, as_of, args.days)
    warehouse = workdir / "warehouse.duckdb"
    print(f"{args.customers:,} customers, {sum(stats.get('rows', {}).values()):,} export rows; load {stats}")

    from nachfass.core.warehouse import postgres as pgw
    from nachfass.core.warehouse.settings import PostgresSettings
    from nachfass.devtools import pgserver

    server = None
    if args.use_env_server:
        pg_env = {k: v for k, v in os.environ.items() if k.startswith("PG")}
    else:
        server = pgserver.start()
        pg_env = server.env(server.create_database("bench"))
    figures: dict[str, float] = {}
    try:
        settings = PostgresSettings.from_env(pg_env)
        pg = pgw.connect(settings)
        duck = duckdb.connect(str(warehouse), read_only=True)
        started = time.perf_counter()
        pgw.prepare_warehouse(pg)
        pushed = pgw.push_tables(duck, pg)
        figures["copy to PostgreSQL (push_tables)"] = time.perf_counter() - started
        duck.close()
        pg.close()
        print(f"copied {pushed.files} files, {sum(pushed.rows.values()):,} rows")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "NACHFASS_"))}
        engines = {
            "duckdb": base | {"NACHFASS_ENGINE": "duckdb", "NACHFASS_WAREHOUSE": str(warehouse)},
            "postgres": base | {"NACHFASS_ENGINE": "postgres", **pg_env},
        }
        if args.spark:
            from nachfass.core.warehouse import spark

            spark_env = {
                # the caller's Spark settings (e.g. NACHFASS_SPARK_DRIVER_MEMORY), then the bench's own
                **{k: v for k, v in os.environ.items() if k.startswith("NACHFASS_SPARK_")},
                "NACHFASS_ENGINE": "spark",
                "NACHFASS_DATA": str(workdir),
                "NACHFASS_SPARK_WAREHOUSE_DIR": str(workdir / "spark" / "warehouse"),
                "NACHFASS_SPARK_METASTORE_DIR": str(workdir / "spark" / "metastore_db"),
                "SPARK_LOCAL_IP": "127.0.0.1",
                "TZ": "UTC",
            }
            # a database of its own: the PostgreSQL build's views would pin the tables the pull replaces
            if server is not None:
                spark_env |= server.env(server.create_database("bench_spark"))
                prepared = pgw.connect(PostgresSettings.from_env(spark_env))
                pgw.prepare_warehouse(prepared)
                with duckdb.connect(str(warehouse), read_only=True) as duck:
                    pgw.push_tables(duck, prepared)
                prepared.close()
            else:
                spark_env |= pg_env
            os.environ.update(spark_env)  # the push and pull read the same settings as a run
            pushed_to_spark = spark.push_sources()
            figures["copy PostgreSQL to Spark (push_sources)"] = pushed_to_spark.seconds
            print(f"pushed to Spark: {pushed_to_spark.describe()}")
            engines["spark"] = base | spark_env
        models: dict[str, dict] = {}
        built = [name for name in engines if name in args.build_on.split(",")]
        for name in built:
            env = engines[name]
            figures[f"dbt build --full-refresh, {name}"], models[name] = dbt_build(
                workdir, env, as_of, "--full-refresh"
            )
            print(f"{name}: full build {figures[f'dbt build --full-refresh, {name}']:.1f} s", flush=True)
            figures[f"dbt build again (nothing new), {name}"], _ = dbt_build(workdir, env, as_of)
            print(
                f"{name}: full build {figures[f'dbt build --full-refresh, {name}']:.1f} s, "
                f"again {figures[f'dbt build again (nothing new), {name}']:.1f} s",
                flush=True,
            )
        if args.spark:
            pulled = spark.pull_models()
            figures["copy Spark to PostgreSQL (pull_models)"] = pulled.seconds
            print(f"pulled from Spark: {pulled.describe()}")
            # the next scheduled run's push: nothing new loaded, so the export tables are compared per load
            # and left alone; the ledger's tables are copied whole (what every later push costs at least)
            again = spark.push_sources()
            figures["push again, nothing new (incremental)"] = again.seconds
            print(f"pushed to Spark again: {again.describe()}")
    finally:
        if server is not None:
            server.stop()
    print(f"\n{'stage':<45} {'seconds':>8}")
    for stage, seconds in figures.items():
        print(f"{stage:<45} {seconds:>8.1f}")
    full = {e: figures[f"dbt build --full-refresh, {e}"] for e in models}
    if "duckdb" in full:
        for name, label in (("postgres", "PostgreSQL"), ("spark", "Spark")):
            if name in full:
                print(f"\nfull build {label} / DuckDB: {full[name] / full['duckdb']:.2f}")
    print("\nslowest models (full build, s):")
    reference = "postgres" if "postgres" in models else next(iter(models))
    for model in sorted(models[reference], key=lambda m: -models[reference][m])[:8]:
        print("  " + f"{model:<34}" + "".join(f" {e} {models[e].get(model, 0):>7.2f}" for e in models))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
