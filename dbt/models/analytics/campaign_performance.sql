-- One row per day, campaign, step and variant: volumes, engagement and attributed revenue.
with mails as (
    select * from {{ ref('mail_performance') }}
),

final as (
    select
        sent_date,
        campaign,
        step,
        variant,
        count(*) filter (where send_status <> 'holdout') as n_sent,
        count(*) filter (where send_status = 'holdout') as n_holdout,
        count(*) filter (where is_delivered) as n_delivered,
        count(*) filter (where is_opened) as n_opened,
        count(*) filter (where is_clicked) as n_clicked,
        count(*) filter (where bounced_at is not null) as n_bounced,
        count(*) filter (where is_unsubscribed) as n_unsubscribed,
        count(*) filter (where is_converted) as n_converted,
        sum(attributed_revenue) as attributed_revenue,
        cast(count(*) filter (where is_opened) as {{ type_double() }})
        / nullif(count(*) filter (where is_delivered), 0) as open_rate,
        cast(count(*) filter (where is_clicked) as {{ type_double() }})
        / nullif(count(*) filter (where is_delivered), 0) as click_rate
    from mails
    group by sent_date, campaign, step, variant
)

select * from final
