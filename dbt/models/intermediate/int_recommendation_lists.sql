-- One row per recommendation target (order, cart or customer) with its recommendations as the list the
-- sales mails carry in their payload (`recommendations`), best first: product data for the product grid
-- (name, price, image, link, content for the unit price) and the reason line's parts. Segments take the
-- first n_recommendations of their campaign (a list slice).
with recommendations as (
    select * from {{ ref('int_product_recommendations') }}
),

products as (
    select * from {{ ref('stg_products') }}
),

final as (
    select
        recommendations.target_type,
        recommendations.target_id,
        -- best first (macro ordered_list: on DuckDB list_sort on (rank, product) structs, cheaper than an
        -- ordered aggregate)
        {{ ordered_list(record({
            'product_id': 'products.product_id',
            'name': 'products.product_name',
            'unit_price': 'products.price',
            'currency': 'products.currency',
            'image_url': 'products.image_url',
            'url': 'products.product_url',
            'category': 'products.category',
            'content_amount': 'products.content_amount',
            'content_unit': 'products.content_unit',
            'reason': record({
                'kind': 'recommendations.reason',
                'product_name': 'recommendations.reason_product_name',
                'category': 'recommendations.reason_category'
            })
        }), 'recommendations.recommendation_rank') }} as recommendations
    from recommendations
    inner join products on recommendations.product_id = products.product_id
    group by recommendations.target_type, recommendations.target_id
)

select * from final
