-- One row per suppressed address, with the first reason and when: what analysts and support look up
-- when a customer asks why they get no mail. Erased people appear only once their address reappears.
select email, suppression_reason, suppressed_at
from {{ ref('int_suppressions') }}
