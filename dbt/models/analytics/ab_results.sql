{#- One row per experiment, campaign, step and variant (holdout included): assigned, sent, delivered,
    unique opens (machine opens excluded), unique clicks, conversions and revenue in the attribution
    window, unsubscribes, rates, and the comparison with the baseline: variants against `control`,
    `control` against the holdout. Conversion rate = conversions / assigned, so mailed variants and the
    holdout are measured the same way. Winner: both sides ≥ ab_min_sends_per_variant and p < ab_alpha. -#}
with mails as (
    select * from {{ ref('mail_performance') }}
    where experiment_id is not null
),

per_variant as (
    select
        experiment_id,
        campaign,
        step,
        variant,
        count(*) as n_assigned,
        count(*) filter (where send_status <> 'holdout') as n_sent,
        count(*) filter (where is_delivered) as n_delivered,
        count(*) filter (where is_opened) as n_opened,
        count(*) filter (where is_clicked) as n_clicked,
        count(*) filter (where is_converted) as n_converted,
        coalesce(sum(attributed_revenue), 0) as revenue,
        count(*) filter (where is_unsubscribed) as n_unsubscribed
    from mails
    group by experiment_id, campaign, step, variant
),

with_rates as (
    select
        *,
        n_delivered / nullif(n_sent, 0) as delivery_rate,
        n_opened / nullif(n_delivered, 0) as open_rate,
        n_clicked / nullif(n_delivered, 0) as click_rate,
        n_converted / nullif(n_assigned, 0) as conversion_rate,
        revenue / nullif(n_assigned, 0) as revenue_per_assigned,
        n_unsubscribed / nullif(n_delivered, 0) as unsubscribe_rate,
        case variant when 'control' then 'holdout' when 'holdout' then null else 'control' end as baseline_variant
    from per_variant
),

compared as (
    select
        variant_row.*,
        baseline.n_assigned as baseline_n_assigned,
        baseline.n_converted as baseline_n_converted,
        baseline.conversion_rate as baseline_conversion_rate,
        {{ two_proportion_z('variant_row.n_converted', 'variant_row.n_assigned',
                            'baseline.n_converted', 'baseline.n_assigned') }} as z_statistic,
        {{ diff_ci95_half_width('variant_row.n_converted', 'variant_row.n_assigned',
                                'baseline.n_converted', 'baseline.n_assigned') }} as ci95_half_width
    from with_rates as variant_row
    left join with_rates as baseline
        on variant_row.experiment_id = baseline.experiment_id
        and variant_row.campaign = baseline.campaign
        and variant_row.step = baseline.step
        and variant_row.baseline_variant = baseline.variant
),

final as (
    select
        experiment_id,
        campaign,
        step,
        variant,
        n_assigned,
        n_sent,
        n_delivered,
        n_opened,
        n_clicked,
        n_converted,
        revenue,
        n_unsubscribed,
        delivery_rate,
        open_rate,
        click_rate,
        conversion_rate,
        revenue_per_assigned,
        unsubscribe_rate,
        baseline_variant,
        baseline_conversion_rate,
        conversion_rate / nullif(baseline_conversion_rate, 0) - 1 as lift,
        conversion_rate - baseline_conversion_rate as conversion_rate_diff,
        conversion_rate - baseline_conversion_rate - ci95_half_width as diff_ci95_low,
        conversion_rate - baseline_conversion_rate + ci95_half_width as diff_ci95_high,
        z_statistic,
        {{ two_sided_p_value('z_statistic') }} as p_value,
        coalesce(
            baseline_variant is not null
            and n_assigned >= {{ var('ab_min_sends_per_variant') }}
            and baseline_n_assigned >= {{ var('ab_min_sends_per_variant') }}
            and {{ two_sided_p_value('z_statistic') }} < {{ var('ab_alpha') }}
            and conversion_rate > baseline_conversion_rate,
            false
        ) as is_winner
    from compared
)

select * from final
