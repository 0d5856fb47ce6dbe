-- One row per order up to as_of with the customer's ordering cadence so far: the median days between
-- their orders up to and including this one, and when they ordered next (null = not yet). An inactivity
-- episode starts after an order that was not followed by another within the customer's threshold
-- (reactivation); the order identifies the episode.
-- Updated from the table the last build left where a delta fits (macro tick_delta): only the customers below,
-- all their orders.
{{ config(
    materialized=delta_materialized(), incremental_strategy='tick_delta', unique_key='customer_id',
    meta={'tick_delta_key': 'customer_id'},
    post_hook="{{ record_delta_build([ref('stg_order_versions')]) }}"
) }}
with
{%- if tick_delta() %}

-- The customers whose rows may differ between the earlier build (tick_delta_from) and as_of: those of an
-- order with a version placed, stamped or loaded since (under every customer id a version of it names).
-- (ST03: the final select reads it when tick_delta().)
changed_customers as (  -- noqa: ST03
    select distinct customer_id from {{ ref('stg_order_versions') }}
    where order_id in (
        {{ tick_delta_keys(ref('stg_order_versions'), 'order_id', ['placed_at', 'version_at']) }}
    )
),
{%- endif %}

orders as (
    select * from {{ ref('stg_orders') }}
    where placed_at <= {{ as_of() }}
        {%- if tick_delta() %}
        and customer_id in (select customer_id from changed_customers)
        {%- endif %}
),

sequenced as (
    select
        order_id,
        customer_id,
        placed_at,
        lead(placed_at) over (partition by customer_id order by placed_at, order_id) as next_order_at,
        {{ timestamp_diff(
            'lag(placed_at) over (partition by customer_id order by placed_at, order_id)', 'placed_at', 'second'
        ) }} as seconds_since_previous_order,
        row_number() over (partition by customer_id order by placed_at, order_id) as order_number
    from orders
),

-- the median of the gaps so far (the customer's orders up to and including this one), in whole seconds: the
-- middle of two whole numbers is exact, so every engine gets the same median before the one division
with_median as (
    {{ with_running_median(
        'sequenced', 'seconds_since_previous_order', 'customer_id', ['placed_at', 'order_id'], 'order_id',
        'median_seconds_between_orders'
    ) }}
),

final as (
    select
        order_id,
        customer_id,
        placed_at,
        next_order_at,
        order_number,
        seconds_since_previous_order / 86400.0 as days_since_previous_order,
        median_seconds_between_orders / 86400.0 as median_days_between_orders
    from with_median
)

{% if tick_delta() -%}
select changed_customers.customer_id as tick_delta_key, final.*
from changed_customers
left join final on changed_customers.customer_id = final.customer_id
{% else -%}
select * from final
{% endif -%}
