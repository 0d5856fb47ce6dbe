-- Every version of every order (one row per order_id and version_at: a status change is a new version),
-- the store stg_orders picks the version at as_of from. Incremental: a run reads only the rows loaded since
-- the last run. `dbt build --full-refresh` rebuilds it.
{#- Spark (parquet: no DELETE/MERGE, so no delete+insert) rebuilds it as a table on every run. -#}
{{ config(
    materialized=('table' if engine_is_spark() else 'incremental'),
    unique_key=['order_id', 'version_at'],
    incremental_strategy='delete+insert'
) }}

with source as (
    {{ versions_incremental(source('raw', 'orders'), ['order_id'], 'coalesce(updated_at, placed_at)') }}
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
        version_at,
        _loaded_at
    from source
)

select * from final
