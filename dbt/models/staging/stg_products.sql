with source as (
    {{ latest_version(source('raw', 'products'), ['product_id'], 'updated_at') }}
),

final as (
    select
        product_id,
        name as product_name,
        category,
        price,
        coalesce(currency, 'EUR') as currency,
        url as product_url,
        image_url,
        guide_url,
        coalesce(in_stock, true) as is_in_stock,
        updated_at
    from source
)

select * from final
