-- One row per email address: its marketing-consent state at the run's as_of time, from the consent log.
-- Consent holds only after a `confirmed` (double opt-in) with no later `withdrawn`; a `confirmed` after a
-- `withdrawn` restores it. `objection_notice_given` and `frequency_weekly` hold until a later `withdrawn`.
with consents as (
    select * from {{ ref('stg_consents') }}
    where occurred_at <= {{ as_of() }}
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

select * from final
