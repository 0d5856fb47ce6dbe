-- Incremental table (like stg_session_events): a run recomputes only the keys with a version loaded since
-- the last run, from all their raw versions (macro latest_version_incremental), instead of deduplicating
-- the whole history for every reference and data test. `dbt build --full-refresh` rebuilds it.
-- Only marketing-email consents are kept. The purpose filter runs after the insert (post_hook), so a newer
-- version of an event that changed its purpose still replaces (and then removes) the older one.
{#- Spark (parquet: no DELETE/MERGE, so no delete+insert) rebuilds it as a table on every run. -#}
{{ config(
    materialized=('table' if engine_is_spark() else 'incremental'),
    unique_key='consent_event_id',
    incremental_strategy='delete+insert',
    post_hook=([] if engine_is_spark() else
        ["delete from {{ this }} where purpose is distinct from 'marketing_email'"])
) }}

with source as (
    {{ latest_version_incremental(source('raw', 'consents'), ['consent_event_id']) }}
),

final as (
    select
        consent_event_id,
        customer_id,
        email,
        purpose,
        event as consent_event,
        source as consent_source,
        occurred_at,
        _loaded_at
    from source
    {%- if engine_is_spark() %}
    -- the post_hook's purpose filter, applied while the table is rebuilt (Spark: no DELETE on parquet)
    where purpose = 'marketing_email'
    {%- endif %}
)

select * from final
