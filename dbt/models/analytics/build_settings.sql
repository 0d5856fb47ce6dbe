-- One row: the logical time (as_of) the analytics models were built at and the settings they used, so a
-- report or a query can say "as of when, with which window and thresholds" without guessing from the data.
select
    {{ as_of() }} as as_of,
    {{ var('attribution_window_days') }} as attribution_window_days,
    {{ var('ab_alpha') }}::double as ab_alpha,
    {{ var('ab_min_sends_per_variant') }} as ab_min_sends_per_variant,
    {{ var('ab_sequential_tuning_n') }} as ab_sequential_tuning_n,
    {{ var('ab_srm_alpha') }}::double as ab_srm_alpha
