-- One row per customer: their local time at as_of and the next moment marketing mail may go out to them
-- (08:00–20:00 local time, not on Sundays or German public holidays). The window depends only on the
-- timezone and the as_of, so it is computed once per timezone (a handful) and joined to the customers, not
-- once per customer and day (7 rows and two timezone conversions per customer, at every run).
--
-- A view: mail_candidates reads the windows of its due triggers' customers only, and the view joins those to
-- the handful of timezone rows when it is read. As a table every build wrote a row per customer (1 M rows,
-- 1.4 s of the daily build at 1 M customers) that nothing else reads. Like the table, it holds the build's as_of
-- (compiled in as a literal; a replay re-creates its views per tick).
{{ config(materialized='view') }}
with customers as (
    select * from {{ ref('stg_customers') }}
),

holidays as (
    select * from {{ ref('german_public_holidays') }}
),

timezones as (
    select distinct timezone from customers
),

local_now as (
    select
        timezone,
        {{ utc_to_local(as_of(), 'timezone') }} as local_as_of
    from timezones
),

-- today and the next six days in the timezone: the first allowed one is the next window
day_offsets as (
    select day_offset from {{ integer_series(0, 6, 'offsets', 'day_offset') }}
),

candidate_days as (
    select
        local_now.timezone,
        local_now.local_as_of,
        day_offsets.day_offset,
        cast(local_now.local_as_of as date) + cast(day_offsets.day_offset as integer) as local_day
    from local_now
    cross join day_offsets
),

allowed_starts as (
    select
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

windows as (
    select
        timezone,
        local_as_of,
        min(local_start) as next_local_window_start,
        {{ local_to_utc('min(local_start)', 'timezone') }} as next_window_at,
        min(local_start) = local_as_of as is_in_send_window
    from allowed_starts
    where local_start is not null
    group by timezone, local_as_of
),

final as (
    select
        customers.customer_id,
        windows.timezone,
        windows.local_as_of,
        windows.next_local_window_start,
        windows.next_window_at,
        windows.is_in_send_window
    from customers
    inner join windows on customers.timezone = windows.timezone
)

select * from final
