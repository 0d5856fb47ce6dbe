-- No advertising in transactional mails (spec "Consent policies", UWG § 7): a candidate of a campaign with
-- consent policy `none` never carries product recommendations in its payload. The renderer drops them
-- anyway; this catches a segment that starts adding them.
select campaign, step, trigger_key
from {{ ref('mail_candidates') }}
where consent_policy = 'none'
    and {{ json_array_length_at('payload', 'recommendations') }} > 0
