{#- One row per experiment, campaign, step and variant (holdout included): assigned, sent, delivered,
    unique opens (machine opens excluded), unique clicks, conversions and revenue in the attribution
    window, unsubscribes, rates, and the comparison with the baseline: variants against `control`,
    `control` against the holdout. Conversion rate = conversions / assigned, so mailed variants and the
    holdout are measured the same way. Beside the fixed-horizon z test: always-valid (sequential) intervals
    and p-values, Holm-adjusted p-values when several variants compete with control, revenue per assigned
    customer with Welch's interval, and the sample-ratio-mismatch check of the experiment against the split
    configured in the segment YAML. Formulas and references: dbt/macros/statistics.sql, docs/analysts.md.
    Winner: both sides >= ab_min_sends_per_variant, the always-valid Holm-adjusted p < ab_alpha, better
    than the baseline, and no sample-ratio mismatch. -#}
{%- set experiments = [] -%}
{%- for name, campaign in campaign_settings().items() if campaign.get('experiment') -%}
    {%- do experiments.append((name, campaign['experiment'])) -%}
{%- endfor -%}
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
        count(distinct customer_id) as n_customers,
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

-- the customer is the unit of randomisation: revenue per assigned customer and its spread, from the
-- revenue in whole cents (exact integer sums, so every engine divides the same numbers once)
per_customer as (
    select
        experiment_id, campaign, step, variant, customer_id,
        cast(sum(attributed_revenue) * 100 as bigint) as revenue_cents
    from mails
    group by experiment_id, campaign, step, variant, customer_id
),

customer_revenue as (
    select
        experiment_id,
        campaign,
        step,
        variant,
        cast(sum(revenue_cents) as {{ type_double() }}) / (count(*) * 100) as revenue_per_customer,
        -- the sample variance (n Σx² - (Σx)²) / (n (n - 1)), 0 for a single customer
        case when count(*) > 1 then
            cast(
                count(*) * sum(revenue_cents * revenue_cents) - sum(revenue_cents) * sum(revenue_cents)
                as {{ type_double() }}
            )
            / (cast(count(*) as {{ type_double() }}) * (count(*) - 1) * 10000)
        else cast(0 as {{ type_double() }}) end as revenue_variance
    from per_customer
    group by experiment_id, campaign, step, variant
),

-- the split configured in the segment YAML: holdout share (in whole buckets, as assign_variant rounds),
-- the rest by weight
configured_arms as (
    {%- for name, experiment in experiments %}
    {%- set holdout = ((experiment.get('holdout_percent', 0) or 0) * 100) | int %}
    {%- set total = experiment['variants'].values() | sum %}
    {%- if holdout > 0 %}
    select '{{ experiment["id"] }}' as experiment_id, '{{ name }}' as campaign, 'holdout' as variant,
        cast({{ holdout }} as {{ type_double() }}) / 10000 as expected_share
    union all
    {%- endif %}
    {%- for variant, weight in experiment['variants'].items() %}
    select '{{ experiment["id"] }}' as experiment_id, '{{ name }}' as campaign, '{{ variant }}' as variant,
        (1 - cast({{ holdout }} as {{ type_double() }}) / 10000) * {{ weight }} / {{ total }} as expected_share
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- else %}
    select cast(null as {{ type_text() }}) as experiment_id, cast(null as {{ type_text() }}) as campaign,
        cast(null as {{ type_text() }}) as variant, cast(null as {{ type_double() }}) as expected_share
    where false
    {%- endfor %}
),

