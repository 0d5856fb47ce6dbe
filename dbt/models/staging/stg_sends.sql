-- The send ledger as dbt sees it: every (campaign, step, trigger key) ever claimed, whatever its outcome.
-- `sent_at` is the logical time of the run that sent it (its as_of), never the wall clock: "24 h after
-- step 1", the caps and dormancy count in the same time the decisions are taken in, so replays and
-- backfills decide as live runs would have. Rows of a later as_of are invisible (a run never sees them:
-- an earlier as_of than the warehouse's last run is refused).
with source as (
    select * from {{ source('mail', 'sends') }}
),

final as (
    select
        send_id,
        campaign,
        step,
        trigger_key,
        customer_id,
        email,
        email_hash,
        experiment_id,
        variant,
        status as send_status,
        reason as send_reason,
        sg_message_id,
        as_of as sent_at,
        created_at as recorded_at
    from source
    where as_of <= {{ as_of() }}
)

select * from final
