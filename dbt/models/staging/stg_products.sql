-- One row per product in the version true at as_of (a price or stock change stamped later is not seen
-- yet). Products are reference data: one whose every version is stamped after as_of (a catalogue snapshot
-- replayed into an earlier period) keeps its earliest version rather than vanishing from cart mails.
{{ config(materialized='table') }}  -- picked once per run: read by every mail with products

with versions as (
    {{ versions_incremental(
        source('raw', 'products'), ['product_id'], "coalesce(updated_at, timestamp '1900-01-01')"
    ) }}
),

at_as_of as (
    {{ as_of_version('versions', ['product_id']) }}
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
    from at_as_of
)

select * from final
