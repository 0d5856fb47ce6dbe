"""Render and send assets: mail_candidates (send) → mail.outgoing → SendGrid or outbox → mail.sends."""

import dagster as dg

from dagster_project import paths
from dagster_project.campaigns import load_campaigns
from dagster_project.mail.candidates import job_from_row
from dagster_project.mail.ledger import ensure_ledger, record_holdouts, recover_crashed
from dagster_project.mail.outgoing import ensure_outgoing, read_outgoing, replace_outgoing
from dagster_project.mail.render import MailRenderer
from dagster_project.mail.sender import deliver
from dagster_project.mail.transport import OutboxTransport, SendGridTransport
from dagster_project.resources import (
    LinkSignerResource,
    RunClockResource,
    SendGridResource,
    ShopResource,
    WarehouseResource,
)

MAIL_CANDIDATES = dg.AssetKey(["eligibility", "mail_candidates"])
RENDER_CHUNK = 1000
CANDIDATE_COLUMNS = (
    "campaign, step, variant, trigger_key, customer_id, email, first_name, last_name, salutation, locale, "
    "consent_policy, has_marketing_consent, payload, experiment_id, decision, reason"
)


class MailRunConfig(dg.Config):
    """Which campaigns this run renders and sends (empty = all). The scheduled jobs set it."""

    campaigns: list[str] = []


def _fetch_candidates(conn, where: str, campaigns: list[str]) -> list[dict]:
    params: list = []
    if campaigns:
        where += f" and campaign in ({', '.join('?' * len(campaigns))})"
        params = list(campaigns)
    cursor = conn.execute(
        f"select {CANDIDATE_COLUMNS} from eligibility.mail_candidates where {where} "
        "order by campaign, step, trigger_key",
        params,
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


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
    as_of = clock.resolve(context)
    if not link_signer.is_configured():
        context.log.warning(
            f"{link_signer.key_env} is not set: links are signed with the development key and are not valid "
            "in production"
        )
    renderer = MailRenderer(
        shop.settings(), link_signer.signer(), templates_dir=shop.resolved_templates_dir(), now=as_of
    )
    # Preflight: every template of every campaign/step/variant/locale compiles and renders its legal
    # duties on sample data, before a single real mail is rendered.
    checked = renderer.check_templates()
    # Experiments vary what they declare (subject, body, send delay), also with overridden templates.
    renderer.check_experiments(load_campaigns(templates_dir=shop.resolved_templates_dir()))
    with warehouse.connect() as conn:
        ensure_outgoing(conn)
        rows = _fetch_candidates(conn, "decision = 'send'", config.campaigns)
        # Rendered in chunks (memory stays flat) inside one transaction; any RenderError rolls the whole
        # batch back, so nothing of it reaches the send step.
        chunks = (
            renderer.render_batch(job_from_row(row) for row in rows[start : start + RENDER_CHUNK])
            for start in range(0, len(rows), RENDER_CHUNK)
        )
        per_step = replace_outgoing(conn, chunks, run_id=context.run_id, rendered_at=as_of)
        decisions = conn.execute(
            "select campaign, step, decision, reason, count(*) from eligibility.mail_candidates "
            "group by all order by 1, 2, 3, 4"
        ).fetchall()
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
    from dagster_project.mail.samples import sample_jobs

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
        )
        context.log.info(f"sending through SendGrid at {sendgrid.resolved_host()}")
    else:
        transport = OutboxTransport(sendgrid.resolved_outbox(), shop=shop.settings())
        context.log.warning(
            f"{sendgrid.api_key_env} is not set: mails are written to the outbox "
            f"{sendgrid.resolved_outbox()} instead of being sent"
        )
    with warehouse.connect() as conn:
        ensure_ledger(conn)
        ensure_outgoing(conn)
        crashed = recover_crashed(conn)
        if crashed:
            context.log.warning(
                f"{crashed} ledger rows were left in `sending` by an earlier crash and are now `unknown`; "
                "they are not resent (events with their send id reconcile them)"
            )
        holdouts = record_holdouts(
            conn,
            (job_from_row(row) for row in _fetch_candidates(conn, "reason = 'holdout'", config.campaigns)),
            run_id=context.run_id,
            as_of=as_of,
        )
        queued = conn.execute("select count(*) from mail.outgoing").fetchone()[0]
        try:
            report = deliver(
                conn,
                read_outgoing(conn),
                transport,
                run_id=context.run_id,
                as_of=as_of,
                chunk_size=sendgrid.chunk_size,
                concurrency=sendgrid.concurrency,
                rate_limit_per_s=sendgrid.rate_limit_per_s,
                log=context.log,
                total=int(queued),
                recover=False,
            )
        finally:
            transport.close()
        by_status = dict(
            conn.execute("select status, count(*) from mail.sends group by status order by status").fetchall()
        )
    return dg.MaterializeResult(
        metadata={
            **report.as_metadata(),
            "holdout_recorded": holdouts,
            "recovered_from_crash": crashed,
            "ledger_by_status": dg.MetadataValue.json(by_status),
        }
    )
