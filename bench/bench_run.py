"""Benchmark the whole run at several sizes (issue 14): the growth table.

    python bench/bench_run.py --customers 10000 100000 300000 [1000000] --workdir /tmp/nachfass_ingest \
        [--memory-limit 2GiB] [--daily]

For each size it generates the sample exports once (seed 42, as of END; ``bench_replay.sample_landing``,
kept in the workdir, never timed), then runs the real CLI as a new process, as an operator or cron would:

1. the first run, ``nachfass run --as-of END`` into a fresh warehouse and outbox;
2. a scheduled 15-minute run on the same warehouse, ``--job frequent_mails_job --partition <slot>`` for
   the slot that ends 15 minutes after END;
3. with ``--daily``, the daily job for the day whose slot ends the next morning (09:00 shop time);
4. with ``--daily-after-frequent`` as well, the daily run once more on a copy of the warehouse as it was
   before it (a fresh outbox), this time after the 15-minute run of the slot ending 15 minutes before it: a
   shop with the 15-minute schedule on runs its daily job after the day's first 15-minute run, which
   computed the day's co-purchase pairs and brought the updated models up to date (docs/benchmarks.md).
   That 15-minute run is the copy's first, so it parses the dbt project for the copied warehouse once.

Per stage (a Dagster step, read off the progress lines on stderr: a finished step prints its duration) it
reports the seconds and the peak RSS of the whole process tree while the stage ran (the tree's summed RSS,
sampled every 0.2 s with psutil; dbt runs in a child process). "startup" is spawn → first step start,
"after" is last step end → exit (the closing summary). Per run: wall time, mails in the outbox, rows in
mail.sends, and whether the closing summary listed the candidates and the ledger (it fails if not). The
growth columns divide a stage's time by the smallest size's, and that by the growth of the export rows:
≤ 1 means the stage grew no faster than its input. The load average is printed with every row (the
machine may be shared).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_replay import END, sample_landing  # noqa: E402

NACHFASS = [sys.executable, "-m", "nachfass.cli.main"]
FINISHED = re.compile(r"([✓✗])\s+(\S+)\s+([0-9.]+) s\s*$")
SAMPLE_S = 0.2
# The job's asset steps; every other step is an asset check's.
ASSET_STEPS = {
    "raw_exports",
    "events__sendgrid_events",
    "nachfass_dbt_assets",
    "mail__rendered_mails",
    "mail__sent_mails",
}
GIB = 1024**3


@dataclass
class Stage:
    name: str
    start: float  # seconds since spawn
    end: float
    ok: bool = True
    peak_rss: int = 0


@dataclass
class RunResult:
    label: str
    code: int
    wall: float
    stages: list[Stage]
    peak_rss: int
    stdout: str
    stderr: str
    load: tuple[float, float, float]
    first_step: float | None = None
    outbox_mails: int = 0
    sends: int = 0
    sent_now: int = 0
    summary_ok: bool = True
    notes: list[str] = field(default_factory=list)


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        with contextlib.suppress(psutil.Error):  # a child that just exited
            total += member.memory_info().rss
    return total


def run_cli(label: str, args: list[str], env: dict[str, str]) -> RunResult:
    """``nachfass <args>`` in a new process; the step lines with their arrival times and the RSS samples."""
    lines: list[tuple[float, str]] = []
    samples: list[tuple[float, int]] = []
    started = time.time()
    proc = subprocess.Popen(
        [*NACHFASS, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ps = psutil.Process(proc.pid)
    out_chunks: list[str] = []

    def read_stderr() -> None:
        for line in proc.stderr:
            lines.append((time.time() - started, line))

    def read_stdout() -> None:
        out_chunks.append(proc.stdout.read())

    readers = [threading.Thread(target=read_stderr), threading.Thread(target=read_stdout)]
    for reader in readers:
        reader.start()
    while proc.poll() is None:
        samples.append((time.time() - started, tree_rss(ps)))
        time.sleep(SAMPLE_S)
    wall = time.time() - started
    for reader in readers:
        reader.join()
    stages = []
    for at, line in lines:
        if (match := FINISHED.search(line)) is not None:
            took = float(match.group(3))
            stages.append(Stage(match.group(2), at - took, at, ok=match.group(1) == "✓"))
    first = min((s.start for s in stages), default=None)
    last = max((s.end for s in stages), default=wall)
    stages = [
        Stage("startup", 0.0, first if first is not None else wall),
        *stages,
        Stage("after", last, wall),
    ]
    for stage in stages:
        # the samples while the stage ran, and the one just before it started (a short stage may fall
        # between two samples)
        inside = [rss for t, rss in samples if stage.start - SAMPLE_S <= t <= stage.end]
        stage.peak_rss = max(inside, default=0)
    # The asset checks' steps (each well under a second at 10k): one row with their summed time.
    checks = [s for s in stages[1:-1] if s.name not in ASSET_STEPS]
    if checks:
        summed = Stage("asset checks (summed)", 0.0, sum(s.end - s.start for s in checks))
        summed.ok = all(s.ok for s in checks)
        summed.peak_rss = max(s.peak_rss for s in checks)
        stages = [s for s in stages if s not in checks]
        stages.insert(-1, summed)
    return RunResult(
        label=label,
        code=proc.returncode,
        wall=wall,
        stages=stages,
        peak_rss=max((rss for _, rss in samples), default=0),
        stdout="".join(out_chunks),
        stderr="".join(line for _, line in lines),
        load=os.getloadavg(),
        first_step=first,
    )


def frequent_slot() -> str:
    """The frequent job's partition whose slot starts at END, i.e. ends (and decides as of) END + 15 min."""
    from nachfass.core.shop import load_shop_settings

    return END.astimezone(ZoneInfo(load_shop_settings().timezone)).strftime("%Y-%m-%d-%H:%M")


