"""Apache Spark as the engine of the dbt project, with the Python steps' state in PostgreSQL beside it.

``NACHFASS_ENGINE=spark``: dbt builds every model on Spark (dbt-spark's session method, ``dbt/profiles.yml``
output ``spark``); the ingest, the ledger, the events and erasure keep their tables in PostgreSQL (the libpq
variables, as with ``NACHFASS_ENGINE=postgres``).

Why the ledger is not a Spark table: the at-most-once guarantee needs a unique key that a second writer
cannot pass and rows a run can lock. Spark's parquet tables have neither (no unique constraint, no
``MERGE``/``UPDATE``/``DELETE``); in a probe race of two writers on one parquet table, keys were claimed
twice in 2 of 3 attempts. Delta Lake or Iceberg would give ``MERGE``, but their jars come from Maven only.
So PostgreSQL stays the system of record and Spark does the heavy SQL. Around each dbt build on Spark:

1. ``push_sources``: every table dbt reads as a source (``dbt/models/staging/_sources.yml``: the exports'
   ``raw.*``, ``raw.sendgrid_events``, the ledger's ``mail.*``) is read from PostgreSQL over JDBC and
   written to the Spark table of the same name. PostgreSQL is the truth. The tables that grow by loaded
   file (``LOAD_KEYS``: the exports, the events, the quarantine) get only the loads Spark lacks, appended,
   when Spark's copy is exactly PostgreSQL's loads so far (``plan_push``); every other table, and any
   table whose copy differs (an erasure deleted rows, a column was added, too many small files), is
   overwritten whole; after an erasure everything is (``rebuild_after_erasure``);
2. dbt builds on Spark (its own JVM, in dbt's process);
3. ``pull_models``: the models the Python steps read (``PULLED_MODELS``: the candidates the render step
   sends from, the tables of the blocking consent check, the analytics) are written from Spark to
   PostgreSQL over JDBC into new tables, which replace the old ones in one transaction, so a reader sees
   the previous build or this one, never half of it.

Each Spark step runs in a process of its own (``python -m nachfass.core.warehouse.spark``): the catalog is
an embedded Derby metastore that one JVM at a time can open, and dbt's session starts its own JVM. The run's
decision lock (``decision_lock.py``) is held across push, build and pull, so two runs never interleave them.

The JDBC driver is Debian's ``libpostgresql-jdbc-java`` (``/usr/share/java/postgresql.jar``; another path
with ``NACHFASS_SPARK_JDBC_JAR``). The password travels from ``PGPASSWORD`` to the driver inside the Spark
process only: it is never written to the metastore, a table option, a log line or an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from nachfass.core import paths
from nachfass.core.warehouse.settings import PostgresSettings, SettingsError

DEFAULT_JDBC_JAR = "/usr/share/java/postgresql.jar"
JDBC_JAR_VAR = "NACHFASS_SPARK_JDBC_JAR"
# The models the Python steps read after a build, by schema; ``None``: every model of the schema.
PULLED_MODELS: dict[str, tuple[str, ...] | None] = {
    "eligibility": None,  # mail_candidates: the render step, the run's summary, the consent check
    "analytics": None,  # ab_results, campaign_performance, build_settings ...: checks, summary, report
    "intermediate": ("int_consent_state",),  # the blocking consent check (dagster_project/checks.py)
    "staging": ("stg_orders",),  # the same check: who is an existing customer
}
PULL_SUFFIX = "__from_spark"
# The columns that name one load of a file (the ingest stamps a file's rows with its path and one time; a
# path loaded again with new content is a new load): tables with them only grow by whole loads.
LOAD_KEYS: tuple[tuple[str, str], ...] = (("_file", "_loaded_at"), ("source_file", "quarantined_at"))
# Appending makes small parquet files; past this many, a table is rewritten whole (compacted) instead.
COMPACT_FILES_VAR = "NACHFASS_SPARK_COMPACT_FILES"
DEFAULT_COMPACT_FILES = 200


class SparkStepError(RuntimeError):
    """A push or pull did not complete; the message has the step and the Spark process's last lines."""


