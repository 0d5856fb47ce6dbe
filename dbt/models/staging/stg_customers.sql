-- One row per customer that exists at as_of (created_at <= as_of), in the version true at as_of: an
-- address or name change stamped later is not seen yet (macro as_of_version).
-- Picked once per run (read by most models) and updated, not computed whole, where a delta fits (macro
-- tick_delta: the customers with a version created, stamped or loaded since the last build).
{{ config(
    materialized=delta_materialized(), incremental_strategy='tick_delta', unique_key='customer_id',
    meta={'tick_delta_key': 'customer_id'},
    post_hook="{{ record_delta_build([ref('stg_customer_versions')]) }}"
) }}

with
{%- if tick_delta() %}

-- a delta build updates the table an earlier build left: only these (macro tick_delta; ST03: the final
-- select reads it when tick_delta())
changed_customers as (  -- noqa: ST03
    {{ tick_delta_keys(ref('stg_customer_versions'), 'customer_id', ['created_at', 'version_at']) }}
),
{%- endif %}

versions as (
    select * from {{ ref('stg_customer_versions') }}
    where created_at <= {{ as_of() }}
        {%- if tick_delta() %}
        and customer_id in (select customer_id from changed_customers)
        {%- endif %}
),

at_as_of as (
    {{ as_of_version('versions', ['customer_id']) }}
),

final as (
    select
        customer_id,
        email,
        first_name,
        last_name,
        salutation,
        locale,
        timezone,
        is_guest,
        created_at,
        updated_at,
        version_at,
        _loaded_at
    from at_as_of
)

{% if tick_delta() -%}
select changed_customers.customer_id as tick_delta_key, final.*
from changed_customers
left join final on changed_customers.customer_id = final.customer_id
{% else -%}
select * from final
{% endif -%}
