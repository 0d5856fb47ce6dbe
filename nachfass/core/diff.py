"""`nachfass diff`: what a rule change does at one as_of, before it ships (a pull request's review comment).

The current dbt project and a changed one (a folder, or a git ref of this repository) each build
``eligibility.mail_candidates`` at the same as_of, on their own copy of the warehouse; nothing is sent and
the warehouse itself is not written. The two decision tables are compared per (campaign, step, trigger
key): who gains a mail, who loses one, and why (the decision and reason on each side). The result is
Markdown for the review, and the rows for SQL in ``diff.changes`` of the changed copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import duckdb

from nachfass.core import paths
from nachfass.core.dbt import DBT_EXECUTABLE, dbt_vars, scratch_dbt_env


class DiffError(RuntimeError):
    """The diff could not be built (bad rules location, dbt failed); the message says why."""


@dataclass(frozen=True)
class Change:
    campaign: str
    step: str
    trigger_key: str
    customer_id: str | None
    before: str | None  # "send (due)", "skip (no_consent)" … or None: no row
    after: str | None

    @property
    def kind(self) -> str:
        sends_before = (self.before or "").startswith("send")
        sends_after = (self.after or "").startswith("send")
        if sends_after and not sends_before:
            return "gained"
        if sends_before and not sends_after:
            return "lost"
        return "changed"


def rules_project(rules: str, *, workdir: Path, repo: Path | None = None) -> tuple[Path, str]:
    """The changed dbt project: a folder with a dbt_project.yml, or a git ref whose ``dbt/`` is
    checked out into ``workdir``. Returns (folder, label)."""
    folder = Path(rules)
    if (folder / "dbt_project.yml").is_file():
        return folder.resolve(), str(folder)
    repo = repo or paths.REPO_ROOT
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", rules, "dbt"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise DiffError(
            f"--rules {rules!r} is neither a dbt project folder nor a git ref of {repo}: "
            + archive.stderr.decode(errors="replace").strip()
        )
    target = workdir / "rules"
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target / "dbt", f"git {rules}"


def _build(project: Path, warehouse: Path, as_of: datetime, target: Path) -> None:
    """mail_candidates and every model and seed it needs (no tests: the diff compares decisions), with
    that project's own campaign registry."""
    profiles = project if (project / "profiles.yml").is_file() else paths.dbt_project_dir()
    # daily_models: a model computed once a day (int_product_pairs) is computed again on the copy, so a
    # change to its rules shows even when the live warehouse holds the day's rows already
    variables = {**dbt_vars(as_of, segments=project / "models" / "segments"), "daily_models": "recompute"}
    command = [
        DBT_EXECUTABLE, "build", "--select", "+mail_candidates", "--resource-type", "seed", "--resource-type",
        "model", "--vars", json.dumps(variables),
        "--profiles-dir", str(profiles), "--target-path", str(target), "--log-path", str(target / "logs"),
    ]  # fmt: skip
    env = scratch_dbt_env(warehouse)
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-15:])
        raise DiffError(f"dbt failed for {project}:\n{tail}")


def _label(decision: str | None, reason: str | None) -> str | None:
    return None if decision is None else f"{decision} ({reason})"


def compare(before: Path, after: Path) -> list[Change]:
    """Every (campaign, step, trigger key) whose decision or reason differs between the two warehouses."""
    conn = duckdb.connect(str(after))
    try:
        quoted = str(before).replace("'", "''")
        conn.execute(f"attach '{quoted}' as before_rules (read_only)")
        rows = conn.execute(
            """
            select
                coalesce(a.campaign, b.campaign), coalesce(a.step, b.step),
                coalesce(a.trigger_key, b.trigger_key), coalesce(a.customer_id, b.customer_id),
                b.decision, b.reason, a.decision, a.reason
            from eligibility.mail_candidates as a
            full outer join before_rules.eligibility.mail_candidates as b
                on a.campaign = b.campaign and a.step = b.step and a.trigger_key = b.trigger_key
            where a.decision is distinct from b.decision or a.reason is distinct from b.reason
            order by 1, 2, 4, 3
            """
        ).fetchall()
    finally:
        conn.close()
    return [
        Change(campaign, step, key, customer, _label(bd, br), _label(ad, ar))
        for campaign, step, key, customer, bd, br, ad, ar in rows
    ]


def send_counts(warehouse: Path) -> dict[tuple[str, str], int]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {
            (campaign, step): n
            for campaign, step, n in conn.execute(
                "select campaign, step, count(*) filter (where decision = 'send') "
                "from eligibility.mail_candidates group by all"
            ).fetchall()
        }
    finally:
        conn.close()


