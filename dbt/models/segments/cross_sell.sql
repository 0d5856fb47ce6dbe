{%- set campaign = segment_settings('cross_sell') -%}
{%- set step_1 = campaign['steps']['1'] -%}
{%- set n_recommendations = campaign.get('n_recommendations', 3) -%}
with orders as (
    select * from {{ ref('int_orders') }}
),

order_items as (
    select * from {{ ref('stg_order_items') }}
),

recommendations as (
    select * from {{ ref('int_product_recommendations') }}
),

products as (
    select * from {{ ref('stg_products') }}
),

customers as (
    select * from {{ ref('stg_customers') }}
),

-- delivered orders (or shipped + 4 days where the delivery was never reported) of the recent past whose
-- mail is due (delivered at least delay_minutes ago): a row that is not due yet never reaches
-- mail_candidates in this run, and a later run computes it afresh
delivered as (
    select * from orders
    where delivered_at_or_assumed <= {{ as_of() }} - {{ minutes(step_1["delay_minutes"]) }}
        and {{ within_recent_past('delivered_at_or_assumed', step_1) }}
),

delivered_products as (
    select distinct order_items.order_id, order_items.product_id
    from order_items
    inner join delivered on order_items.order_id = delivered.order_id
),

-- complements of the order's products that the order does not already contain
order_complements as (
    select
        delivered_products.order_id,
        recommendations.recommended_product_id,
        min(recommendations.source_rank) as source_rank,
        sum(recommendations.n_orders_together) as n_orders_together
    from delivered_products
    inner join recommendations on delivered_products.product_id = recommendations.product_id
    left join delivered_products as already_bought
        on delivered_products.order_id = already_bought.order_id
        and recommendations.recommended_product_id = already_bought.product_id
    where already_bought.product_id is null
    group by delivered_products.order_id, recommendations.recommended_product_id
),

-- the best n_recommendations per order
order_recommendations as (
    select
        *,
        row_number() over (
            partition by order_id
            order by source_rank, n_orders_together desc, recommended_product_id
        ) as recommendation_rank
    from order_complements
    qualify recommendation_rank <= {{ n_recommendations }}
),

recommendation_lists as (
    select
        order_recommendations.order_id,
        -- best first: list_sort on (rank, product) structs, cheaper than an ordered aggregate
        list_transform(list_sort(list({
            'recommendation_rank': order_recommendations.recommendation_rank,
            'product': {
                'product_id': products.product_id,
                'name': products.product_name,
                'unit_price': products.price,
                'currency': products.currency,
                'image_url': products.image_url,
                'url': products.product_url
            }
        })), lambda recommendation: recommendation.product) as recommendations
    from order_recommendations
    inner join products on order_recommendations.recommended_product_id = products.product_id
    group by order_recommendations.order_id
),

order_lines as (
    select * from {{ ref('int_order_lines') }}
),

final as (
    select
        'cross_sell' as campaign,
        '1' as step,
        delivered.order_id as trigger_key,
        delivered.customer_id,
        customers.email,
        delivered.delivered_at_or_assumed as trigger_at,
        delivered.delivered_at_or_assumed + {{ minutes(step_1["delay_minutes"]) }} as due_at,
        delivered.delivered_at_or_assumed
            + {{ minutes(step_1["delay_minutes"], step_1["expire_after_minutes"]) }} as expires_at,
        {{ order_exit_reason('delivered') }} as exit_reason,
        to_json({
            'order_id': delivered.order_id,
            'placed_at': delivered.placed_at,
            'items': json(coalesce(order_lines.items, '[]')),
            'recommendations': recommendation_lists.recommendations
        }) as payload
    from delivered
    inner join recommendation_lists on delivered.order_id = recommendation_lists.order_id
    inner join customers on delivered.customer_id = customers.customer_id
    left join order_lines on delivered.order_id = order_lines.order_id
)

select * from final
