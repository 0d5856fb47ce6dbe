{%- set campaign = segment_settings('support_followup') -%}
{%- set step_1 = campaign['steps']['1'] -%}
with tickets as (
    select * from {{ ref('stg_support_tickets') }}
),

customers as (
    select * from {{ ref('stg_customers') }}
),

-- tickets solved or closed in the recent past
closed as (
    select * from tickets
    where ticket_status in ('solved', 'closed')
        and closed_at <= {{ as_of() }}
        and {{ within_recent_past('closed_at', step_1) }}
),

final as (
    select
        'support_followup' as campaign,
        '1' as step,
        closed.ticket_id as trigger_key,
        closed.customer_id,
        customers.email,
        closed.closed_at as trigger_at,
        closed.closed_at + {{ minutes(step_1["delay_minutes"]) }} as due_at,
        closed.closed_at + {{ minutes(step_1["delay_minutes"], step_1["expire_after_minutes"]) }}
            as expires_at,
        cast(null as {{ type_text() }}) as exit_reason,
        {{ segment_payload({
            'ticket': record({
                'ticket_id': 'closed.ticket_id',
                'topic': 'closed.topic',
                'opened_at': record_timestamp('closed.opened_at'),
                'closed_at': record_timestamp('closed.closed_at')
            })
        }) }} as payload
    from closed
    inner join customers on closed.customer_id = customers.customer_id
)

{{ segment_rows('final', campaign) }}
