-- Incremental table (like stg_session_events): a run recomputes only the keys with a version loaded since
-- the last run, from all their raw versions (macro latest_version_incremental), instead of deduplicating
-- the whole history for every reference and data test. `dbt build --full-refresh` rebuilds it.
{{ config(materialized='incremental', unique_key='customer_id', incremental_strategy='delete+insert') }}

with source as (
    {{ latest_version_incremental(source('raw', 'customers'), ['customer_id'], 'updated_at') }}
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
        updated_at,
        _loaded_at
    from source
)

select * from final
