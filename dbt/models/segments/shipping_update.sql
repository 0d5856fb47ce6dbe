{%- set campaign = segment_settings('shipping_update') -%}
{%- set shipped = campaign['steps']['shipped'] -%}
{%- set delivered = campaign['steps']['delivered'] -%}
{#- what the payload shows of the shipment, carried by both event rows -#}
{%- set shipment_columns = ['carrier', 'tracking_url', 'tracking_number', 'expected_delivery_date', 'shipped_at',
                            'delivered_at'] -%}
with shipments as (
    select * from {{ ref('stg_shipments') }}
),

orders as (
    select * from {{ ref('int_orders') }}
),

order_items as (
    select * from {{ ref('stg_order_items') }}
),

products as (
    select * from {{ ref('stg_products') }}
),

customers as (
    select * from {{ ref('stg_customers') }}
),

-- one row per shipment and event (shipped, delivered) of the recent past, with the shipment's columns the
-- payload shows (joining these rows back to every shipment cost ~0.4 s at 1 M customers)
shipment_events as (
    select
        'shipped' as step,
        shipment_id,
        order_id,
        shipped_at as trigger_at,
        shipped_at + {{ minutes(shipped["delay_minutes"]) }} as due_at,
        shipped_at + {{ minutes(shipped["delay_minutes"], shipped["expire_after_minutes"]) }}
            as expires_at,
        {{ shipment_columns | join(', ') }}
    from shipments
    where shipped_at <= {{ as_of() }}
        and {{ within_recent_past('shipped_at', shipped) }}
    union all
    select
        'delivered' as step,
        shipment_id,
        order_id,
        delivered_at as trigger_at,
        delivered_at + {{ minutes(delivered["delay_minutes"]) }} as due_at,
        delivered_at + {{ minutes(delivered["delay_minutes"], delivered["expire_after_minutes"]) }}
            as expires_at,
        {{ shipment_columns | join(', ') }}
    from shipments
    where delivered_at <= {{ as_of() }}
        and delivered_at > {{ as_of() }}
            - {{ minutes(delivered["delay_minutes"], delivered["expire_after_minutes"]) }}
            - interval '7 day'
),

-- on delivery: the how-to guide of every product in the order that has one
guides as (
    select
        order_products.order_id,
        -- sorted by product id, the record's first field (one per product: the products are distinct)
        {{ ordered_list(record({
            'product_id': 'order_products.product_id',
            'name': 'order_products.product_name',
            'guide_url': 'order_products.guide_url'
        }), 'order_products.product_id', record_leads_with_order=true) }} as guides
    from (
        select distinct order_items.order_id, products.product_id, products.product_name, products.guide_url
        from order_items
        inner join products on order_items.product_id = products.product_id
        where products.guide_url is not null
            and order_items.order_id in (select order_id from shipment_events)
    ) as order_products
    group by order_products.order_id
),

order_lines as (
    select * from {{ ref('int_order_lines') }}
),

final as (
    select
        'shipping_update' as campaign,
        shipment_events.step,
        shipment_events.shipment_id as trigger_key,
        orders.customer_id,
        customers.email,
        shipment_events.trigger_at,
        shipment_events.due_at,
        shipment_events.expires_at,
        {{ order_exit_reason('orders') }} as exit_reason,
        {{ segment_payload({
            'order_id': 'orders.order_id',
            'placed_at': record_timestamp('orders.placed_at'),
            'items': record_json_list('order_lines.items'),
            'total_amount': 'orders.total_amount',
            'currency': 'orders.currency',
            'shipment': record({
                'shipment_id': 'shipment_events.shipment_id',
                'carrier': 'shipment_events.carrier',
                'tracking_url': 'shipment_events.tracking_url',
                'tracking_number': 'shipment_events.tracking_number',
                'expected_delivery_date': record_timestamp('shipment_events.expected_delivery_date'),
                'shipped_at': record_timestamp('shipment_events.shipped_at'),
                'delivered_at': record_timestamp(
                    "case when shipment_events.step = 'delivered' then shipment_events.delivered_at end")
            }),
            'guides': "case when shipment_events.step = 'delivered' then coalesce(guides.guides, "
                ~ empty_record_list() ~ ') end'
        }) }} as payload
    from shipment_events
    inner join orders on shipment_events.order_id = orders.order_id
    inner join customers on orders.customer_id = customers.customer_id
    left join guides on shipment_events.order_id = guides.order_id
    left join order_lines on shipment_events.order_id = order_lines.order_id
)

{{ segment_rows('final', campaign) }}
