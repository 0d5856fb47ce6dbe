with source as (
    {{ latest_version(source('raw', 'session_events'), ['event_id']) }}
),

final as (
    select
        event_id,
        session_id,
        customer_id,
        coalesce(is_logged_in, false) as is_logged_in,
        event_type,
        cart_id,
        product_id,
        case when event_type in ('add_to_cart', 'remove_from_cart') then coalesce(quantity, 1) end as quantity,
        unit_price,
        coalesce(currency, 'EUR') as currency,
        occurred_at
    from source
)

select * from final
