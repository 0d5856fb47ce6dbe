-- One row per suppressed address: never mailed again, whatever the consent policy.
-- Sources grow with the event loop (hard bounces, spam reports, unsubscribes, invalid addresses) and
-- DSGVO erasures; this model is the one place eligibility looks.
with suppressed as (
    select
        cast(null as varchar) as email,
        cast(null as varchar) as suppression_reason,
        cast(null as timestamp) as suppressed_at
    where false
),

final as (
    select
        lower(email) as email,
        arg_min(suppression_reason, suppressed_at) as suppression_reason,
        min(suppressed_at) as suppressed_at
    from suppressed
    group by lower(email)
)

select * from final
