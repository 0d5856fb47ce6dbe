{#- The lines of the given orders as the `items` JSON the order mails show (product, quantity, price, image,
    link), one row per order. Built once per run in int_order_lines for the bounded set of orders the order
    mails may show: building it for every order of the history cost ~25 s on 1.6 M orders. The lines are
    sorted by line_no (macro ordered_list: on DuckDB list_sort on (line_no, item) structs, much cheaper
    than an ordered aggregate, same list). -#}
{% macro order_items_json(orders_relation) -%}
    select
        order_items.order_id,
        to_json({{ ordered_list(record({
            'product_id': 'order_items.product_id',
            'name': 'products.product_name',
            'quantity': 'order_items.quantity',
            'unit_price': 'order_items.unit_price',
            'currency': "coalesce(products.currency, 'EUR')",
            'image_url': 'products.image_url',
            'url': 'products.product_url',
            'content_amount': 'products.content_amount',
            'content_unit': 'products.content_unit'
        }), 'order_items.line_no') }}) as items
    from (
        select * from {{ ref('stg_order_items') }}
        where order_id in (select order_id from {{ orders_relation }})
    ) as order_items
    left join {{ ref('stg_products') }} as products on order_items.product_id = products.product_id
    group by order_items.order_id
{%- endmacro %}

{#- Exit reason of an order mail (order thanks, shipping update, review request, cross-sell): a returned
    order skips with `order_returned`, a cancelled one with `order_cancelled` (the campaign spec's Clarifications). -#}
{% macro order_exit_reason(orders) -%}
    case
        when {{ orders }}.is_returned then 'order_returned'
        when {{ orders }}.is_cancelled then 'order_cancelled'
    end
{%- endmacro %}
