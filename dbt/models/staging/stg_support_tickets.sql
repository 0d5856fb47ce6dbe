with source as (
    {{ latest_version(source('raw', 'support_tickets'), ['ticket_id'], 'updated_at') }}
),

final as (
    select
        ticket_id,
        customer_id,
        topic,
        status as ticket_status,
        opened_at,
        closed_at,
        updated_at
    from source
)

select * from final
