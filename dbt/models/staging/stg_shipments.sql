with source as (
    {{ latest_version(source('raw', 'shipments'), ['shipment_id']) }}
),

final as (
    select
        shipment_id,
        order_id,
        carrier,
        tracking_url,
        shipped_at,
        delivered_at
    from source
)

select * from final
