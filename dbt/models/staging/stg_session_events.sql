-- Incremental: the history is large (≈ 30 storefront events per customer and quarter), so each run only
-- dedupes the rows loaded since the last run and replaces earlier versions of their event ids (newest
-- load wins, as latest_version does for the other staging models). `dbt build --full-refresh` rebuilds.
{#- Spark (parquet: no DELETE/MERGE, so no delete+insert) rebuilds it as a table on every run. -#}
{{ config(
    materialized=('table' if engine_is_spark() else 'incremental'),
    unique_key='event_id',
    incremental_strategy='delete+insert'
) }}

{%- set new_rows_only -%}
    {%- if is_incremental() -%}
    _loaded_at > (select coalesce(max(_loaded_at), timestamp '1900-01-01') from {{ this }})
    {%- else -%}
    true
    {%- endif -%}
{%- endset %}
-- the newest version of each event id loaded since the last run; only the event ids loaded more than once
-- are numbered (macro latest_version_of_loads)
with source as (
    {{ latest_version_of_loads(source('raw', 'session_events'), 'event_id', new_rows_only) }}
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
        occurred_at,
        _loaded_at
    from source
)

-- written in occurred_at order (appended batches are newer anyway), so scans bounded by time (int_carts)
-- skip old row groups
select * from final
order by occurred_at
