{%- set campaign = segment_settings('abandoned_cart') -%}
{%- set step_1 = campaign['steps']['1'] -%}
{%- set step_2 = campaign['steps']['2'] -%}
{%- set n_recommendations = campaign.get('n_recommendations', 4) -%}
with carts as (
    select * from {{ ref('int_carts') }}
),

customers as (
    select * from {{ ref('stg_customers') }}
),

orders as (
    select * from {{ ref('stg_orders') }}
),

sends as (
    select * from {{ ref('stg_sends') }}
),

engagement as (
    select * from {{ ref('int_mail_engagement') }}
),

-- "Kunden kauften auch": the cart's recommendations (int_product_recommendations), best first
recommendation_lists as (
    select target_id as cart_id, recommendations
    from {{ ref('int_recommendation_lists') }}
    where target_type = 'cart'
),

-- a cart with items left whose owner was logged in while filling it; carts long past their expiry are
-- left out so the table stays the size of the recent past, not of the whole history. Near misses stay
-- as rows with the rule that rejected them ("why not?"): filled while not logged in (`not_logged_in`:
-- no consent can be tied to the session), or items netting to zero (`empty_cart`)
abandoned as (
    select
        carts.*,
        case
            when not carts.was_logged_in then 'not_logged_in'
            when carts.n_items <= 0 then 'empty_cart'
        end as rule_reason
    from carts
    where carts.customer_id is not null
        and carts.last_cart_activity_at
            > {{ as_of() }} - {{ minutes(step_1["expire_after_minutes"]) }} - interval '7 day'
),

-- exit rule: the customer ordered (this cart or anything else) since the last cart activity
ordered_since as (
    select abandoned.cart_id, min(orders.placed_at) as ordered_at
    from abandoned
    inner join orders
        on abandoned.customer_id = orders.customer_id
        and abandoned.last_cart_activity_at < orders.placed_at
        and orders.placed_at <= {{ as_of() }}
    group by abandoned.cart_id
),

step_1 as (
    select
        '1' as step,
        abandoned.cart_id,
        abandoned.last_cart_activity_at as trigger_at,
        abandoned.last_cart_activity_at + {{ minutes(step_1["delay_minutes"]) }} as due_at,
        abandoned.last_cart_activity_at + {{ minutes(step_1["expire_after_minutes"]) }} as expires_at
    from abandoned
),

-- step 2: a day after step 1 went out, only if step 1 was not clicked; still never past the cart's 72 h
step_1_sent as (
    select sends.trigger_key as cart_id, sends.sent_at, engagement.first_click_at
    from sends
    left join engagement on sends.send_id = engagement.send_id
    where sends.campaign = 'abandoned_cart'
        and sends.step = '1'
        and sends.send_status in ('sent', 'unknown')
        and sends.sent_at <= {{ as_of() }}
),

step_2 as (
    select
        '2' as step,
        abandoned.cart_id,
        step_1_sent.sent_at as trigger_at,
        step_1_sent.sent_at + {{ minutes(step_2["delay_minutes"]) }} as due_at,
        abandoned.last_cart_activity_at + {{ minutes(step_2["expire_after_minutes"]) }} as expires_at
    from abandoned
    inner join step_1_sent on abandoned.cart_id = step_1_sent.cart_id
    where step_1_sent.first_click_at is null
),

steps as (
    select * from step_1
    union all
    select * from step_2
),

final as (
    select
        'abandoned_cart' as campaign,
        steps.step,
        abandoned.cart_id as trigger_key,
        abandoned.customer_id,
        customers.email,
        steps.trigger_at,
        steps.due_at,
        steps.expires_at,
        case
            when abandoned.rule_reason is not null then abandoned.rule_reason
            when abandoned.purchased_at is not null or ordered_since.ordered_at is not null then 'purchased'
        end as exit_reason,
        {{ segment_payload({
            'cart_id': 'abandoned.cart_id',
            'items': record_json('abandoned.items'),
            'total_amount': 'abandoned.cart_value',
            'currency': "'EUR'",
            'recommendations': 'coalesce(' ~ list_head('recommendation_lists.recommendations', n_recommendations) ~ ', '
                ~ empty_record_list() ~ ')'
        }) }} as payload
    from steps
    inner join abandoned on steps.cart_id = abandoned.cart_id
    inner join customers on abandoned.customer_id = customers.customer_id
    left join ordered_since on abandoned.cart_id = ordered_since.cart_id
    left join recommendation_lists on abandoned.cart_id = recommendation_lists.cart_id
)

{{ segment_rows('final', campaign) }}