@dataclass
class TransferReport:
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)  # schema.table -> rows the target holds afterwards
    # push only: schema.table -> "copied" (whole), "appended" (new loads only) or "unchanged"
    modes: dict[str, str] = field(default_factory=dict)
    appended: dict[str, int] = field(default_factory=dict)  # schema.table -> rows appended
    reasons: dict[str, str] = field(default_factory=dict)  # schema.table -> why copied whole

    def describe(self) -> str:
        total = sum(self.rows.values())
        text = f"{len(self.rows)} tables, {total:,} rows in {self.seconds:.1f} s"
        if self.modes:
            counts = {m: list(self.modes.values()).count(m) for m in ("copied", "appended", "unchanged")}
            text += (
                f" ({counts['copied']} copied whole, {counts['appended']} with "
                f"{sum(self.appended.values()):,} new rows appended, {counts['unchanged']} unchanged)"
            )
        return text


@dataclass(frozen=True)
class PushPlan:
    """What the push does with one table: ``copied`` whole, ``appended`` (the ``loads`` Spark lacks), or
    ``unchanged``; ``reason`` says why a table with load keys is copied whole."""

    action: str
    loads: tuple[tuple[str, str], ...] = ()
    reason: str = ""


def load_key(columns: Iterable[str]) -> tuple[str, str] | None:
    """The pair of ``LOAD_KEYS`` the table has, or None (the table is always copied whole)."""
    present = set(columns)
    return next((key for key in LOAD_KEYS if set(key) <= present), None)


def plan_push(
    target_loads: Mapping[tuple[str, str], int] | None,
    source_loads: Mapping[tuple[str, str], int],
    *,
    same_columns: bool = True,
    files: int = 0,
    max_files: int = DEFAULT_COMPACT_FILES,
    erasures_changed: bool = False,
) -> PushPlan:
    """Decide the push of a table with load keys from its loads ({(file, loaded_at): rows}) in Spark
    (``target_loads``; None: no such table yet) and in PostgreSQL (``source_loads``). Appending is only
    right when every load Spark holds is in PostgreSQL with the same number of rows: rows deleted there
    (an erasure, a cleanup) or a load Spark has and PostgreSQL lacks mean Spark's copy is no longer a
    prefix of the truth, so it is replaced whole."""
    if target_loads is None:
        return PushPlan("copied", reason="not in Spark yet")
    if erasures_changed:
        return PushPlan("copied", reason="a person was erased since the last push")
    if not same_columns:
        return PushPlan("copied", reason="the columns changed")
    for load, rows in target_loads.items():
        if source_loads.get(load) != rows:
            return PushPlan("copied", reason=f"load {load[0]} differs ({rows} rows in Spark)")
    new = tuple(sorted(load for load in source_loads if load not in target_loads))
    if not new:
        return PushPlan("unchanged")
    if files >= max_files:
        return PushPlan("copied", reason=f"{files} parquet files: rewritten whole to compact them")
    return PushPlan("appended", loads=new)


def jdbc_jar(env: Mapping[str, str] | None = None) -> str:
    """The PostgreSQL JDBC driver's jar, checked (one line saying how to get it)."""
    env = os.environ if env is None else env
    jar = env.get(JDBC_JAR_VAR) or DEFAULT_JDBC_JAR
    if not Path(jar).is_file():
        raise SettingsError(
            f"NACHFASS_ENGINE=spark reads and writes PostgreSQL over JDBC, but the driver {jar} is missing: "
            f"apt-get install libpostgresql-jdbc-java, or set {JDBC_JAR_VAR} to the jar"
        )
    return jar


def check_runtime(env: Mapping[str, str] | None = None) -> None:
    """What the Spark engine needs on this machine, checked before a run opens anything: java, pyspark and
    the JDBC driver (SettingsError, one line, naming what to install)."""
    import importlib.util
    import shutil

    env = os.environ if env is None else env
    if shutil.which("java") is None and not env.get("JAVA_HOME"):
        raise SettingsError(
            "NACHFASS_ENGINE=spark needs Java 17+ (no java on PATH, no JAVA_HOME): "
            "apt-get install openjdk-17-jre-headless"
        )
    if importlib.util.find_spec("pyspark") is None:
        raise SettingsError("NACHFASS_ENGINE=spark needs pyspark and dbt-spark: pip install -e '.[spark]'")
    jdbc_jar(env)


def source_tables(sources_file: Path | None = None) -> list[tuple[str, str]]:
    """(schema, table) of every dbt source of the project (``$NACHFASS_DBT_PROJECT`` or the repository's),
    in the file's order."""
    import yaml

    sources_file = sources_file or paths.dbt_project_dir() / "models" / "staging" / "_sources.yml"
    document = yaml.safe_load(sources_file.read_text(encoding="utf-8"))
    tables = []
    for source in document.get("sources", []):
        schema = source.get("schema") or source["name"]
        for table in source.get("tables", []):
            tables.append((schema, table.get("identifier") or table["name"]))
    return tables


