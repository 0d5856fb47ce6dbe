-- One row per cart active in the recent past: its net lines (adds minus removes), last activity and
-- whether it was bought, as of the run's time. Only carts with an event in the window the cart segments read
-- are computed, from all their events, so the model costs a few days of events, not the whole history: the
-- window reaches back over the longest expiry of abandoned_cart's steps and checkout_recovery's delay plus
-- expiry, plus the 7 days a segment keeps expired triggers as near misses (10 days with the shipped
-- settings: 72 h + 7 days). Every cart those segments and the cart recommendations read has an event in it.
-- `cart_lookback_days` reads further back (e.g. for a segment of one's own reading older carts).
{%- set reaches = [] %}
{%- for step in segment_settings('abandoned_cart')['steps'].values() %}
    {%- do reaches.append(step['expire_after_minutes'] | int) %}
{%- endfor %}
{%- for step in segment_settings('checkout_recovery')['steps'].values() %}
    {%- do reaches.append((step['delay_minutes'] | int) + (step['expire_after_minutes'] | int)) %}
{%- endfor %}
{%- set lookback_minutes = [(reaches | max) + 7 * 1440, days_var('cart_lookback_days') * 1440] | max %}
{#- updated from the table an earlier build left where a delta fits (macro tick_delta): only the carts below -#}
{{ config(
    materialized=delta_materialized(), incremental_strategy='tick_delta', unique_key='cart_id',
    meta={'tick_delta_key': 'cart_id'},
    post_hook="{{ record_delta_build([ref('stg_session_events'), ref('stg_order_versions'), source('raw', 'products')]) }}"
) }}
with session_events as {{ cte_not_materialized() }} (
    select * from {{ ref('stg_session_events') }}
),
{%- if tick_delta() %}

-- The carts whose row may differ between the earlier build (tick_delta_from) and as_of; every other row
-- stays as it is: no event of the cart in between, none leaving the window, no order of it placed or
-- changed, no product of its lines changed. A superset does no harm: its rows are computed again. (ST03:
-- the linter also reads the variant without tick_delta(), whose final select does not read it.)
changed_carts as (  -- noqa: ST03
    select cart_id from session_events
    where cart_id is not null
        and (
            (occurred_at > {{ tick_delta_from() }} and occurred_at <= {{ as_of() }})
            or (
                occurred_at > {{ tick_delta_from() }} - {{ minutes(lookback_minutes) }}
                and occurred_at <= {{ as_of() }} - {{ minutes(lookback_minutes) }}
            )
            {{ delta_loaded_since() }}
        )
    union
    select cart_id from {{ ref('stg_order_versions') }}
    where cart_id is not null
        and order_id in (
            select order_id from {{ ref('stg_order_versions') }}
            where (placed_at > {{ tick_delta_from() }} and placed_at <= {{ as_of() }})
                or (version_at > {{ tick_delta_from() }} and version_at <= {{ as_of() }})
                {{ delta_loaded_since() }}
        )
    union
    select cart_id from session_events
    where cart_id is not null
        and occurred_at <= {{ as_of() }}
        and occurred_at > {{ as_of() }} - {{ minutes(lookback_minutes) }}
        and product_id in (
            select product_id from {{ source('raw', 'products') }}
            where (
                coalesce(updated_at, timestamp '1900-01-01') > {{ tick_delta_from() }}
                and coalesce(updated_at, timestamp '1900-01-01') <= {{ as_of() }}
            )
                {{ delta_loaded_since() }}
        )
),
{%- endif %}

recent_carts as (
    select distinct cart_id
    from session_events
    where cart_id is not null
        and occurred_at <= {{ as_of() }}
        and occurred_at > {{ as_of() }} - {{ minutes(lookback_minutes) }}
        {%- if tick_delta() %}
        and cart_id in (select cart_id from changed_carts)
        {%- endif %}
),

-- the earliest event of any recent cart: every event of these carts is at or after it. stg_session_events
-- is written in occurred_at order, so the scan below skips the row groups before it (zone maps) instead
-- of reading the whole history; the result is the same on any row order.
first_recent_cart_event as (
    select min(occurred_at) as occurred_at
    from session_events
    where cart_id in (select cart_id from recent_carts)
),

cart_events as (
    select * from session_events
    where occurred_at >= (select occurred_at from first_recent_cart_event)
        and occurred_at <= {{ as_of() }}
        and cart_id in (select cart_id from recent_carts)
),

products as (
    select * from {{ ref('stg_products') }}
),

orders as (
    select * from {{ ref('stg_orders') }}
),

lines as (
    select
        cart_id,
        product_id,
        sum(case when event_type = 'add_to_cart' then quantity else 0 end)
        - sum(case when event_type = 'remove_from_cart' then quantity else 0 end) as net_quantity,
        {{ arg_max('unit_price', 'occurred_at', where="event_type = 'add_to_cart'") }} as unit_price,
        {{ arg_max('currency', 'occurred_at') }} as currency
    from cart_events
    where event_type in ('add_to_cart', 'remove_from_cart')
    group by cart_id, product_id
),

cart_summary as (
    select
        cart_id,
        {{ arg_max('customer_id', 'occurred_at', where='customer_id is not null') }} as customer_id,
        min(occurred_at) as cart_created_at,
        max(occurred_at) filter (where event_type in ('add_to_cart', 'remove_from_cart')) as last_cart_activity_at,
        -- "logged in while filling it": every add happened in a logged-in session
        coalesce(bool_and(is_logged_in) filter (where event_type = 'add_to_cart'), false) as was_logged_in,
        max(occurred_at) filter (where event_type = 'checkout_started') as checkout_started_at,
        max(occurred_at) filter (where event_type = 'payment_failed') as payment_failed_at,
        max(occurred_at) filter (where event_type = 'purchase') as purchased_at
    from cart_events
    group by cart_id
),

ordered_carts as (
    select cart_id, min(placed_at) as ordered_at
    from orders
    where cart_id is not null and placed_at <= {{ as_of() }}
        {%- if tick_delta() %}
        and cart_id in (select cart_id from recent_carts)
        {%- endif %}
    group by cart_id
),

cart_items as (
    select
        lines.cart_id,
        sum(lines.net_quantity) as n_items,
        sum(lines.net_quantity * coalesce(lines.unit_price, products.price)) as cart_value,
        -- sorted by product_id, the record's first field (one line per product): on DuckDB list_sort of the
        -- records, much cheaper than an ordered aggregate (macro ordered_list)
        to_json({{ ordered_list(record({
            'product_id': 'lines.product_id',
            'name': 'products.product_name',
            'quantity': 'lines.net_quantity',
            'unit_price': 'coalesce(lines.unit_price, products.price)',
            'currency': 'lines.currency',
            'image_url': 'products.image_url',
            'url': 'products.product_url',
            'content_amount': 'products.content_amount',
            'content_unit': 'products.content_unit'
        }), 'lines.product_id', record_leads_with_order=true) }}) as items
    from lines
    left join products on lines.product_id = products.product_id
    where lines.net_quantity > 0
    group by lines.cart_id
),

final as (
    select
        cart_summary.cart_id,
        cart_summary.customer_id,
        cart_summary.cart_created_at,
        cart_summary.last_cart_activity_at,
        cart_summary.was_logged_in,
        cart_summary.checkout_started_at,
        cart_summary.payment_failed_at,
        coalesce(cart_summary.purchased_at, ordered_carts.ordered_at) as purchased_at,
        coalesce(cart_items.n_items, 0) as n_items,
        cart_items.cart_value,
        cart_items.items
    from cart_summary
    left join cart_items on cart_summary.cart_id = cart_items.cart_id
    left join ordered_carts on cart_summary.cart_id = ordered_carts.cart_id
)

{% if tick_delta() -%}
select changed_carts.cart_id as tick_delta_key, final.*
from changed_carts
left join final on changed_carts.cart_id = final.cart_id
{% else -%}
select * from final
{% endif -%}
