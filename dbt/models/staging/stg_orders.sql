-- Incremental table (like stg_session_events): a run recomputes only the keys with a version loaded since
-- the last run, from all their raw versions (macro latest_version_incremental), instead of deduplicating
-- the whole history for every reference and data test. `dbt build --full-refresh` rebuilds it.
{{ config(materialized='incremental', unique_key='order_id', incremental_strategy='delete+insert') }}

with source as (
    {{ latest_version_incremental(source('raw', 'orders'), ['order_id'], 'updated_at') }}
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
        status in ('cancelled', 'returned') as is_cancelled_or_returned,
        _loaded_at
    from source
)

select * from final