def session_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Spark settings of dbt's profile (output ``spark``), from the same variables and defaults, so the
    push and pull processes open the catalog dbt builds in."""
    env = os.environ if env is None else env
    data = env.get("NACHFASS_DATA") or str(paths.data_dir())
    metastore = env.get("NACHFASS_SPARK_METASTORE_DIR") or f"{data}/spark/metastore_db"
    return {
        "spark.master": env.get("NACHFASS_SPARK_MASTER") or "local[2]",
        "spark.driver.memory": env.get("NACHFASS_SPARK_DRIVER_MEMORY") or "2g",
        "spark.sql.warehouse.dir": env.get("NACHFASS_SPARK_WAREHOUSE_DIR") or f"{data}/spark/warehouse",
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={metastore};create=true",
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={metastore}/.. -Duser.timezone=UTC",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": env.get("NACHFASS_SPARK_SHUFFLE_PARTITIONS") or "2",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.jsonGenerator.ignoreNullFields": "false",
        "spark.sql.parquet.inferTimestampNTZ.enabled": "false",
        "spark.sql.constraintPropagation.enabled": "false",
    }


def spark_session(extra: Mapping[str, str] | None = None):  # noqa: ANN201 (pyspark is an optional extra)
    """A SparkSession with the profile's settings (and ``extra``), Hive catalog enabled."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in {**session_settings(), **(extra or {})}.items():
        builder = builder.config(key, value)
    spark = builder.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _jdbc(settings: PostgresSettings) -> tuple[str, dict[str, str]]:
    url = f"jdbc:postgresql://{settings.host}:{settings.port}/{settings.dbname}"
    # fetchsize: the driver streams a big table in batches instead of holding all of it in the JVM's heap
    properties = {"user": settings.user, "driver": "org.postgresql.Driver", "fetchsize": "10000"}
    if settings.password is not None:
        properties["password"] = settings.password
    return url, properties


def _quoted(schema: str, table: str) -> str:
    return f"`{schema}`.`{table}`"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def loads_filter(key: tuple[str, str], loads: Iterable[tuple[str, str]]) -> str:
    """A PostgreSQL condition selecting the rows of ``loads`` ((file, loaded_at as text) pairs)."""
    file_column, time_column = key
    pairs = ", ".join(f"({_literal(f)}, timestamp {_literal(t)})" for f, t in loads)
    return f'("{file_column}", "{time_column}") in ({pairs})'


# --- inside the Spark process -------------------------------------------------------------------------


def _spark_loads(spark, schema: str, table: str, key: tuple[str, str]) -> dict[tuple[str, str], int]:
    file_column, time_column = key
    result = spark.sql(
        f"select `{file_column}`, date_format(`{time_column}`, 'yyyy-MM-dd HH:mm:ss.SSSSSS'), count(*) "
        f"from {_quoted(schema, table)} group by 1, 2"
    ).collect()
    return {(row[0], row[1]): row[2] for row in result}


def _postgres_loads(spark, url, properties, schema: str, table: str, key: tuple[str, str]):
    file_column, time_column = key
    query = (
        f'(select "{file_column}" as f, to_char("{time_column}", \'YYYY-MM-DD HH24:MI:SS.US\') as t, '
        f'count(*) as n from "{schema}"."{table}" group by 1, 2) as loads'
    )
    return {(row.f, row.t): row.n for row in spark.read.jdbc(url, query, properties=properties).collect()}


def _erasures(read) -> tuple | None:
    try:
        row = read().selectExpr("count(*)", "cast(max(erased_at) as string)").collect()[0]
    except Exception:  # noqa: BLE001 (no such table yet)
        return None
    return (row[0], row[1])


