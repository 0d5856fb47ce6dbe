-- Incremental table (like stg_session_events): a run recomputes only the keys with a version loaded since
-- the last run, from all their raw versions (macro latest_version_incremental), instead of deduplicating
-- the whole history for every reference and data test. `dbt build --full-refresh` rebuilds it.
-- Columns added to the export contract later (tracking_number, expected_delivery_date) are appended to a
-- table built before them (on_schema_change), so an upgrade needs no full refresh.
{#- Spark (parquet: no DELETE/MERGE, so no delete+insert) rebuilds it as a table on every run. -#}
{{ config(
    materialized=('table' if engine_is_spark() else 'incremental'), unique_key='shipment_id', incremental_strategy='delete+insert',
    on_schema_change='append_new_columns'
) }}

with source as (
    {{ latest_version_incremental(source('raw', 'shipments'), ['shipment_id']) }}
),

final as (
    select
        shipment_id,
        order_id,
        carrier,
        tracking_url,
        shipped_at,
        delivered_at,
        nullif(trim(tracking_number), '') as tracking_number,
        expected_delivery_date,
        _loaded_at
    from source
)

select * from final
