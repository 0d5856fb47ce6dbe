-- One row per order placed up to as_of, in the version true at as_of: a cancellation or return stamped
-- later is not seen yet. Where only a later version exists (a snapshot export replayed into an earlier
-- period), that version's cancellation or return had not happened at as_of: the order counts as placed.
{{ config(materialized='table') }}  -- picked once per run: read by most models

with versions as (
    select * from {{ ref('stg_order_versions') }}
    where placed_at <= {{ as_of() }}
),

at_as_of as (
    {{ as_of_version('versions', ['order_id']) }}
),

final as (
    select
        order_id,
        customer_id,
        cart_id,
        session_id,
        case
            when is_later_version and order_status in ('cancelled', 'returned') then 'placed'
            else order_status
        end as order_status,
        total_amount,
        currency,
        placed_at,
        updated_at,
        version_at,
        _loaded_at
    from at_as_of
),

with_flags as (
    select
        *,
        order_status = 'cancelled' as is_cancelled,
        order_status = 'returned' as is_returned,
        order_status in ('cancelled', 'returned') as is_cancelled_or_returned
    from final
)

select * from with_flags