def _push(request: dict[str, Any]) -> dict[str, Any]:
    spark = spark_session({"spark.jars": request["jar"]})
    url, properties = _jdbc(PostgresSettings.from_env())
    existing = {row[0] for row in spark.sql("show databases").collect()}

    def exists(schema: str, table: str) -> bool:
        return schema in existing and spark.catalog.tableExists(table, schema)

    full = request.get("full", False)
    # An erasure deletes rows in PostgreSQL; compared before mail.erasures itself is pushed
    erasures_changed = _erasures(lambda: spark.table("`mail`.`erasures`")) != _erasures(
        lambda: spark.read.jdbc(url, '"mail"."erasures"', properties=properties)
    )
    max_files = int(request.get("max_files", DEFAULT_COMPACT_FILES))
    answer: dict[str, Any] = {"rows": {}, "modes": {}, "appended": {}, "reasons": {}}
    for schema, table in request["tables"]:
        name = f"{schema}.{table}"
        frame = spark.read.jdbc(url, f'"{schema}"."{table}"', properties=properties)
        key = load_key(frame.columns)
        plan, source_loads = PushPlan("copied"), {}
        if key is not None and not full:
            present = exists(schema, table)
            current = spark.table(_quoted(schema, table)) if present else None
            source_loads = _postgres_loads(spark, url, properties, schema, table, key)
            plan = plan_push(
                _spark_loads(spark, schema, table, key) if present else None,
                source_loads,
                same_columns=current is not None and current.dtypes == frame.dtypes,
                files=len(current.inputFiles()) if current is not None else 0,
                max_files=max_files,
                erasures_changed=erasures_changed,
            )
        if plan.action == "appended":
            query = f'(select * from "{schema}"."{table}" where {loads_filter(key, plan.loads)}) as new_loads'
            new_rows = spark.read.jdbc(url, query, properties=properties)
            new_rows.write.mode("append").format("parquet").saveAsTable(_quoted(schema, table))
            answer["appended"][name] = sum(source_loads[load] for load in plan.loads)
        elif plan.action == "copied":
            spark.sql(f"create database if not exists `{schema}`")
            existing.add(schema)
            frame.write.mode("overwrite").format("parquet").saveAsTable(_quoted(schema, table))
        answer["modes"][name] = plan.action
        if plan.reason and key is not None and not full:
            answer["reasons"][name] = plan.reason
        answer["rows"][name] = spark.table(_quoted(schema, table)).count()
    spark.stop()
    return answer


def _pull(request: dict[str, Any]) -> dict[str, int]:
    spark = spark_session({"spark.jars": request["jar"]})
    url, properties = _jdbc(PostgresSettings.from_env())
    databases = {row[0] for row in spark.sql("show databases").collect()}
    built = {
        schema: [
            row.tableName for row in spark.sql(f"show tables in `{schema}`").collect() if not row.isTemporary
        ]
        for schema in PULLED_MODELS
        if schema in databases
    }
    rows = {}
    for schema, table in pulled_models(built):
        frame = spark.table(_quoted(schema, table))
        frame.write.jdbc(url, f'"{schema}"."{table}{PULL_SUFFIX}"', mode="overwrite", properties=properties)
        rows[f"{schema}.{table}"] = frame.count()
    spark.stop()
    return rows


# --- in the calling process ---------------------------------------------------------------------------


def _scrub(text: str, settings: PostgresSettings) -> str:
    return text.replace(settings.password, "***") if settings.password else text


def _run_step(action: str, request: dict[str, Any], *, timeout_s: float) -> Any:
    """Run one Spark step in a process of its own; its JSON answer, or SparkStepError with its last lines."""
    settings = PostgresSettings.from_env()
    answer = paths.data_dir() / "spark" / f".{action}-{os.getpid()}.json"
    answer.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TZ": "UTC", "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "nachfass.core.warehouse.spark", action, str(answer)],
            input=json.dumps(request),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise SparkStepError(
                f"Spark {action} failed (exit {result.returncode}):\n{_scrub(tail, settings)}"
            )
        return json.loads(answer.read_text(encoding="utf-8"))
    except subprocess.TimeoutExpired:
        raise SparkStepError(f"Spark {action} did not finish within {timeout_s:.0f} s") from None
    finally:
        answer.unlink(missing_ok=True)


def push_sources(
    *, tables: Iterable[tuple[str, str]] | None = None, full: bool = False, timeout_s: float = 3600.0
) -> TransferReport:
    """Bring Spark's copy of every dbt source table up to PostgreSQL's (see the module docstring): new
    loads appended where that is exact, everything else copied whole; ``full``: every table copied whole.
    ``report.reasons`` says why a table that could have been appended was copied whole."""
    started = time.perf_counter()
    wanted = list(tables) if tables is not None else source_tables()
    request = {
        "jar": jdbc_jar(),
        "tables": wanted,
        "full": full,
        "max_files": int(os.environ.get(COMPACT_FILES_VAR) or DEFAULT_COMPACT_FILES),
    }
    answer = _run_step("push", request, timeout_s=timeout_s)
    return TransferReport(
        time.perf_counter() - started, answer["rows"], answer["modes"], answer["appended"], answer["reasons"]
    )


