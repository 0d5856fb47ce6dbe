with source as (
    {{ latest_version(source('raw', 'consents'), ['consent_event_id']) }}
),

final as (
    select
        consent_event_id,
        customer_id,
        email,
        purpose,
        event as consent_event,
        source as consent_source,
        occurred_at
    from source
    where purpose = 'marketing_email'
)

select * from final
