-- Every version of every customer (one row per customer_id and version_at), the store stg_customers picks
-- the version at as_of from. Incremental: a run reads only the rows loaded since the last run.
-- `dbt build --full-refresh` rebuilds it.
{#- Spark (parquet: no DELETE/MERGE, so no delete+insert) rebuilds it as a table on every run. -#}
{{ config(
    materialized=('table' if engine_is_spark() else 'incremental'),
    unique_key=['customer_id', 'version_at'],
    incremental_strategy='delete+insert'
) }}

with source as (
    {{ versions_incremental(source('raw', 'customers'), ['customer_id'], 'coalesce(updated_at, created_at)') }}
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
        version_at,
        _loaded_at
    from source
)

select * from final