def pulled_models(built: Mapping[str, Iterable[str]]) -> list[tuple[str, str]]:
    """(schema, table) of ``PULLED_MODELS`` among the models ``built`` holds ({schema: [tables]})."""
    chosen = []
    for schema, names in PULLED_MODELS.items():
        present = set(built.get(schema, ()))
        for table in sorted(present) if names is None else names:
            if table in present:
                chosen.append((schema, table))
    return chosen


def pull_models(
    conn_factory: Callable[[], Any] | None = None, *, timeout_s: float = 3600.0
) -> TransferReport:
    """Copy ``PULLED_MODELS`` from Spark into PostgreSQL: written beside the old tables, then swapped in one
    transaction (see the module docstring)."""
    import psycopg2.errors

    from nachfass.core.warehouse import postgres

    started = time.perf_counter()
    connect = conn_factory or postgres.connect
    conn = connect()
    try:
        with postgres.transaction(conn) as cur:
            for schema in PULLED_MODELS:
                cur.execute(f'create schema if not exists "{schema}"')
        rows = _run_step("pull", {"jar": jdbc_jar()}, timeout_s=timeout_s)
        tables = [tuple(name.split(".", 1)) for name in rows]
        with postgres.transaction(conn) as cur:
            for schema, table in tables:
                # Spark writes its timestamps as `timestamp with time zone`; the models' contracts (and the
                # DuckDB and PostgreSQL builds) say `timestamp`, UTC without a zone, which the steps expect
                cur.execute(
                    "select column_name from information_schema.columns where table_schema = %s "
                    "and table_name = %s and data_type = 'timestamp with time zone'",
                    [schema, f"{table}{PULL_SUFFIX}"],
                )
                changes = [
                    f'alter column "{column}" type timestamp using "{column}" at time zone \'UTC\''
                    for (column,) in cur.fetchall()
                ]
                if changes:  # one statement: the table is rewritten once
                    cur.execute(f'alter table "{schema}"."{table}{PULL_SUFFIX}" ' + ", ".join(changes))
                try:
                    cur.execute(f'drop table if exists "{schema}"."{table}"')
                except psycopg2.errors.DependentObjectsStillExist as exc:
                    raise SparkStepError(
                        f"cannot replace {schema}.{table} in PostgreSQL: {exc.diag.message_detail} "
                        "(left by a dbt build on PostgreSQL in this database? give the Spark engine a "
                        "database of its own, or drop the dependent views)"
                    ) from None
                cur.execute(f'alter table "{schema}"."{table}{PULL_SUFFIX}" rename to "{table}"')
    finally:
        conn.close()
    return TransferReport(time.perf_counter() - started, rows)


def last_build_as_of(conn) -> Any:
    """The as_of of the last build whose models were pulled (``analytics.build_settings``), or None."""
    try:
        row = conn.execute("select max(as_of) from analytics.build_settings").fetchone()
    except Exception:  # noqa: BLE001 (no build pulled yet: the table does not exist)
        return None
    value = row[0] if row else None
    if value is not None and getattr(value, "tzinfo", None) is None:
        value = value.replace(tzinfo=UTC)  # naive timestamps are UTC in every table
    return value


def rebuild_after_erasure(as_of: Any, *, timeout_s: float = 3600.0) -> TransferReport:
    """After an erasure in PostgreSQL: push the (now erased) sources and rebuild every model on Spark at the
    last build's ``as_of``, so no table in Spark's warehouse keeps the person. Spark replaces a table's
    parquet files when it rewrites it; the copies in PostgreSQL were erased by the erasure itself."""
    from nachfass.core.dbt import DBT_EXECUTABLE, dbt_vars_arg

    started = time.perf_counter()
    pushed = push_sources(full=True, timeout_s=timeout_s)
    if as_of is not None:
        command = [
            DBT_EXECUTABLE,
            "run",
            *dbt_vars_arg(as_of),
            "--profiles-dir",
            str(paths.dbt_project_dir()),
        ]
        result = subprocess.run(
            command,
            cwd=paths.dbt_project_dir(),
            env={**os.environ, "TZ": "UTC"},
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stdout.strip().splitlines()[-15:])
            raise SparkStepError(
                f"rebuilding the models on Spark failed:\n{_scrub(tail, PostgresSettings.from_env())}"
            )
    return TransferReport(time.perf_counter() - started, pushed.rows)


def main(argv: list[str]) -> int:
    action, answer = argv[0], Path(argv[1])
    request = json.loads(sys.stdin.read())
    steps = {"push": _push, "pull": _pull}
    result = steps[action](request)
    answer.write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
