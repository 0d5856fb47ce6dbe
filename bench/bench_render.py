"""Benchmark: render N cart reminders (HTML + text + headers) with MailRenderer on one core, and the run's
render step in this process and in one worker process per core.

    python bench/bench_render.py [--n 100000]

Prints mails/s for MailRenderer.render_batch (everything: context, babel formatting, 2 HMAC-signed links,
subject, HTML, text, headers) and for a bare Jinja2 loop over the same compiled templates with a
precomputed context (the floor: template execution only), plus their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
from jinja2 import Environment, StrictUndefined, select_autoescape  # noqa: E402

from nachfass.core.links import LinkSigner  # noqa: E402
from nachfass.core.mail.candidates import CANDIDATE_COLUMNS  # noqa: E402
from nachfass.core.mail.message import MailJob  # noqa: E402
from nachfass.core.mail.render import MailRenderer, _InliningLoader  # noqa: E402
from nachfass.core.mail.render_pool import RenderPool  # noqa: E402
from nachfass.core.mail.samples import sample_jobs  # noqa: E402
from nachfass.core.mail.steps import render_due_mails  # noqa: E402
from nachfass.core.paths import TEMPLATES_DIR  # noqa: E402
from nachfass.core.shop import load_shop_settings  # noqa: E402

FIRST = ["Anna", "Jonas", "Kim", "Lea", "Paul", "Mia", "Ben", "Emma", None]
LAST = ["Schmidt", "Müller", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", None]
SALUTATION = ["Frau", "Herr", "divers", None]


def make_jobs(n: int) -> list[MailJob]:
    samples = sample_jobs(locales=("de-DE",))
    base = next(j for j in samples if j.campaign == "abandoned_cart" and j.step == "1")
    jobs = []
    for i in range(n):
        items = [
            {**item, "unit_price": f"{(i % 97) + 4}.{i % 100:02d}", "quantity": 1 + i % 3}
            for item in base.payload["items"][: 1 + i % 2]
        ]
        payload = {**base.payload, "cart_id": f"K-{i}", "items": items, "total_amount": f"{50 + i % 300}.90"}
        jobs.append(
            replace(
                base,
                trigger_key=f"cart:K-{i}",
                customer_id=f"C{i}",
                email=f"kunde{i}@example.org",
                first_name=FIRST[i % len(FIRST)],
                last_name=LAST[i % len(LAST)],
                salutation=SALUTATION[i % len(SALUTATION)],
                variant="control" if i % 2 else "b",
                payload=payload,
            )
        )
    return jobs


def run_path(renderer, jobs: list[MailJob]) -> float:
    """Seconds for the render step as ``nachfass run`` runs it (``render_due_mails``): the same jobs as
    rows of ``eligibility.mail_candidates`` in a DuckDB file, read, turned into MailJobs, rendered in
    chunks and written to ``mail.outgoing`` in one transaction. ``renderer``: a MailRenderer (this process)
    or one bound to a RenderPool (the worker processes, as the run's render step renders)."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
        conn.execute("create schema eligibility")
        rows = pa.table(
            {
                **{
                    col: pa.array([getattr(j, col) for j in jobs], pa.string())
                    for col in CANDIDATE_COLUMNS
                    if col not in ("has_marketing_consent", "payload", "decision", "reason")
                },
                "has_marketing_consent": pa.array([j.has_marketing_consent for j in jobs], pa.bool_()),
                "payload": pa.array([json.dumps(j.payload) for j in jobs], pa.string()),
                "decision": pa.array(["send"] * len(jobs), pa.string()),
                "reason": pa.array([None] * len(jobs), pa.string()),
            }
        )
        conn.register("rows", rows)
        conn.execute(
            "create table eligibility.mail_candidates as "
            "select * exclude (payload), payload::json as payload from rows"
        )
        conn.unregister("rows")
        conn.execute("checkpoint")
        t0 = time.perf_counter()
        per_step, _ = render_due_mails(
            conn, renderer, run_id="bench", as_of=datetime(2026, 11, 24, 10, tzinfo=UTC), campaigns=[]
        )
        seconds = time.perf_counter() - t0
        assert sum(per_step.values()) == len(jobs), per_step
        conn.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    shop = load_shop_settings()
    renderer = MailRenderer(shop, LinkSigner("bench-signing-key-0123456789abcdef"))
    jobs = make_jobs(args.n)

    t0 = time.perf_counter()
    renderer.check_templates()  # compiles + inlines CSS for every template once
    warmup = time.perf_counter() - t0

    t0 = time.perf_counter()
    mails = renderer.render_batch(jobs)
    full = time.perf_counter() - t0
    assert len(mails) == args.n and all(m.headers for m in mails[:10])
    size = sum(len(m.html) + len(m.text) for m in mails[:1000]) / 1000
    del mails

    # Bare Jinja2: the same compiled templates and a precomputed context per distinct job (10,000
    # contexts reused), no signing, no formatting, no sanitising: the template-execution floor.
    now = datetime.now(UTC)
    distinct = jobs[: min(10_000, args.n)]
    prepared = []
    for job in distinct:
        compiled = renderer._templates_for("de", job.campaign, job.step, job.variant)
        ctx = renderer._context(job, "de", now)
        unsub, objection, _ = renderer._opt_out_links(job, now)
        ctx.update(unsubscribe_url=unsub, objection_url=objection, subject="s", preheader="p")
        prepared.append((compiled, ctx))
    t0 = time.perf_counter()
    for i in range(args.n):
        compiled, ctx = prepared[i % len(prepared)]
        compiled.html.render(ctx)
        compiled.text.render(ctx)
    bare = time.perf_counter() - t0

    # The same, without the sandbox, to show what sandboxing costs.
    plain = Environment(
        loader=_InliningLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(enabled_extensions=("html",), disabled_extensions=("txt",)),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        cache_size=-1,
    )
    plain_prepared = [
        (plain.get_template(c.html_name), plain.get_template(c.text_name), ctx) for c, ctx in prepared
    ]
    t0 = time.perf_counter()
    for i in range(args.n):
        html_t, text_t, ctx = plain_prepared[i % len(plain_prepared)]
        html_t.render(ctx)
        text_t.render(ctx)
    unsandboxed = time.perf_counter() - t0

    step = run_path(renderer, jobs)
    # as the run renders: a batch this large in one worker process per core (render_pool.py); the workers'
    # start (spawn, imports, templates) is timed with it
    with RenderPool() as pool:
        pooled = run_path(pool.bind(renderer), jobs)
        workers = pool.workers

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"python {platform.python_version()}, single process/thread")
    print(
        f"dataset: {args.n:,} abandoned_cart/1 mails (variants control + b, 1-2 items, varied names/prices)"
    )
    print(f"template warm-up (compile + CSS inlining, once): {warmup * 1000:.0f} ms")
    print(f"average mail size: {size / 1024:.1f} KiB (HTML + text)")
    print(f"MailRenderer.render_batch: {full:.1f} s  -> {args.n / full:,.0f} mails/s")
    print(f"bare Jinja2, sandboxed env: {bare:.1f} s  -> {args.n / bare:,.0f} mails/s")
    print(f"bare Jinja2, plain env:     {unsandboxed:.1f} s  -> {args.n / unsandboxed:,.0f} mails/s")
    print(f"ratio MailRenderer / bare sandboxed Jinja2 throughput: {bare / full:.2f}")
    print(f"(MailRenderer needs {full / bare:.2f}x the time of bare template execution)")
    print("target >= 3,000 mails/s:", "met" if args.n / full >= 3000 else "NOT met")
    print(
        f"the run's render step (candidates from DuckDB -> MailJob -> render -> mail.outgoing): {step:.1f} s "
        f"-> {args.n / step:,.0f} mails/s = {full / step:.2f} x render_batch (target >= 0.80)"
    )
    print(
        f"the same step rendering in {workers} worker processes (RenderPool, as `nachfass run` and the "
        f"replays render): {pooled:.1f} s -> {args.n / pooled:,.0f} mails/s = {step / pooled:.2f} x the "
        "step in this process"
    )


if __name__ == "__main__":
    main()
