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
with new_rows as (
    select * from {{ source('raw', 'session_events') }}
    where {{ new_rows_only }}
),

-- the newest version of each event id; rows of one loaded file are one version each (macro
-- loaded_from_one_file), as on a first run from one export
source as (
    {%- if loaded_from_one_file(source('raw', 'session_events'), new_rows_only) %}
    select * from new_rows
    {%- else %}
    {{ latest_version('new_rows', ['event_id']) }}
    {%- endif %}
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
