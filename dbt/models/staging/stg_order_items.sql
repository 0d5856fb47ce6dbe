-- Incremental table (like stg_session_events): a run recomputes only the keys with a version loaded since
-- the last run, from all their raw versions (macro latest_version_incremental), instead of deduplicating
-- the whole history for every reference and data test. `dbt build --full-refresh` rebuilds it.
{#- Spark (parquet: no DELETE/MERGE, so no delete+insert) rebuilds it as a table on every run. -#}
{{ config(
    materialized=('table' if engine_is_spark() else 'incremental'),
    unique_key=['order_id', 'line_no'],
    incremental_strategy='delete+insert'
) }}

with source as (
    {{ latest_version_incremental(source('raw', 'order_items'), ['order_id', 'line_no']) }}
),

final as (
    select
        order_id,
        line_no,
        product_id,
        quantity,
        unit_price,
        _loaded_at
    from source
)

select * from final
