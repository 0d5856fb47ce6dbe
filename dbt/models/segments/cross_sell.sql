{%- set campaign = segment_settings('cross_sell') -%}
{%- set step_1 = campaign['steps']['1'] -%}
{%- set n_recommendations = campaign.get('n_recommendations', 3) -%}
with orders as (
    select * from {{ ref('int_orders') }}
),

customers as (
    select * from {{ ref('stg_customers') }}
),

-- delivered orders (or shipped + 4 days where the delivery was never reported) of the recent past whose
-- mail is due (delivered at least delay_minutes ago): a row that is not due yet never reaches
-- mail_candidates in this run, and a later run computes it afresh
delivered as (
    select * from orders
    where delivered_at_or_assumed <= {{ as_of() }} - {{ minutes(step_1["delay_minutes"]) }}
        and {{ within_recent_past('delivered_at_or_assumed', step_1) }}
),

-- the order's recommendations (int_product_recommendations: co-purchases, category, popularity), best first;
-- computed for customers with marketing consent only (the others are skipped with no_consent anyway)
recommendation_lists as (
    select target_id as order_id, recommendations
    from {{ ref('int_recommendation_lists') }}
    where target_type = 'order'
),

order_lines as (
    select * from {{ ref('int_order_lines') }}
),

final as (
    select
        'cross_sell' as campaign,
        '1' as step,
        delivered.order_id as trigger_key,
        delivered.customer_id,
        customers.email,
        delivered.delivered_at_or_assumed as trigger_at,
        delivered.delivered_at_or_assumed + {{ minutes(step_1["delay_minutes"]) }} as due_at,
        delivered.delivered_at_or_assumed
            + {{ minutes(step_1["delay_minutes"], step_1["expire_after_minutes"]) }} as expires_at,
        {{ order_exit_reason('delivered') }} as exit_reason,
        {{ segment_payload({
            'order_id': 'delivered.order_id',
            'placed_at': record_timestamp('delivered.placed_at'),
            'items': record_json_list('order_lines.items'),
            'recommendations': 'coalesce(' ~ list_head('recommendation_lists.recommendations', n_recommendations) ~ ', '
                ~ empty_record_list() ~ ')'
        }) }} as payload
    from delivered
    inner join customers on delivered.customer_id = customers.customer_id
    left join order_lines on delivered.order_id = order_lines.order_id
    left join recommendation_lists on delivered.order_id = recommendation_lists.order_id
)

{{ segment_rows('final', campaign) }}
