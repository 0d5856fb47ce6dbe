with source as (
    {{ latest_version(source('raw', 'customers'), ['customer_id'], 'updated_at') }}
),

final as (
    select
        customer_id,
        email,
        nullif(trim(first_name), '') as first_name,
        nullif(trim(last_name), '') as last_name,
        salutation,
        coalesce(locale, 'de-DE') as locale,
        coalesce(timezone, '{{ var("shop_timezone") }}') as timezone,
        coalesce(is_guest, false) as is_guest,
        created_at,
        updated_at
    from source
)

select * from final
