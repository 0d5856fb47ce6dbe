-- One row per support ticket opened up to as_of, in the version true at as_of (a status change stamped
-- later is not seen yet; the follow-up also requires closed_at <= as_of).
with versions as (
    {{ versions_incremental(source('raw', 'support_tickets'), ['ticket_id'], 'coalesce(updated_at, opened_at)') }}
),

opened as (
    select * from versions
    where opened_at <= {{ as_of() }}
),

at_as_of as (
    {{ as_of_version('opened', ['ticket_id']) }}
),

final as (
    select
        ticket_id,
        customer_id,
        topic,
        status as ticket_status,
        opened_at,
        case when closed_at <= {{ as_of() }} then closed_at end as closed_at,
        updated_at
    from at_as_of
)

select * from final
