{#- The lines of the given orders as the `items` JSON the order mails show (product, quantity, price, image,
    link), one row per order. Built in the segments for their bounded set of orders only: building it for
    every order of the history in int_orders cost ~25 s on 1.6 M orders. -#}
{% macro order_items_json(orders_relation) -%}
    select
        order_items.order_id,
        to_json(list({
            'product_id': order_items.product_id,
            'name': products.product_name,
            'quantity': order_items.quantity,
            'unit_price': order_items.unit_price,
            'currency': coalesce(products.currency, 'EUR'),
            'image_url': products.image_url,
            'url': products.product_url
        } order by order_items.line_no)) as items
    from {{ ref('stg_order_items') }} as order_items
    left join {{ ref('stg_products') }} as products on order_items.product_id = products.product_id
    where order_items.order_id in (select order_id from {{ orders_relation }})
    group by order_items.order_id
{%- endmacro %}
