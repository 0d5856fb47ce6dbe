-- One row per order an order mail may show at as_of, with its lines as the `items` JSON (macro
-- order_items_json): orders placed within order_thanks' window, orders delivered (or assumed delivered)
-- and due within review_request's or cross_sell's window, orders with a shipment event within
-- shipping_update's window. Built once here instead of once per segment (each build of the JSON for
-- ~240 k orders cost 2–3 s); the windows are the segments' own, read from their YAML settings.
--
-- A build that selects some of the four segments but not all (the 15-minute job builds order_thanks and
-- shipping_update, not the daily review_request and cross_sell: dagster_project/jobs.py) takes only the
-- orders of the selected ones: the others are not built in it, and a build that selects them builds this
-- table with their orders first. Cross-sell's window (51 days of deliveries) holds ~3/4 of the orders. A
-- build selecting none of the four (`--select +int_order_lines`) takes every window.
{%- set thanks = segment_settings('order_thanks')['steps']['1'] %}
{%- set review = segment_settings('review_request')['steps']['1'] %}
{%- set cross = segment_settings('cross_sell')['steps']['1'] %}
{%- set shipped = segment_settings('shipping_update')['steps']['shipped'] %}
{%- set delivered = segment_settings('shipping_update')['steps']['delivered'] %}
{%- set consumers = ['order_thanks', 'review_request', 'cross_sell', 'shipping_update'] %}
{%- set selected = selected_models(consumers) or consumers %}
{%- set ns = namespace(union='') %}
with orders as (
    select * from {{ ref('int_orders') }}
),

shipments as (
    select * from {{ ref('stg_shipments') }}
),

wanted_orders as (
    {%- if 'order_thanks' in selected %}
    {{ ns.union }}
    select order_id from orders
    where placed_at
        > {{ as_of() }} - {{ minutes(thanks["delay_minutes"], thanks["expire_after_minutes"]) }} - interval '7 day'
    {%- set ns.union = 'union' %}
    {%- endif %}
    {%- if 'review_request' in selected %}
    {{ ns.union }}
    select order_id from orders
    where delivered_at_or_assumed <= {{ as_of() }} - {{ minutes(review["delay_minutes"]) }}
        and delivered_at_or_assumed
            > {{ as_of() }} - {{ minutes(review["delay_minutes"], review["expire_after_minutes"]) }} - interval '7 day'
    {%- set ns.union = 'union' %}
    {%- endif %}
    {%- if 'cross_sell' in selected %}
    {{ ns.union }}
    select order_id from orders
    where delivered_at_or_assumed <= {{ as_of() }} - {{ minutes(cross["delay_minutes"]) }}
        and delivered_at_or_assumed
            > {{ as_of() }} - {{ minutes(cross["delay_minutes"], cross["expire_after_minutes"]) }} - interval '7 day'
    {%- set ns.union = 'union' %}
    {%- endif %}
    {%- if 'shipping_update' in selected %}
    {{ ns.union }}
    select order_id from shipments
    where shipped_at <= {{ as_of() }}
        and shipped_at
            > {{ as_of() }} - {{ minutes(shipped["delay_minutes"], shipped["expire_after_minutes"]) }}
            - interval '7 day'
    union
    select order_id from shipments
    where delivered_at <= {{ as_of() }}
        and delivered_at
            > {{ as_of() }} - {{ minutes(delivered["delay_minutes"], delivered["expire_after_minutes"]) }}
            - interval '7 day'
    {%- set ns.union = 'union' %}
    {%- endif %}
),

final as (
    {{ order_items_json('wanted_orders') }}
)

select * from final
