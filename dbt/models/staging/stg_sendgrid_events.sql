with source as (
    select * from {{ source('events', 'sendgrid_events') }}
),

final as (
    select
        sg_event_id,
        event as event_type,
        email,
        occurred_at,
        sg_message_id,
        message_id,
        send_id,
        campaign,
        step,
        variant,
        url,
        reason,
        status,
        bounce_type,
        is_machine_open,
        useragent
    from source
    where occurred_at <= {{ as_of() }}
)

select * from final
