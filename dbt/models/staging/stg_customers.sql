-- One row per customer that exists at as_of (created_at <= as_of), in the version true at as_of: an
-- address or name change stamped later is not seen yet (macro as_of_version).
{{ config(materialized='table', meta={'tick_delta_key': 'customer_id'}) }}  -- picked once per run: read by most models

with
{%- if tick_delta() %}

-- a replay's tick updates the table an earlier tick built: only these (macro tick_delta; ST03: the final
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
