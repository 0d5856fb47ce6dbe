{#- One row per ledger entry (a mail sent, or a holdout customer recorded instead of a mail) with its
    delivery and engagement facts and the orders attributed to it: last touch within the attribution
    window (var attribution_window_days, default 5). Holdout rows get the orders their customer placed
    in the same window, so uplift can be measured against them. -#}
{%- set marketing = [] -%}
{%- for name, campaign in campaign_settings().items() -%}
    {%- if campaign.get('consent_policy') in ('required', 'existing_customer') -%}{%- do marketing.append(name) -%}{%- endif -%}
{%- endfor -%}
with sends as (
    select * from {{ ref('stg_sends') }}
    where send_status in ('sent', 'unknown', 'holdout')
),

engagement as (
    select * from {{ ref('int_mail_engagement') }}
),

orders as (
    select * from {{ ref('stg_orders') }}
    where not is_cancelled_or_returned and placed_at <= {{ as_of() }}
),

-- touches that can earn an order: marketing mails and holdout records
touches as (
    select send_id, customer_id, sent_at
    from sends
    where send_status = 'holdout'
        {%- if marketing %}
        or campaign in ({% for name in marketing %}'{{ name }}'{% if not loop.last %}, {% endif %}{% endfor %})
        {%- endif %}
),

-- the touches before each order within the window
touches_before_orders as (
    select
        orders.order_id,
        orders.total_amount,
        orders.placed_at,
        touches.send_id,
        touches.sent_at
    from orders
    inner join touches
        on orders.customer_id = touches.customer_id
        and orders.placed_at >= touches.sent_at
        and orders.placed_at < {{ timestamp_add('day', var('attribution_window_days'), 'touches.sent_at') }}
),

-- last touch: each order goes to the newest touch before it within the window
attributed_orders as (
    select order_id, total_amount, placed_at, send_id
    from (
        select
            *,
            row_number() over (partition by order_id order by sent_at desc, send_id asc) as touch_rank
        from touches_before_orders
    ) as ranked_touches
    where touch_rank = 1
),

per_send as (
    select
        send_id,
        count(*) as n_attributed_orders,
        sum(total_amount) as attributed_revenue,
        min(placed_at) as first_attributed_order_at
    from attributed_orders
    group by send_id
),

final as (
    select
        sends.send_id,
        sends.campaign,
        sends.step,
        sends.trigger_key,
        sends.customer_id,
        sends.experiment_id,
        sends.variant,
        sends.send_status,
        sends.sent_at,
        cast(sends.sent_at as date) as sent_date,
        engagement.delivered_at,
        engagement.first_open_at,
        engagement.first_click_at,
        engagement.bounced_at,
        engagement.bounce_type,
        engagement.dropped_at,
        engagement.spam_reported_at,
        engagement.unsubscribed_at,
        coalesce(engagement.n_machine_opens, 0) as n_machine_opens,
        engagement.delivered_at is not null as is_delivered,
        engagement.first_open_at is not null as is_opened,
        engagement.first_click_at is not null as is_clicked,
        engagement.unsubscribed_at is not null as is_unsubscribed,
        coalesce(per_send.n_attributed_orders, 0) as n_attributed_orders,
        -- the contract's type on every engine (a sum of decimal(18,2) is decimal(28,2) on Spark)
        cast(coalesce(per_send.attributed_revenue, 0) as decimal(38, 2)) as attributed_revenue,
        per_send.first_attributed_order_at,
        coalesce(per_send.n_attributed_orders, 0) > 0 as is_converted
    from sends
    left join engagement on sends.send_id = engagement.send_id
    left join per_send on sends.send_id = per_send.send_id
)

select * from final
