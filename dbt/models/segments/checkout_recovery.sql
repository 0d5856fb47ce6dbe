{%- set campaign = segment_settings('checkout_recovery') -%}
{%- set step_1 = campaign['steps']['1'] -%}
with carts as (
    select * from {{ ref('int_carts') }}
),

customers as (
    select * from {{ ref('stg_customers') }}
),

orders as (
    select * from {{ ref('stg_orders') }}
),

-- a checkout that was started or whose payment failed, by a known customer; the latest of the two is the
-- trigger. Checkouts long past their expiry are left out.
checkouts as (
    select
        carts.*,
        greatest(carts.checkout_started_at, carts.payment_failed_at) as checkout_trigger_at
    from carts
    where carts.customer_id is not null
        and (carts.checkout_started_at is not null or carts.payment_failed_at is not null)
        and greatest(carts.checkout_started_at, carts.payment_failed_at)
            > {{ as_of() }} - {{ minutes(step_1["delay_minutes"], step_1["expire_after_minutes"]) }}
            - interval '7 day'
),

-- exit rule: the cart was bought, or the customer ordered anything since the checkout
ordered_since as (
    select checkouts.cart_id, min(orders.placed_at) as ordered_at
    from checkouts
    inner join orders
        on checkouts.customer_id = orders.customer_id
        and checkouts.checkout_trigger_at <= orders.placed_at
        and orders.placed_at <= {{ as_of() }}
    group by checkouts.cart_id
),

final as (
    select
        'checkout_recovery' as campaign,
        '1' as step,
        checkouts.cart_id as trigger_key,
        checkouts.customer_id,
        customers.email,
        checkouts.checkout_trigger_at as trigger_at,
        checkouts.checkout_trigger_at + {{ minutes(step_1["delay_minutes"]) }} as due_at,
        checkouts.checkout_trigger_at
            + {{ minutes(step_1["delay_minutes"], step_1["expire_after_minutes"]) }} as expires_at,
        case
            when checkouts.purchased_at >= checkouts.checkout_trigger_at or ordered_since.ordered_at is not null
                then 'purchased'
        end as exit_reason,
        {{ segment_payload({
            'cart_id': 'checkouts.cart_id',
            'items': record_json_list('checkouts.items'),
            'total_amount': 'checkouts.cart_value',
            'currency': "'EUR'"
        }) }} as payload
    from checkouts
    inner join customers on checkouts.customer_id = customers.customer_id
    left join ordered_since on checkouts.cart_id = ordered_since.cart_id
)

{{ segment_rows('final', campaign) }}
