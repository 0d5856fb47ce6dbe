"""Asset checks beyond the dbt tests. Blocking checks on mail_candidates stop the render and send steps
of the same run, so a consent bug can never turn into a mail."""

from datetime import UTC, timedelta

import dagster as dg

from dagster_project.assets.analytics import AB_RESULTS
from dagster_project.assets.ingest import RAW_KEYS
from dagster_project.assets.mail import MAIL_CANDIDATES, sent_mails
from dagster_project.resources import RunClockResource, WarehouseResource

# A share of quarantined rows above this in the latest export of a table is worth a person's look.
QUARANTINE_WARN_SHARE = 0.02
UNKNOWN_MAX_AGE_HOURS = 24


@dg.asset_check(
    asset=MAIL_CANDIDATES,
    blocking=True,
    description="No marketing mail is decided `send` without the consent its policy requires.",
)
def marketing_mails_have_consent(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        violations = conn.execute(
            """
            select candidates.campaign, candidates.step, count(*)
            from eligibility.mail_candidates as candidates
            left join intermediate.int_consent_state as consent on lower(candidates.email) = consent.email
            left join (
                select customer_id, min(placed_at) as first_order_at from staging.stg_orders group by 1
            ) as buyers on candidates.customer_id = buyers.customer_id
            where candidates.decision = 'send'
              and (
                (candidates.consent_policy = 'required'
                 and not coalesce(consent.has_marketing_consent, false))
                or (candidates.consent_policy = 'existing_customer'
                    and not coalesce(consent.has_marketing_consent, false)
                    and not (buyers.first_order_at is not null
                             and coalesce(consent.has_objection_notice, false)
                             and not coalesce(consent.has_withdrawn, false)))
              )
            group by 1, 2
            """
        ).fetchall()
    return dg.AssetCheckResult(
        passed=not violations,
        metadata={"violations": dg.MetadataValue.json({f"{c}/{s}": n for c, s, n in violations})},
    )


@dg.asset_check(
    asset=sent_mails,
    blocking=True,
    description="The ledger holds each (campaign, step, trigger key) at most once.",
)
def ledger_trigger_keys_unique(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect() as conn:
        duplicates = conn.execute(
            "select count(*) from (select campaign, step, trigger_key from mail.sends group by 1, 2, 3 "
            "having count(*) > 1) as duplicated"
        ).fetchone()[0]
    return dg.AssetCheckResult(passed=duplicates == 0, metadata={"duplicate_trigger_keys": int(duplicates)})


@dg.asset_check(
    asset=sent_mails,
    description=f"No `unknown` ledger rows sent more than {UNKNOWN_MAX_AGE_HOURS} h before the run's as_of "
    "(events should have reconciled them; look at SendGrid's activity feed).",
)
def no_stale_unknown_sends(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, clock: RunClockResource
) -> dg.AssetCheckResult:
    # logical time, like every rule: a replayed or backfilled run judges staleness at its own as_of
    as_of = clock.resolve(context).astimezone(UTC).replace(tzinfo=None)
    with warehouse.connect() as conn:
        stale = conn.execute(
            "select count(*) from mail.sends where status = 'unknown' and as_of < ?",
            [as_of - timedelta(hours=UNKNOWN_MAX_AGE_HOURS)],
        ).fetchone()[0]
    return dg.AssetCheckResult(
        passed=stale == 0, severity=dg.AssetCheckSeverity.WARN, metadata={"stale_unknown_rows": int(stale)}
    )


@dg.asset_check(
    asset=AB_RESULTS,
    description="Every experiment's customers are split across its arms as the segment YAML configures "
    "(sample-ratio mismatch: chi-square p below the dbt var ab_srm_alpha). A mismatch means assignment or "
    "recording is broken and the experiment's comparisons cannot be trusted (docs/analysts.md).",
)
def ab_sample_ratio_matches(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connect(read_only=True) as conn:
        rows = conn.execute(
            "select experiment_id, campaign, max(srm_p_value), bool_or(has_sample_ratio_mismatch) "
            "from analytics.ab_results group by 1, 2 order by 1, 2"
        ).fetchall()
    checked = {f"{e}/{c}": round(p, 6) for e, c, p, _ in rows if p is not None}
    mismatched = sorted(f"{e}/{c}" for e, c, _, mismatch in rows if mismatch)
    return dg.AssetCheckResult(
        passed=not mismatched,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "experiments_checked": len(checked),
            "mismatched": dg.MetadataValue.json(mismatched),
            "srm_p_values": dg.MetadataValue.json(checked),
        },
    )


def _quarantine_check(table: str, key: dg.AssetKey) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key,
        name=f"quarantine_share_{table}",
        description=f"Quarantined rows of the latest `{table}` export stay under "
        f"{QUARANTINE_WARN_SHARE:.0%}.",
    )
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.connect() as conn:
            latest = conn.execute(
                "select path, rows_read, rows_quarantined from raw.loaded_files where table_name = ? "
                "order by loaded_at desc, path desc limit 1",
                [table],
            ).fetchone()
        if not latest or not latest[1]:
            return dg.AssetCheckResult(passed=True, metadata={"latest_file": "none"})
        share = latest[2] / latest[1]
        return dg.AssetCheckResult(
            passed=share <= QUARANTINE_WARN_SHARE,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "latest_file": dg.MetadataValue.path(latest[0]),
                "rows_read": int(latest[1]),
                "rows_quarantined": int(latest[2]),
                "share": round(share, 4),
            },
        )

    return _check


checks = [
    marketing_mails_have_consent,
    ledger_trigger_keys_unique,
    no_stale_unknown_sends,
    ab_sample_ratio_matches,
    *[_quarantine_check(table, key) for table, key in RAW_KEYS.items()],
]
