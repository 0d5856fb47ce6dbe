-- One row per order placed up to as_of: status and shipping facts (the segments add the lines as JSON with
-- the order_items_json macro, for their few orders only). `delivered_at_or_assumed` is the delivery time,
-- or shipped_at + 4 days where the carrier never reported one (review request and cross-sell wait on it).
-- Updated from the table the last build left where a delta fits (macro tick_delta): only the orders below.
{{ config(
    materialized=delta_materialized(), incremental_strategy='tick_delta', unique_key='order_id',
    meta={'tick_delta_key': 'order_id'},
    post_hook="{{ record_delta_build([ref('stg_order_versions'), source('raw', 'shipments')]) }}"
) }}
with
{%- if tick_delta() %}

-- The orders whose row may differ between the earlier build (tick_delta_from) and as_of: a version of the
-- order placed, stamped or loaded since, or a shipment of it shipped, delivered or loaded since (every
-- order a loaded shipment ever belonged to). A superset does no harm: its rows are computed again. (ST03:
-- the final select reads it when tick_delta().)
changed_orders as (  -- noqa: ST03
    {{ tick_delta_keys(ref('stg_order_versions'), 'order_id', ['placed_at', 'version_at']) }}
    union
    select order_id from {{ ref('stg_shipments') }}
    where (shipped_at > {{ tick_delta_from() }} and shipped_at <= {{ as_of() }})
        or (delivered_at > {{ tick_delta_from() }} and delivered_at <= {{ as_of() }})
    union
    select order_id from {{ source('raw', 'shipments') }}
    where shipment_id in (
        select shipment_id from {{ source('raw', 'shipments') }}
        where false {{ delta_loaded_since() }}
    )
),
{%- endif %}

orders as (
    select * from {{ ref('stg_orders') }}
    where placed_at <= {{ as_of() }}
        {%- if tick_delta() %}
        and order_id in (select order_id from changed_orders)
        {%- endif %}
),

shipments as (
    select * from {{ ref('stg_shipments') }}
    {%- if tick_delta() %}
    where order_id in (select order_id from changed_orders)
    {%- endif %}
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

{% if tick_delta() -%}
select changed_orders.order_id as tick_delta_key, final.*
from changed_orders
left join final on changed_orders.order_id = final.order_id
{% else -%}
select * from final
{% endif -%}
