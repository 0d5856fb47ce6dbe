"""Render and send assets: mail_candidates (send) → mail.outgoing → SendGrid or outbox → mail.sends."""

import dagster as dg

from dagster_project.resources import (
    LinkSignerResource,
    RunClockResource,
    SendGridResource,
    ShopResource,
    WarehouseResource,
)
from nachfass.core import decision_lock, paths
from nachfass.core.campaigns import load_campaigns
from nachfass.core.mail.render import MailRenderer
from nachfass.core.mail.render_pool import RenderPool
from nachfass.core.mail.runs import begin_mail_run
from nachfass.core.mail.steps import render_due_mails, send_queued_mails
from nachfass.core.mail.transport import OutboxTransport, SendGridTransport

MAIL_CANDIDATES = dg.AssetKey(["eligibility", "mail_candidates"])


def _begin_mail_run(context: dg.AssetExecutionContext, conn, as_of) -> None:
    """Check this run's as_of against the warehouse's last mail run and record the run (mail/runs.py)."""
    begin_mail_run(
        conn,
        run_id=context.run_id,
        job_name=context.job_name,
        partition_key=context.run.tags.get("dagster/partition"),
        as_of=as_of,
    )


class MailRunConfig(dg.Config):
    """Which campaigns this run renders and sends (empty = all). The scheduled jobs set it."""

    campaigns: list[str] = []


@dg.asset(
    key_prefix="mail",
    group_name="mail",
    deps=[MAIL_CANDIDATES],
    kinds={"jinja", "duckdb"},
    description="Every mail decided `send` at as_of, rendered (subject, HTML with inlined CSS, text, "
    "headers) into mail.outgoing. The whole batch renders before anything is sent.",
)
def rendered_mails(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    shop: ShopResource,
    link_signer: LinkSignerResource,
    clock: RunClockResource,
    config: MailRunConfig,
) -> dg.MaterializeResult:
    try:
        as_of = clock.resolve(context)
        if not link_signer.is_configured():
            context.log.warning(
                f"{link_signer.key_env} is not set: links are signed with the development key and are "
                "not valid in production"
            )
        renderer = MailRenderer(
            shop.settings(), link_signer.signer(), templates_dir=shop.resolved_templates_dir(), now=as_of
        )
        # Preflight: every template of every campaign/step/variant/locale compiles and renders its legal
        # duties on sample data, before a single real mail is rendered.
        checked = renderer.check_templates()
        # Experiments vary what they declare (subject, body, send delay), also with overridden templates.
        renderer.check_experiments(load_campaigns(templates_dir=shop.resolved_templates_dir()))
        # a large batch (the daily campaigns) renders in one worker process per core
        with warehouse.connect() as conn, RenderPool() as pool:
            _begin_mail_run(context, conn, as_of)
            per_step, rows = render_due_mails(
                conn, pool.bind(renderer), run_id=context.run_id, as_of=as_of, campaigns=config.campaigns
            )
            decisions = conn.execute(
                "select campaign, step, decision, reason, count(*) from eligibility.mail_candidates "
                "group by 1, 2, 3, 4 order by 1, 2, 3, 4"
            ).fetchall()
    finally:
        # PostgreSQL: this run's decisions are rendered (or the step failed); the next run may decide
        # (decision_lock.py)
        decision_lock.release(context.run_id)
    previews = _write_previews(renderer, rows, context.run_id)
    return dg.MaterializeResult(
        metadata={
            "mails_rendered": sum(per_step.values()),
            "per_campaign_step": dg.MetadataValue.json(per_step),
            "candidates_by_decision": dg.MetadataValue.md(
                "| campaign | step | decision | reason | candidates |\n|---|---|---|---|---|\n"
                + "\n".join(f"| {c} | {s} | {d} | {r} | {n} |" for c, s, d, r, n in decisions)
            ),
            "templates_checked": len(checked),
            "previews": dg.MetadataValue.md(
                "\n".join(f"- {name}: `{path}`" for name, path in previews.items()) or "no mails this run"
            ),
            "as_of": as_of.isoformat(),
        }
    )


def _write_previews(renderer: MailRenderer, rows: list[dict], run_id: str) -> dict[str, str]:
    """One rendered HTML per campaign/step of this run, for a person to open (paths in the metadata).
    Rendered from sample data of the same campaign/step, so previews never hold a customer's data."""
    from nachfass.core.mail.samples import sample_jobs

    wanted = {(row["campaign"], str(row["step"])) for row in rows}
    out_dir = paths.data_dir() / "previews" / run_id
    written: dict[str, str] = {}
    for job in sample_jobs(locales=("de-DE",)):
        key = (job.campaign, job.step)
        name = f"{job.campaign}/{job.step}"
        if key in wanted and name not in written:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{job.campaign}-{job.step}.html"
            path.write_text(renderer.render(job).html, encoding="utf-8")
            written[name] = str(path)
    return written


@dg.asset(
    key_prefix="mail",
    group_name="mail",
    deps=[rendered_mails],
    kinds={"sendgrid", "duckdb"},
    description="Sends the queued mails through SendGrid (or writes them to the outbox without an API key) "
    "and records each in the send ledger mail.sends, at most once per (campaign, step, trigger key).",
)
def sent_mails(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    sendgrid: SendGridResource,
    shop: ShopResource,
    clock: RunClockResource,
    config: MailRunConfig,
) -> dg.MaterializeResult:
    as_of = clock.resolve(context)
    api_key = sendgrid.api_key()
    if api_key:
        transport = SendGridTransport(
            api_key=api_key,
            host=sendgrid.resolved_host(),
            shop=shop.settings(),
            sandbox_mode=sendgrid.sandbox_mode,
            timeout=sendgrid.timeout_s,
            as_of=as_of,
        )
        context.log.info(f"sending through SendGrid at {sendgrid.resolved_host()}")
    else:
        transport = OutboxTransport(sendgrid.resolved_outbox(), shop=shop.settings(), as_of=as_of)
        context.log.warning(
            f"{sendgrid.api_key_env} is not set: mails are written to the outbox "
            f"{sendgrid.resolved_outbox()} instead of being sent"
        )
    with warehouse.connect() as conn:
        _begin_mail_run(context, conn, as_of)
        outcome = send_queued_mails(
            conn,
            transport,
            run_id=context.run_id,
            as_of=as_of,
            campaigns=config.campaigns,
            chunk_size=sendgrid.chunk_size,
            concurrency=sendgrid.concurrency,
            rate_limit_per_s=sendgrid.rate_limit_per_s,
            log=context.log,
        )
        by_status = dict(
            conn.execute("select status, count(*) from mail.sends group by status order by status").fetchall()
        )
    return dg.MaterializeResult(
        metadata={
            **outcome.report.as_metadata(),
            "holdout_recorded": outcome.holdouts,
            "recovered_from_crash": outcome.recovery.unknown,
            "recovered_released": outcome.recovery.released,
            "recovered_settled": outcome.recovery.settled,
            "ledger_by_status": dg.MetadataValue.json(by_status),
        }
    )
