-- One row: the logical time (as_of) the analytics models were built at and the settings they used, so a
-- report or a query can say "as of when, with which window and thresholds" without guessing from the data.
-- Cast to the contract's types, whatever literal a --vars override passes.
select
    {{ as_of() }} as as_of,
    cast({{ var('attribution_window_days') }} as integer) as attribution_window_days,
    cast({{ var('ab_alpha') }} as {{ type_double() }}) as ab_alpha,
    cast({{ var('ab_min_sends_per_variant') }} as integer) as ab_min_sends_per_variant,
    cast({{ var('ab_sequential_tuning_n') }} as integer) as ab_sequential_tuning_n,
    cast({{ var('ab_srm_alpha') }} as {{ type_double() }}) as ab_srm_alpha
