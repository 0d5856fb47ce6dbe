-- One row per address that is dormant at as_of (list hygiene): it got both reactivation mails of an
-- episode and opened or clicked nothing within 30 days after the second. It gets no further marketing
-- mail until the customer orders or confirms consent again after it became dormant.
{%- set dormant_after_days = 30 %}
with sends as (
    select * from {{ ref('stg_sends') }}
    where send_status in ('sent', 'unknown')
        and sent_at <= {{ as_of() }}
),

engagement as (
    select * from {{ ref('int_mail_engagement') }}
),

consent as (
    select * from {{ ref('int_consent_state') }}
),

customers as (
    select * from {{ ref('stg_customers') }}
),

orders as (
    select * from {{ ref('stg_orders') }}
    where placed_at <= {{ as_of() }}
),

-- both reactivation mails of one episode (trigger key) went to the address
second_reactivations as (
    select
        lower(step_2.email) as email,
        step_2.trigger_key,
        step_2.sent_at as second_sent_at
    from sends as step_2
    inner join sends as step_1
        on step_2.trigger_key = step_1.trigger_key
        and step_1.campaign = 'reactivation'
        and step_1.step = '1'
    where step_2.campaign = 'reactivation'
        and step_2.step = '2'
        and step_2.sent_at + interval '{{ dormant_after_days }} day' <= {{ as_of() }}
),

-- any open or click on any mail to the address in the 30 days after the second reactivation mail
engaged as (
    select distinct second_reactivations.email, second_reactivations.trigger_key
    from second_reactivations
    inner join engagement
        on lower(engagement.email) = second_reactivations.email
    where (engagement.first_open_at > second_reactivations.second_sent_at
            and engagement.first_open_at
                <= second_reactivations.second_sent_at + interval '{{ dormant_after_days }} day')
        or (engagement.first_click_at > second_reactivations.second_sent_at
            and engagement.first_click_at
                <= second_reactivations.second_sent_at + interval '{{ dormant_after_days }} day')
),

dormant as (
    select
        second_reactivations.email,
        max(second_reactivations.second_sent_at + interval '{{ dormant_after_days }} day') as dormant_since
    from second_reactivations
    left join engaged
        on second_reactivations.email = engaged.email
        and second_reactivations.trigger_key = engaged.trigger_key
    where engaged.email is null
    group by second_reactivations.email
),

-- the last order of the dormant addresses only: the whole order history grouped per address took most of the
-- model's time, at every replay tick too, for the few addresses (often none) that are dormant
last_orders as (
    select dormant.email, max(orders.placed_at) as last_order_at
    from dormant
    inner join customers on lower(customers.email) = dormant.email
    inner join orders on customers.customer_id = orders.customer_id
    group by dormant.email
),

final as (
    select
        dormant.email,
        dormant.dormant_since
    from dormant
    left join last_orders on dormant.email = last_orders.email
    left join consent on dormant.email = consent.email
    where coalesce(last_orders.last_order_at <= dormant.dormant_since, true)
        and coalesce(consent.last_confirmed_at <= dormant.dormant_since, true)
)

select * from final
