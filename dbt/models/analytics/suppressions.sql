-- One row per suppressed address, with the first reason and when: what analysts and support look up
-- when a customer asks why they get no mail. Erased people appear only once their address reappears.
select * from {{ ref('int_suppressions') }}