def daily_slot() -> str:
    """The daily job's partition whose slot ends at the first 09:00 (shop time) after END + 12 h: the
    next morning's run. Its key is the day before that morning."""
    from nachfass.core.shop import load_shop_settings

    local = (END + timedelta(hours=12)).astimezone(ZoneInfo(load_shop_settings().timezone))
    morning = local.replace(hour=9, minute=0, second=0, microsecond=0)
    if morning <= local:
        morning += timedelta(days=1)
    return (morning - timedelta(days=1)).strftime("%Y-%m-%d")


def frequent_slot_before_daily() -> str:
    """The frequent job's partition whose slot ends 15 minutes before the daily run's (09:00 shop time)."""
    from nachfass.core.shop import load_shop_settings

    day = datetime.strptime(daily_slot(), "%Y-%m-%d") + timedelta(days=1)
    morning = day.replace(hour=9, tzinfo=ZoneInfo(load_shop_settings().timezone))
    return (morning - timedelta(minutes=30)).strftime("%Y-%m-%d-%H:%M")


def section_rows(stdout: str, title: str) -> int | None:
    """Rows the closing summary listed under a section (None: no such section)."""
    text = stdout.split(title, 1)
    if len(text) < 2:
        return None
    rows = 0
    for line in text[1].splitlines()[1:]:
        if not line.startswith("  "):
            break
        rows += 1
    return rows


# the summary's sections and the table each one counts
SECTIONS = {
    "Candidates by campaign, decision and reason": "eligibility.mail_candidates",
    "Send ledger (mail.sends)": "mail.sends",
}


def inspect(result: RunResult, warehouse: Path, outbox: Path, sends_before: int) -> None:
    result.outbox_mails = len(list(outbox.glob("*.eml"))) if outbox.is_dir() else 0
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        result.sends = conn.execute("select count(*) from mail.sends").fetchone()[0]
        held = {
            table: conn.execute(f"select count(*) from {table}").fetchone()[0] for table in SECTIONS.values()
        }
    result.sent_now = result.sends - sends_before
    for title, table in SECTIONS.items():
        listed = section_rows(result.stdout, title)
        if result.code == 0 and held[table] and not listed:
            result.summary_ok = False
            result.notes.append(
                f"CLOSING SUMMARY EMPTY: {table} holds {held[table]:,} rows, the summary listed "
                f"{'no such section' if listed is None else 'no rows'}"
            )


