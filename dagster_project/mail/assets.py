"""Render and send assets: mail_candidates (send) → mail.outgoing → SendGrid or outbox → mail.sends."""

import dagster as dg

from dagster_project.mail.candidates import job_from_row
from dagster_project.mail.ledger import ensure_ledger, record_holdout, recover_crashed
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
    renderer = MailRenderer(shop.settings(), link_signer.signer(), now=as_of)
    with warehouse.connect() as conn:
        ensure_outgoing(conn)
        rows = _fetch_candidates(conn, "decision = 'send'", config.campaigns)
        # Any failure raises RenderError here, before a single mail of the batch is queued or sent.
        mails = renderer.render_batch(job_from_row(row) for row in rows)
        queued = replace_outgoing(conn, mails, run_id=context.run_id, rendered_at=as_of)
    per_campaign: dict[str, int] = {}
    for mail in mails:
        per_campaign[f"{mail.campaign}/{mail.step}"] = per_campaign.get(f"{mail.campaign}/{mail.step}", 0) + 1
    return dg.MaterializeResult(
        metadata={
            "mails_rendered": queued,
            "per_campaign_step": dg.MetadataValue.json(per_campaign),
            "as_of": as_of.isoformat(),
        }
    )


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
            timeout_s=sendgrid.timeout_s,
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
        holdouts = 0
        for row in _fetch_candidates(conn, "reason = 'holdout'", config.campaigns):
            holdouts += int(record_holdout(conn, job_from_row(row), run_id=context.run_id, as_of=as_of))
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
        )
        by_status = dict(
            conn.execute("select status, count(*) from mail.sends group by status order by status").fetchall()
        )
    return dg.MaterializeResult(
        metadata={
            "transport": transport.name,
            "sent": report.counts.get("sent", 0),
            "failed": report.counts.get("failed", 0),
            "unknown": report.counts.get("unknown", 0),
            "skipped_already_in_ledger": report.counts.get("skipped", 0),
            "holdout_recorded": holdouts,
            "recovered_from_crash": crashed,
            "mails_per_second": round(report.rate, 1),
            "ledger_by_status": dg.MetadataValue.json(by_status),
        }
    )
