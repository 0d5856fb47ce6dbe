-- One row per suppressed address: never mailed again, whatever the consent policy.
-- Hard bounces, spam reports, unsubscribes (global or group), drops for an invalid address, three soft
-- bounces (`blocked`) within 30 days, and DSGVO erasures (matched by salted hash). A group_resubscribe
-- after a group unsubscribe lifts that one. Eligibility joins this model by address (lower-cased).
with events as (
    select * from {{ ref('stg_sendgrid_events') }}
),

erasures as (
    select * from {{ source('mail', 'erasures') }}
),

erasure_salt as (
    select * from {{ source('mail', 'erasure_salt') }}
),

consent as (
    select * from {{ ref('int_consent_state') }}
),

-- every address the exports know at as_of; an erased person who reappears is recognised by the salted hash
known_addresses as (
    select lower(email) as email from {{ ref('stg_customers') }}
    union
    select lower(email) from {{ ref('stg_consents') }}
    where occurred_at <= {{ as_of() }}
),

-- erased people stay suppressed until they confirm consent anew after the erasure. Erasures are not bound
-- to as_of: an erasure holds for every run from the moment it is recorded, whatever logical time a
-- replay or backfill runs at (the right to erasure does not wait for the clock).
erased as (
    select known_addresses.email, 'erased' as suppression_reason, erasures.erased_at as suppressed_at
    from known_addresses
    cross join erasure_salt
    inner join erasures on {{ sha256_hex('erasure_salt.salt || known_addresses.email') }} = erasures.email_hash
    left join consent on known_addresses.email = consent.email
    where not coalesce(consent.has_marketing_consent and consent.last_confirmed_at > erasures.erased_at, false)
),

event_suppressions as (
    select email, 'hard_bounce' as suppression_reason, occurred_at as suppressed_at
    from events where event_type = 'bounce' and coalesce(bounce_type, 'bounce') = 'bounce'
    union all
    select email, 'spam_report', occurred_at from events where event_type = 'spamreport'
    union all
    select email, 'unsubscribe', occurred_at from events where event_type = 'unsubscribe'
    union all
    select email, 'invalid_address', occurred_at
    from events where event_type = 'dropped' and lower(coalesce(reason, '')) like '%invalid%'
),

group_unsubscribes as (
    select
        email,
        max(occurred_at) filter (where event_type = 'group_unsubscribe') as unsubscribed_at,
        max(occurred_at) filter (where event_type = 'group_resubscribe') as resubscribed_at
    from events
    where event_type in ('group_unsubscribe', 'group_resubscribe')
    group by email
),

soft_bounces as (
    select
        email,
        occurred_at,
        count(*) over (
            partition by email order by occurred_at
            range between interval '30 day' preceding and current row
        ) as n_soft_bounces_30d
    from events
    where event_type = 'bounce' and bounce_type = 'blocked'
),

all_suppressions as (
    select * from event_suppressions
    union all
    select email, 'unsubscribe', unsubscribed_at
    from group_unsubscribes
    where unsubscribed_at > coalesce(resubscribed_at, timestamp '1900-01-01')
    union all
    select email, 'soft_bounces', min(occurred_at)
    from soft_bounces where n_soft_bounces_30d >= 3
    group by email
    union all
    select * from erased
),

final as (
    select
        lower(email) as email,
        {{ arg_min('suppression_reason', 'suppressed_at') }} as suppression_reason,
        min(suppressed_at) as suppressed_at
    from all_suppressions
    where email is not null
    group by lower(email)
)

select * from final