-- customers per arm over all steps of an experiment (every later step's customers had the first step)
experiment_customers as (
    select experiment_id, campaign, variant, count(distinct customer_id) as n_customers
    from mails
    group by experiment_id, campaign, variant
),

srm_cells as (
    select
        coalesce(arms.experiment_id, observed.experiment_id) as experiment_id,
        coalesce(arms.campaign, observed.campaign) as campaign,
        coalesce(arms.variant, observed.variant) as variant,
        arms.expected_share,
        coalesce(observed.n_customers, 0) as n_customers
    from configured_arms as arms
    full outer join experiment_customers as observed
        on arms.experiment_id = observed.experiment_id
        and arms.campaign = observed.campaign
        and arms.variant = observed.variant
),

srm_totals as (
    select
        experiment_id,
        campaign,
        sum(n_customers) as n_customers,
        -- Pearson's chi-square over the configured arms; customers in an arm the YAML does not have
        -- (a variant renamed or removed mid-experiment) are a mismatch by themselves
        sum(pow(n_customers - n_customers_total * expected_share, 2) / nullif(n_customers_total * expected_share, 0))
            filter (where expected_share > 0) as chi_square,
        sum(n_customers) filter (where expected_share is null or expected_share = 0) as n_unconfigured,
        min(n_customers_total * expected_share) filter (where expected_share > 0) as min_expected
    from (
        select *, sum(n_customers) over (partition by experiment_id, campaign) as n_customers_total
        from srm_cells
    ) as cells
    group by experiment_id, campaign
    having count(expected_share) > 0 and sum(n_customers) > 0
),

srm as (
    select
        cells.experiment_id,
        cells.campaign,
        cells.variant,
        cells.expected_share as srm_expected_share,
        cast(cells.n_customers as {{ type_double() }}) / nullif(totals.n_customers, 0) as srm_observed_share,
        totals.chi_square as srm_chi_square,
        case
            -- double, not the decimal literal 0.0: the contract's type holds with or without experiments
            when totals.n_unconfigured > 0 then cast(0 as {{ type_double() }})
            {%- for name, experiment in experiments %}
            {%- set n_arms = experiment['variants'] | length
                + (1 if ((experiment.get('holdout_percent', 0) or 0) * 100) | int > 0 else 0) %}
            {%- if n_arms > 1 %}
            when cells.experiment_id = '{{ experiment["id"] }}' and cells.campaign = '{{ name }}'
                then {{ chi_square_sf('totals.chi_square', n_arms - 1) }}
            {%- endif %}
            {%- endfor %}
        end as srm_p_value,
        -- Cochran's rule: the chi-square approximation needs >= 5 expected customers in every arm
        totals.min_expected >= 5 or totals.n_unconfigured > 0 as is_srm_testable
    from srm_cells as cells
    inner join srm_totals as totals
        on cells.experiment_id = totals.experiment_id and cells.campaign = totals.campaign
),

with_rates as (
    select
        per_variant.*,
        customer_revenue.revenue_per_customer,
        customer_revenue.revenue_variance,
        cast(per_variant.n_delivered as {{ type_double() }}) / nullif(per_variant.n_sent, 0)
            as delivery_rate,
        cast(per_variant.n_opened as {{ type_double() }}) / nullif(per_variant.n_delivered, 0)
            as open_rate,
        cast(per_variant.n_clicked as {{ type_double() }}) / nullif(per_variant.n_delivered, 0)
            as click_rate,
        cast(per_variant.n_converted as {{ type_double() }}) / nullif(per_variant.n_assigned, 0)
            as conversion_rate,
        cast(per_variant.revenue as {{ type_double() }}) / nullif(per_variant.n_assigned, 0)
            as revenue_per_assigned,
        cast(per_variant.n_unsubscribed as {{ type_double() }}) / nullif(per_variant.n_delivered, 0)
            as unsubscribe_rate,
        case per_variant.variant when 'control' then 'holdout' when 'holdout' then null else 'control' end
            as baseline_variant
    from per_variant
    inner join customer_revenue
        on per_variant.experiment_id = customer_revenue.experiment_id
        and per_variant.campaign = customer_revenue.campaign
        and per_variant.step = customer_revenue.step
        and per_variant.variant = customer_revenue.variant
),

compared as (
    select
        variant_row.*,
        baseline.n_assigned as baseline_n_assigned,
        baseline.n_converted as baseline_n_converted,
        baseline.conversion_rate as baseline_conversion_rate,
        baseline.n_customers as baseline_n_customers,
        baseline.revenue_per_customer as baseline_revenue_per_customer,
        baseline.revenue_variance as baseline_revenue_variance,
        {{ two_proportion_z('variant_row.n_converted', 'variant_row.n_assigned',
                            'baseline.n_converted', 'baseline.n_assigned') }} as z_statistic,
        {{ proportion_diff_variance('variant_row.n_converted', 'variant_row.n_assigned',
                                    'baseline.n_converted', 'baseline.n_assigned') }} as diff_variance,
        variant_row.n_assigned + baseline.n_assigned as n_compared,
        -- Welch needs a spread on both sides: >= 5 customers each (so df >= 4, see statistics.sql)
        case when variant_row.n_customers >= 5 and baseline.n_customers >= 5 then
            variant_row.revenue_variance / variant_row.n_customers
            + baseline.revenue_variance / baseline.n_customers
        end as revenue_diff_variance,
        {{ welch_df('variant_row.revenue_variance', 'variant_row.n_customers',
                    'baseline.revenue_variance', 'baseline.n_customers') }} as revenue_welch_df
    from with_rates as variant_row
    left join with_rates as baseline
        on variant_row.experiment_id = baseline.experiment_id
        and variant_row.campaign = baseline.campaign
        and variant_row.step = baseline.step
        and variant_row.baseline_variant = baseline.variant
),

tested as (
    select
        compared.*,
        conversion_rate - baseline_conversion_rate as conversion_rate_diff,
        {{ two_sided_p_value('z_statistic') }} as p_value,
        {{ sequential_p_value('conversion_rate - baseline_conversion_rate', 'diff_variance', 'n_compared') }}
            as seq_p_value,
        {{ sequential_half_width('diff_variance', 'n_compared') }} as seq_half_width,
        revenue_per_customer - baseline_revenue_per_customer as revenue_per_customer_diff,
        case when revenue_diff_variance > 0 then
            {{ student_t_975('revenue_welch_df') }} * sqrt(revenue_diff_variance)
        end as revenue_half_width,
        case when revenue_diff_variance > 0 then
            {{ student_t_two_sided_p(
                '(revenue_per_customer - baseline_revenue_per_customer) / sqrt(revenue_diff_variance)',
                'revenue_welch_df') }}
        end as revenue_p_value,
        {{ sequential_half_width('revenue_diff_variance', 'n_customers + baseline_n_customers') }}
            as revenue_seq_half_width
    from compared
),

-- a family is every comparison with the same baseline in one experiment and step: the variants competing
-- with control (Holm-adjusted together), or control against the holdout (a family of one)
holm_steps as (
    select
        tested.*,
        {{ holm_step('p_value', 'experiment_id, campaign, step, baseline_variant') }} as p_value_holm_step,
        {{ holm_step('seq_p_value', 'experiment_id, campaign, step, baseline_variant') }}
            as seq_p_value_holm_step
    from tested
),

adjusted as (
    select
        holm_steps.*,
        {{ holm_adjusted('p_value_holm_step', 'p_value', 'experiment_id, campaign, step, baseline_variant') }}
            as p_value_holm,
        {{ holm_adjusted('seq_p_value_holm_step', 'seq_p_value',
                         'experiment_id, campaign, step, baseline_variant') }} as seq_p_value_holm
    from holm_steps
),

final as (
    select
        adjusted.experiment_id,
        adjusted.campaign,
        adjusted.step,
        adjusted.variant,
        adjusted.n_assigned,
        adjusted.n_customers,
        adjusted.n_sent,
        adjusted.n_delivered,
        adjusted.n_opened,
        adjusted.n_clicked,
        adjusted.n_converted,
        adjusted.revenue,
        adjusted.n_unsubscribed,
        adjusted.delivery_rate,
        adjusted.open_rate,
        adjusted.click_rate,
        adjusted.conversion_rate,
        adjusted.revenue_per_assigned,
        adjusted.revenue_per_customer,
        adjusted.unsubscribe_rate,
        adjusted.baseline_variant,
        adjusted.baseline_conversion_rate,
        adjusted.conversion_rate / nullif(adjusted.baseline_conversion_rate, 0) - 1 as lift,
        adjusted.conversion_rate_diff,
        adjusted.conversion_rate_diff - {{ diff_ci95_half_width(
            'adjusted.n_converted', 'adjusted.n_assigned',
            'adjusted.baseline_n_converted', 'adjusted.baseline_n_assigned') }} as diff_ci95_low,
        adjusted.conversion_rate_diff + {{ diff_ci95_half_width(
            'adjusted.n_converted', 'adjusted.n_assigned',
            'adjusted.baseline_n_converted', 'adjusted.baseline_n_assigned') }} as diff_ci95_high,
        adjusted.z_statistic,
        adjusted.p_value,
        adjusted.p_value_holm,
        -- a difference of two rates lies in [-1, 1]: cutting the interval there keeps its guarantee
        -- (greatest and least skip nulls, so an undefined interval is kept null explicitly)
        case when adjusted.seq_half_width is not null then
            greatest(-1, adjusted.conversion_rate_diff - adjusted.seq_half_width)
        end as diff_seq_ci95_low,
        case when adjusted.seq_half_width is not null then
            least(1, adjusted.conversion_rate_diff + adjusted.seq_half_width)
        end as diff_seq_ci95_high,
        adjusted.seq_p_value,
        adjusted.seq_p_value_holm,
        adjusted.baseline_revenue_per_customer,
        adjusted.revenue_per_customer_diff,
        adjusted.revenue_per_customer_diff - adjusted.revenue_half_width as revenue_diff_ci95_low,
        adjusted.revenue_per_customer_diff + adjusted.revenue_half_width as revenue_diff_ci95_high,
        adjusted.revenue_p_value,
        adjusted.revenue_per_customer_diff - adjusted.revenue_seq_half_width as revenue_diff_seq_ci95_low,
        adjusted.revenue_per_customer_diff + adjusted.revenue_seq_half_width as revenue_diff_seq_ci95_high,
        srm.srm_expected_share,
        srm.srm_observed_share,
        srm.srm_chi_square,
        srm.srm_p_value,
        coalesce(srm.is_srm_testable and srm.srm_p_value < {{ var('ab_srm_alpha') }}, false)
            as has_sample_ratio_mismatch,
        coalesce(
            adjusted.baseline_variant is not null
            and adjusted.n_assigned >= {{ var('ab_min_sends_per_variant') }}
            and adjusted.baseline_n_assigned >= {{ var('ab_min_sends_per_variant') }}
            and adjusted.seq_p_value_holm < {{ var('ab_alpha') }}
            and adjusted.conversion_rate > adjusted.baseline_conversion_rate
            and not coalesce(srm.is_srm_testable and srm.srm_p_value < {{ var('ab_srm_alpha') }}, false),
            false
        ) as is_winner
    from adjusted
    left join srm
        on adjusted.experiment_id = srm.experiment_id
        and adjusted.campaign = srm.campaign
        and adjusted.variant = srm.variant
)

select * from final
