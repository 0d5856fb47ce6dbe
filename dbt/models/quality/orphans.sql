-- Rows whose customer or order is not (yet) in the warehouse. Ingest loads them (an export of orders can
-- arrive before the customer export that names the customer); the segments' joins leave them out, so no
-- mail is decided on half a picture. Listed here with a reason until the parent arrives: then they drop out
-- of this view and join like any other row. Never silently dropped.
with customers as (
    select customer_id from {{ ref('stg_customers') }}
),

orders as (
    select order_id from {{ ref('stg_orders') }}
),

orphans as (
    select 'orders' as table_name, o.order_id as row_key, 'customer' as missing_parent, o.customer_id as parent_key
    from {{ ref('stg_orders') }} as o
    where not exists (select 1 from customers as c where o.customer_id = c.customer_id)

    union all

    select 'order_items', i.order_id || '#' || cast(i.line_no as {{ type_text() }}), 'order', i.order_id
    from {{ ref('stg_order_items') }} as i
    where not exists (select 1 from orders as o where i.order_id = o.order_id)

    union all

    select 'shipments', s.shipment_id, 'order', s.order_id
    from {{ ref('stg_shipments') }} as s
    where not exists (select 1 from orders as o where s.order_id = o.order_id)

    union all

    select 'support_tickets', t.ticket_id, 'customer', t.customer_id
    from {{ ref('stg_support_tickets') }} as t
    where not exists (select 1 from customers as c where t.customer_id = c.customer_id)

    union all

    select 'session_events', e.event_id, 'customer', e.customer_id
    from {{ ref('stg_session_events') }} as e
    where e.customer_id is not null
        and not exists (select 1 from customers as c where e.customer_id = c.customer_id)
)

select
    table_name,
    row_key,
    missing_parent,
    parent_key,
    'unknown ' || missing_parent || ' "' || parent_key || '": held until the ' || missing_parent
    || 's export brings it' as reason
from orphans
