-- One row per email address: its marketing-consent state at the run's as_of time, from the consent log.
-- Consent holds only after a `confirmed` (double opt-in) with no later `withdrawn`; a `confirmed` after a
-- `withdrawn` restores it. `objection_notice_given` and `frequency_weekly` hold until a later `withdrawn`.
-- Updated from the table the last build left where a delta fits (macro tick_delta): only the addresses below.
{{ config(
    materialized=delta_materialized(), incremental_strategy='tick_delta', unique_key='email',
    meta={'tick_delta_key': 'email'},
    post_hook="{{ record_delta_build([ref('stg_consents'), source('raw', 'consents')]) }}"
) }}
with
{%- if tick_delta() %}

-- The addresses whose state may differ between the earlier build (tick_delta_from) and as_of: an event of
-- theirs occurred or loaded since, under every address a version of a loaded event names (an event whose
-- address or purpose changed leaves the old address's state). (ST03: the final select reads it when
-- tick_delta().)
changed_addresses as (  -- noqa: ST03
    {{ tick_delta_keys(ref('stg_consents'), 'email', ['occurred_at']) }}
    union
    select email from {{ source('raw', 'consents') }}
    where consent_event_id in (
        select consent_event_id from {{ source('raw', 'consents') }}
        where false {{ delta_loaded_since() }}
    )
),
{%- endif %}

consents as (
    select * from {{ ref('stg_consents') }}
    where occurred_at <= {{ as_of() }}
        {%- if tick_delta() %}
        and email in (select email from changed_addresses)
        {%- endif %}
),

per_address as (
    select
        email,
        max(occurred_at) filter (where consent_event = 'confirmed') as last_confirmed_at,
        max(occurred_at) filter (where consent_event = 'withdrawn') as last_withdrawn_at,
        max(occurred_at) filter (where consent_event = 'objection_notice_given') as last_objection_notice_at,
        max(occurred_at) filter (where consent_event = 'frequency_weekly') as last_frequency_weekly_at,
        max(occurred_at) filter (where consent_event = 'requested') as last_requested_at
    from consents
    group by email
),

final as (
    select
        email,
        last_confirmed_at,
        last_withdrawn_at,
        last_requested_at,
        coalesce(last_confirmed_at > coalesce(last_withdrawn_at, timestamp '1900-01-01'), false)
            as has_marketing_consent,
        coalesce(last_objection_notice_at > coalesce(last_withdrawn_at, timestamp '1900-01-01'), false)
            as has_objection_notice,
        coalesce(last_frequency_weekly_at > coalesce(last_withdrawn_at, timestamp '1900-01-01'), false)
            as prefers_weekly,
        last_withdrawn_at is not null
            and last_withdrawn_at >= coalesce(last_confirmed_at, timestamp '1900-01-01') as has_withdrawn
    from per_address
)

{% if tick_delta() -%}
select changed_addresses.email as tick_delta_key, final.*
from changed_addresses
left join final on changed_addresses.email = final.email
{% else -%}
select * from final
{% endif -%}
