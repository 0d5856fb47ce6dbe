{%- set campaign = config.get('meta')['campaign'] -%}
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

-- a cart with items left whose owner was logged in while filling it; carts long past their expiry are
-- left out so the candidates table stays the size of the recent past, not of the whole history
abandoned as (
    select carts.*
    from carts
    where carts.customer_id is not null
        and carts.was_logged_in
        and carts.n_items > 0
        and carts.last_cart_activity_at
            > {{ as_of() }} - interval '{{ step_1["expire_after_minutes"] }} minutes' - interval 7 day
),

-- exit rule: the customer ordered (this cart or anything else) since the last cart activity
ordered_since as (
    select abandoned.cart_id, min(orders.placed_at) as ordered_at
    from abandoned
    inner join orders
        on abandoned.customer_id = orders.customer_id
        and orders.placed_at > abandoned.last_cart_activity_at
        and orders.placed_at <= {{ as_of() }}
    group by abandoned.cart_id
),

final as (
    select
        'abandoned_cart' as campaign,
        '1' as step,
        abandoned.cart_id as trigger_key,
        abandoned.customer_id,
        customers.email,
        abandoned.last_cart_activity_at as trigger_at,
        abandoned.last_cart_activity_at + interval '{{ step_1["delay_minutes"] }} minutes' as due_at,
        abandoned.last_cart_activity_at + interval '{{ step_1["expire_after_minutes"] }} minutes' as expires_at,
        case
            when abandoned.purchased_at is not null or ordered_since.ordered_at is not null then 'purchased'
        end as exit_reason,
        to_json({
            'cart_id': abandoned.cart_id,
            'items': abandoned.items,
            'total_amount': abandoned.cart_value,
            'currency': 'EUR'
        }) as payload
    from abandoned
    inner join customers on abandoned.customer_id = customers.customer_id
    left join ordered_since on abandoned.cart_id = ordered_since.cart_id
)

select * from final
