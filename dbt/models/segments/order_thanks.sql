{%- set campaign = segment_settings('order_thanks') -%}
{%- set step_1 = campaign['steps']['1'] -%}
with orders as (
    select * from {{ ref('int_orders') }}
),

customers as (
    select * from {{ ref('stg_customers') }}
),

-- every order of the recent past; a cancelled or returned one stays as a row with its exit reason so
-- "why no thank-you mail?" has an answer
recent_orders as (
    select * from orders
    where placed_at
        > {{ as_of() }} - {{ minutes(step_1["delay_minutes"], step_1["expire_after_minutes"]) }}
        - interval '7 day'
),

order_lines as (
    select * from {{ ref('int_order_lines') }}
),

final as (
    select
        'order_thanks' as campaign,
        '1' as step,
        recent_orders.order_id as trigger_key,
        recent_orders.customer_id,
        customers.email,
        recent_orders.placed_at as trigger_at,
        recent_orders.placed_at + {{ minutes(step_1["delay_minutes"]) }} as due_at,
        recent_orders.placed_at
            + {{ minutes(step_1["delay_minutes"], step_1["expire_after_minutes"]) }} as expires_at,
        {{ order_exit_reason('recent_orders') }} as exit_reason,
        {{ segment_payload({
            'order_id': 'recent_orders.order_id',
            'placed_at': record_timestamp('recent_orders.placed_at'),
            'items': record_json_list('order_lines.items'),
            'total_amount': 'recent_orders.total_amount',
            'currency': 'recent_orders.currency'
        }) }} as payload
    from recent_orders
    inner join customers on recent_orders.customer_id = customers.customer_id
    left join order_lines on recent_orders.order_id = order_lines.order_id
)

{{ segment_rows('final', campaign) }}
