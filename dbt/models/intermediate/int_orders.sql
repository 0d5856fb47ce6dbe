-- One row per order placed up to as_of: status and shipping facts (the segments add the lines as JSON with
-- the order_items_json macro, for their few orders only). `delivered_at_or_assumed` is the delivery time,
-- or shipped_at + 4 days where the carrier never reported one (review request and cross-sell wait on it).
with orders as (
    select * from {{ ref('stg_orders') }}
    where placed_at <= {{ as_of() }}
),

shipments as (
    select * from {{ ref('stg_shipments') }}
),

shipping as (
    select
        order_id,
        min(shipped_at) filter (where shipped_at <= {{ as_of() }}) as shipped_at,
        max(delivered_at) filter (where delivered_at <= {{ as_of() }}) as delivered_at
    from shipments
    group by order_id
),

final as (
    select
        orders.order_id,
        orders.customer_id,
        orders.cart_id,
        orders.order_status,
        orders.is_cancelled,
        orders.is_returned,
        orders.is_cancelled_or_returned,
        orders.total_amount,
        orders.currency,
        orders.placed_at,
        shipping.shipped_at,
        shipping.delivered_at,
        coalesce(shipping.delivered_at, shipping.shipped_at + interval '4 day') as delivered_at_or_assumed
    from orders
    left join shipping on orders.order_id = shipping.order_id
)

select * from final
