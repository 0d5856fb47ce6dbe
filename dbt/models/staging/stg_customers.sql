-- One row per customer that exists at as_of (created_at <= as_of), in the version true at as_of: an
-- address or name change stamped later is not seen yet (macro as_of_version).
{{ config(materialized='table') }}  -- picked once per run: read by most models

with versions as (
    select * from {{ ref('stg_customer_versions') }}
    where created_at <= {{ as_of() }}
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

select * from final
