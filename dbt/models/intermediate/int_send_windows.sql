-- One row per customer: their local time at as_of and the next moment marketing mail may go out to them
-- (08:00–20:00 local time, not on Sundays or German public holidays).
with customers as (
    select * from {{ ref('stg_customers') }}
),

holidays as (
    select * from {{ ref('german_public_holidays') }}
),

local_now as (
    select
        customer_id,
        timezone,
        {{ utc_to_local(as_of(), 'timezone') }} as local_as_of
    from customers
),

-- today and the next six days in the customer's timezone: the first allowed one is the next window
day_offsets as (
    select day_offset from {{ integer_series(0, 6, 'offsets', 'day_offset') }}
),

candidate_days as (
    select
        local_now.customer_id,
        local_now.timezone,
        local_now.local_as_of,
        day_offsets.day_offset,
        cast(local_now.local_as_of as date) + cast(day_offsets.day_offset as integer) as local_day
    from local_now
    cross join day_offsets
),

allowed_starts as (
    select
        candidate_days.customer_id,
        candidate_days.timezone,
        candidate_days.local_as_of,
        case
            when candidate_days.day_offset = 0 and extract(hour from candidate_days.local_as_of) between 8 and 19
                then candidate_days.local_as_of
            when candidate_days.day_offset = 0 and extract(hour from candidate_days.local_as_of) < 8
                then cast(candidate_days.local_day as timestamp) + interval '8 hour'
            when candidate_days.day_offset > 0
                then cast(candidate_days.local_day as timestamp) + interval '8 hour'
        end as local_start
    from candidate_days
    left join holidays on candidate_days.local_day = holidays.holiday_date
    where {{ day_of_week('candidate_days.local_day') }} <> 0
        and holidays.holiday_date is null
),

final as (
    select
        customer_id,
        timezone,
        local_as_of,
        min(local_start) as next_local_window_start,
        {{ local_to_utc('min(local_start)', 'timezone') }} as next_window_at,
        min(local_start) = local_as_of as is_in_send_window
    from allowed_starts
    where local_start is not null
    group by customer_id, timezone, local_as_of
)

select * from final