def export_rows(warehouse: Path) -> int:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute("select coalesce(sum(rows_loaded), 0) from raw.loaded_files").fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nachfass_run"))
    parser.add_argument("--rundir", type=Path, help="warehouses and outboxes (default WORKDIR/bench_run)")
    parser.add_argument("--memory-limit", help="NACHFASS_DUCKDB_MEMORY_LIMIT for the runs, e.g. 2GiB")
    parser.add_argument("--daily", action="store_true", help="also the daily job the next morning")
    parser.add_argument(
        "--daily-after-frequent",
        action="store_true",
        help="with --daily: the daily run again on a copy, after the 15-minute run just before it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the warehouses and outboxes")
    args = parser.parse_args(argv)
    if args.daily_after_frequent and not args.daily:
        parser.error("--daily-after-frequent needs --daily")

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / GIB:.0f} GiB; python {platform.python_version()}; "
        f"duckdb {duckdb.__version__}; memory limit {args.memory_limit or 'default (80%)'}",
        flush=True,
    )
    rundir = args.rundir or args.workdir / "bench_run"
    table: list[tuple[int, int, RunResult]] = []
    failed = False
    for customers in args.customers:
        landing = sample_landing(args.workdir, customers)
        run = rundir / f"run-{customers}"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        warehouse, outbox = run / "warehouse.duckdb", run / "outbox"
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
        env.pop("NACHFASS_ENGINE", None)
        if args.memory_limit:
            env["NACHFASS_DUCKDB_MEMORY_LIMIT"] = args.memory_limit
        common = ["--landing", str(landing), "--warehouse", str(warehouse), "--outbox", str(outbox)]
        plan = [("first run", ["run", *common, "--as-of", END.isoformat()])]
        plan.append(
            ("15-min run", ["run", *common, "--job", "frequent_mails_job", "--partition", frequent_slot()])
        )
        daily = ["--job", "daily_mails_job", "--partition", daily_slot()]
        if args.daily:
            plan.append(("daily run", ["run", *common, *daily]))
        # the second daily run's copy: the warehouse (and what lies beside it) as before the first daily run
        other = rundir / f"run-{customers}-after-15-min"
        if args.daily_after_frequent:
            shutil.rmtree(other, ignore_errors=True)
            other_common = [
                "--landing", str(landing),
                "--warehouse", str(other / warehouse.name),
                "--outbox", str(other / outbox.name),
            ]  # fmt: skip
            frequent = ["--job", "frequent_mails_job", "--partition", frequent_slot_before_daily()]
            plan += [
                ("15-min run before daily", ["run", *other_common, *frequent]),
                ("daily run after 15-min", ["run", *other_common, *daily]),
            ]
        leftovers = (warehouse, warehouse.with_name(warehouse.name + ".wal"), outbox)
        rows = 0
        sends = copied_sends = 0
        for label, cli_args in plan:
            if label == "daily run" and args.daily_after_frequent:
                shutil.copytree(run, other, ignore=shutil.ignore_patterns(outbox.name, "*.txt"))
                copied_sends = sends  # the copy's ledger is the one before the daily run
            if label == "15-min run before daily":
                run, warehouse, outbox = other, other / warehouse.name, other / outbox.name
                sends = copied_sends
            print(f"{customers:,} customers, {label}: nachfass {' '.join(cli_args)}", flush=True)
            result = run_cli(label, cli_args, env)
            (run / f"{label.replace(' ', '_')}.stdout.txt").write_text(result.stdout)
            (run / f"{label.replace(' ', '_')}.stderr.txt").write_text(result.stderr)
            if result.code != 0:
                failed = True
                result.notes.append(f"EXIT CODE {result.code}; stderr tail: {result.stderr[-2000:]}")
            else:
                inspect(result, warehouse, outbox, sends)
                sends = result.sends
                rows = rows or export_rows(warehouse)
                failed |= not result.summary_ok
            table.append((customers, rows, result))
            print_run(customers, rows, result)
        if not args.keep:
            shutil.rmtree(other, ignore_errors=True)
            for leftover in leftovers:
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
    print_growth(table)
    return 1 if failed else 0


def print_run(customers: int, rows: int, r: RunResult) -> None:
    load = "/".join(f"{x:.1f}" for x in r.load)
    first = f"{r.first_step:.1f} s" if r.first_step is not None else "-"
    print(
        f"  {customers:>9,} customers ({rows:,} export rows), {r.label}: exit {r.code}, "
        f"wall {r.wall:.1f} s, first step after {first}, peak RSS {r.peak_rss / GIB:.2f} GiB, "
        f"mails in outbox {r.outbox_mails:,}, mail.sends {r.sends:,} (+{r.sent_now:,}), load {load}",
        flush=True,
    )
    for stage in r.stages:
        mark = "" if stage.ok else "  FAILED"
        print(
            f"    {stage.name:<52} {stage.end - stage.start:8.1f} s  {stage.peak_rss / GIB:6.2f} GiB{mark}",
            flush=True,
        )
    for note in r.notes:
        print(f"  !! {note}", flush=True)


def print_growth(table: list[tuple[int, int, RunResult]]) -> None:
    """One row per size, run and stage; time growth against the smallest size, and against the input."""
    if not table:
        return
    print("\ngrowth table (time ratio = stage time / smallest size's; per input = that / export-row ratio)")
    header = f"{'customers':>10} {'export rows':>12} {'run':<23} {'stage':<36} {'s':>8} {'GiB':>6}"
    print(f"{header} {'x time':>7} {'/input':>7}  load")
    base: dict[tuple[str, str], float] = {}
    base_rows: dict[str, int] = {}
    # the export rows of a size, also for a run that failed before they could be counted
    rows_of = {customers: max(rows for c, rows, _ in table if c == customers) for customers, _, _ in table}
    for customers, _, r in table:
        rows = rows_of[customers]
        base_rows.setdefault(r.label, rows)
        stages = [*r.stages, Stage("total (wall)", 0.0, r.wall, peak_rss=r.peak_rss)]
        for stage in stages:
            took = stage.end - stage.start
            key = (r.label, stage.name)
            base.setdefault(key, took)
            input_growth = rows / base_rows[r.label] if base_rows[r.label] else 0
            if base[key] >= 1.0 and input_growth:  # under a second the ratio says nothing
                growth = took / base[key]
                ratios = f"{growth:7.2f} {growth / input_growth:7.2f}"
            else:
                ratios = f"{'-':>7} {'-':>7}"
            if not stage.ok or r.code != 0 and stage.name == "total (wall)":
                ratios = f"{'FAILED':>15}"
            load = "/".join(f"{x:.1f}" for x in r.load)
            print(
                f"{customers:>10,} {rows:>12,} {r.label:<23} {stage.name[:36]:<36} {took:8.1f} "
                f"{stage.peak_rss / GIB:6.2f} {ratios}  {load}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
