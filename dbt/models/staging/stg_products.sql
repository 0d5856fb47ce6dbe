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
        -- net content for the unit price (Grundpreis): only a positive amount with its unit counts
        case when content_amount > 0 and content_unit is not null then content_amount end as content_amount,
        case when content_amount > 0 then content_unit end as content_unit,
        updated_at
    from source
)

select * from final
