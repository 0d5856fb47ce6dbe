with source as (
    {{ latest_version(source('raw', 'order_items'), ['order_id', 'line_no']) }}
),

final as (
    select
        order_id,
        line_no,
        product_id,
        quantity,
        unit_price
    from source
)

select * from final
