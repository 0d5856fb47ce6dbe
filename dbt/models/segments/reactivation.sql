{%- set campaign = segment_settings('reactivation') -%}
{%- set step_1 = campaign['steps']['1'] -%}
{%- set step_2 = campaign['steps']['2'] -%}
{%- set inactive_after_days = campaign['inactive_after_days'] -%}
{%- set n_recommendations = campaign.get('n_recommendations', 4) -%}
with order_gaps as (
    select * from {{ ref('int_customer_order_gaps') }}
),

customers as (
    select * from {{ ref('stg_customers') }}
),

sends as (
    select * from {{ ref('stg_sends') }}
),

engagement as (
    select * from {{ ref('int_mail_engagement') }}
),

-- the customer's recommendations (int_product_recommendations, from their purchase history), best first
recommendation_lists as (
    select target_id as customer_id, recommendations
    from {{ ref('int_recommendation_lists') }}
    where target_type = 'customer'
),

-- an inactivity episode follows an order: the customer becomes inactive once the time since it exceeds
-- max(inactive_after_days, 2 × their own median days between orders so far)
episodes as (
    select
        customer_id,
        order_id as last_order_id,
        placed_at as last_order_at,
        next_order_at,
        median_days_between_orders,
        {{ timestamp_add('second', 'cast(86400 * greatest(' ~ inactive_after_days
            ~ ', 2 * coalesce(median_days_between_orders, 0)) as bigint)', 'placed_at') }} as inactive_at
    from order_gaps
),

-- episodes that began in the recent past (not cut short by an order before they began)
inactive as (
    select
        customer_id,
        last_order_id,
        last_order_at,
        next_order_at,
        inactive_at,
        customer_id || ':' || last_order_id as episode_key,
        cast(null as {{ type_text() }}) as rule_reason
    from episodes
    where inactive_at <= {{ as_of() }}
        and inactive_at > {{ as_of() }}
            - {{ minutes(step_1["delay_minutes"], step_2["delay_minutes"], step_2["expire_after_minutes"]) }}
            - interval '7 day'
        and (next_order_at is null or next_order_at > inactive_at)

    union all

    -- near miss ("why not?"): past inactive_after_days without an order, but not yet inactive by the
    -- customer's own rhythm (2 × median gap). Kept, with reason not_inactive_yet, until the rhythm's
    -- threshold is reached (then the row above takes over the same trigger key) or the customer orders.
    select
        customer_id,
        last_order_id,
        last_order_at,
        next_order_at,
        last_order_at + interval '{{ inactive_after_days }} day' as inactive_at,
        customer_id || ':' || last_order_id as episode_key,
        'not_inactive_yet' as rule_reason
    from episodes
    where inactive_at > {{ as_of() }}
        and last_order_at + interval '{{ inactive_after_days }} day' <= {{ as_of() }}
        and (next_order_at is null or next_order_at > {{ as_of() }})
),

step_1 as (
    select
        '1' as step,
        episode_key,
        inactive_at as trigger_at,
        inactive_at + {{ minutes(step_1["delay_minutes"]) }} as due_at,
        inactive_at + {{ minutes(step_1["delay_minutes"], step_1["expire_after_minutes"]) }}
            as expires_at
    from inactive
),

-- step 2: a week after step 1 went out, to those who opened it but did not click
step_1_engagement as (
    select sends.trigger_key as episode_key, sends.sent_at, engagement.first_open_at, engagement.first_click_at
    from sends
    left join engagement on sends.send_id = engagement.send_id
    where sends.campaign = 'reactivation'
        and sends.step = '1'
        and sends.send_status in ('sent', 'unknown')
        and sends.sent_at <= {{ as_of() }}
),

step_2 as (
    select
        '2' as step,
        episode_key,
        sent_at as trigger_at,
        sent_at + {{ minutes(step_2["delay_minutes"]) }} as due_at,
        sent_at + {{ minutes(step_2["delay_minutes"], step_2["expire_after_minutes"]) }} as expires_at
    from step_1_engagement
    where first_open_at is not null
        and first_click_at is null
),

steps as (
    select * from step_1
    union all
    select step_2.* from step_2
    inner join inactive on step_2.episode_key = inactive.episode_key
),

final as (
    select
        'reactivation' as campaign,
        steps.step,
        steps.episode_key as trigger_key,
        inactive.customer_id,
        customers.email,
        steps.trigger_at,
        steps.due_at,
        steps.expires_at,
        -- the campaign's own rule rejected it (a near miss), or the exit rule: the customer ordered again
        -- since the episode began
        coalesce(
            inactive.rule_reason,
            case when inactive.next_order_at <= {{ as_of() }} then 'purchased' end
        ) as exit_reason,
        {{ segment_payload({
            'last_order_at': record_timestamp('inactive.last_order_at'),
            'last_order_id': 'inactive.last_order_id',
            'recommendations': 'coalesce(' ~ list_head('recommendation_lists.recommendations', n_recommendations) ~ ', '
                ~ empty_record_list() ~ ')'
        }) }} as payload
    from steps
    inner join inactive on steps.episode_key = inactive.episode_key
    inner join customers on inactive.customer_id = customers.customer_id
    left join recommendation_lists on inactive.customer_id = recommendation_lists.customer_id
)

{{ segment_rows('final', campaign) }}
