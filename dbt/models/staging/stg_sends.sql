-- The send ledger as dbt sees it: every (campaign, step, trigger key) ever claimed, whatever its outcome.
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
        created_at as sent_at
    from source
)

select * from final
