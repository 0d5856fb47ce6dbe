with source as (
    {{ latest_version(source('raw', 'orders'), ['order_id'], 'updated_at') }}
),

final as (
    select
        order_id,
        customer_id,
        cart_id,
        session_id,
        status as order_status,
        total_amount,
        coalesce(currency, 'EUR') as currency,
        placed_at,
        updated_at,
        status in ('cancelled', 'returned') as is_cancelled_or_returned
    from source
)

select * from final