def _store(after: Path, changes: list[Change]) -> None:
    conn = duckdb.connect(str(after))
    try:
        conn.execute("create schema if not exists diff")
        conn.execute(
            "create or replace table diff.changes (kind varchar, campaign varchar, step varchar, "
            "trigger_key varchar, customer_id varchar, before varchar, after varchar)"
        )
        if changes:
            conn.executemany(
                "insert into diff.changes values (?, ?, ?, ?, ?, ?, ?)",
                [
                    (c.kind, c.campaign, c.step, c.trigger_key, c.customer_id, c.before, c.after)
                    for c in changes
                ],
            )
    finally:
        conn.close()


def markdown(
    changes: list[Change],
    before_counts: dict[tuple[str, str], int],
    after_counts: dict[tuple[str, str], int],
    *,
    as_of: datetime,
    label: str,
    limit: int = 50,
) -> str:
    stamp = as_of.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### Rule change `{label}` at {stamp}", ""]
    keys = sorted(set(before_counts) | set(after_counts) | {(c.campaign, c.step) for c in changes})
    moved = [
        key
        for key in keys
        if before_counts.get(key, 0) != after_counts.get(key, 0)
        or any((c.campaign, c.step) == key for c in changes)
    ]
    if not moved:
        lines.append("No decision changes: every campaign sends to the same people for the same reasons.")
        return "\n".join(lines) + "\n"
    lines += [
        "| campaign | step | mails before | mails after | gained | lost | other reason changes |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key in moved:
        of_key = [c for c in changes if (c.campaign, c.step) == key]
        count = {kind: sum(1 for c in of_key if c.kind == kind) for kind in ("gained", "lost", "changed")}
        lines.append(
            f"| {key[0]} | {key[1]} | {before_counts.get(key, 0)} | {after_counts.get(key, 0)} | "
            f"+{count['gained']} | −{count['lost']} | {count['changed']} |"
        )
    for kind, title in (
        ("gained", "Gain a mail"),
        ("lost", "Lose a mail"),
        ("changed", "Other reasons change"),
    ):
        of_kind = [c for c in changes if c.kind == kind]
        if not of_kind:
            continue
        lines += ["", f"#### {title} ({len(of_kind)})", ""]
        lines += ["| campaign | step | customer | trigger | before | after |", "|---|---|---|---|---|---|"]
        for c in of_kind[:limit]:
            lines.append(
                f"| {c.campaign} | {c.step} | {c.customer_id or ''} | {c.trigger_key} | "
                f"{c.before or '— (no row)'} | {c.after or '— (no row)'} |"
            )
        if len(of_kind) > limit:
            lines.append(f"| … | | | | {len(of_kind) - limit} more in `diff.changes` | |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class DiffResult:
    markdown: str
    changes: list[Change]
    before_counts: dict[tuple[str, str], int]
    after_counts: dict[tuple[str, str], int]
    after_warehouse: Path


def run_diff(
    warehouse: Path,
    rules: str,
    as_of: datetime,
    *,
    workdir: Path | None = None,
    current: Path | None = None,
    limit: int = 50,
) -> DiffResult:
    """Build mail_candidates at ``as_of`` with the current project and with ``rules`` on two copies of
    ``warehouse``; compare. ``workdir`` keeps the copies (default: a temporary folder below
    ``$NACHFASS_DATA/diff``, removed at the end)."""
    if not Path(warehouse).is_file():
        raise DiffError(f"no warehouse at {warehouse}: load exports first (`nachfass run --job ingest_job`)")
    keep = workdir is not None
    if workdir is None:  # in the data folder, where an erasure finds what a killed diff left
        scratch = paths.data_dir() / "diff"
        scratch.mkdir(parents=True, exist_ok=True)
        workdir = tempfile.mkdtemp(prefix="nachfass-diff-", dir=scratch)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        project, label = rules_project(rules, workdir=workdir)
        before, after = workdir / "before.duckdb", workdir / "after.duckdb"
        for copy in (before, after):
            shutil.copyfile(warehouse, copy)
        _build(Path(current or paths.dbt_project_dir()), before, as_of, workdir / "target_before")
        _build(project, after, as_of, workdir / "target_after")
        changes = compare(before, after)
        before_counts, after_counts = send_counts(before), send_counts(after)
        _store(after, changes)
        text = markdown(changes, before_counts, after_counts, as_of=as_of, label=label, limit=limit)
        return DiffResult(text, changes, before_counts, after_counts, after)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
