{#- The A/B statistics of analytics.ab_results, in SQL so analysts can read and reuse them. SQL engines have
    no distribution functions, so each macro states its formula, its source and its accuracy; every one is
    checked against scipy / statsmodels or a definition computed another way in tests/test_statistics.py.
    docs/analysts.md ("The statistics and their references") explains them for analysts. Each macro puts its
    arguments in parentheses first, so any SQL expression (or another macro's output) can be passed. -#}

{#- Upper tail 1 - Phi(|z|) of the standard normal, Abramowitz & Stegun 26.2.17 (absolute error < 7.5e-8). -#}
{% macro normal_upper_tail(z) -%}
    {%- set z = "(" ~ z ~ ")" -%}
    (case when {{ z }} is null then null else
        ({{ safe_exp('-0.5 * pow(abs(' ~ z ~ '), 2)') }} / sqrt(2 * pi()))
        * (
            0.319381530 * (1 / (1 + 0.2316419 * abs({{ z }})))
            - 0.356563782 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 2)
            + 1.781477937 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 3)
            - 1.821255978 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 4)
            + 1.330274429 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 5)
        )
    end)
{%- endmacro %}

{#- Two-sided p-value of a z statistic: 2 * (1 - Phi(|z|)). -#}
{% macro two_sided_p_value(z) -%}
    {%- set z = "(" ~ z ~ ")" -%}
    (2 * {{ normal_upper_tail(z) }})
{%- endmacro %}

{#- Pooled two-proportion z statistic for x1/n1 vs x2/n2 (null when undefined). -#}
{% macro two_proportion_z(x1, n1, x2, n2) -%}
    {%- set x1 = "(" ~ x1 ~ ")" -%}
    {%- set n1 = "(" ~ n1 ~ ")" -%}
    {%- set x2 = "(" ~ x2 ~ ")" -%}
    {%- set n2 = "(" ~ n2 ~ ")" -%}
    (case
        when {{ n1 }} > 0 and {{ n2 }} > 0
            and ({{ x1 }} + {{ x2 }}) > 0 and ({{ x1 }} + {{ x2 }}) < ({{ n1 }} + {{ n2 }})
        then ({{ x1 }} / cast({{ n1 }} as {{ type_double() }}) - {{ x2 }} / cast({{ n2 }} as {{ type_double() }}))
            / sqrt(
                (cast(({{ x1 }} + {{ x2 }}) as {{ type_double() }}) / ({{ n1 }} + {{ n2 }}))
                * (1 - cast(({{ x1 }} + {{ x2 }}) as {{ type_double() }}) / ({{ n1 }} + {{ n2 }}))
                * (cast(1 as {{ type_double() }}) / {{ n1 }} + cast(1 as {{ type_double() }}) / {{ n2 }})
            )
    end)
{%- endmacro %}

{#- Unpooled variance of p1 - p2: p1 (1 - p1) / n1 + p2 (1 - p2) / n2 (null when a side is empty). -#}
{% macro proportion_diff_variance(x1, n1, x2, n2) -%}
    {%- set x1 = "(" ~ x1 ~ ")" -%}
    {%- set n1 = "(" ~ n1 ~ ")" -%}
    {%- set x2 = "(" ~ x2 ~ ")" -%}
    {%- set n2 = "(" ~ n2 ~ ")" -%}
    (case when {{ n1 }} > 0 and {{ n2 }} > 0 then
        ({{ x1 }} / cast({{ n1 }} as {{ type_double() }})) * (1 - {{ x1 }} / cast({{ n1 }} as {{ type_double() }})) / {{ n1 }}
        + ({{ x2 }} / cast({{ n2 }} as {{ type_double() }})) * (1 - {{ x2 }} / cast({{ n2 }} as {{ type_double() }})) / {{ n2 }}
    end)
{%- endmacro %}

{#- Half-width of the 95 % Wald interval of the difference p1 - p2 (unpooled). -#}
{% macro diff_ci95_half_width(x1, n1, x2, n2) -%}
    {%- set x1 = "(" ~ x1 ~ ")" -%}
    {%- set n1 = "(" ~ n1 ~ ")" -%}
    {%- set x2 = "(" ~ x2 ~ ")" -%}
    {%- set n2 = "(" ~ n2 ~ ")" -%}
    (1.959963984540054 * sqrt({{ proportion_diff_variance(x1, n1, x2, n2) }}))
{%- endmacro %}

{#- ---- Always-valid (sequential) inference -----------------------------------------------------------------
    The normal-mixture confidence sequence (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon 2021, eq. 14) in
    its asymptotic form for a difference of means (Waudby-Smith, Arnold, Wu, Wang & Ramdas 2023, eq. 9), as
    GrowthBook's and Eppo's sequential engines use it. With the estimate d, its variance v (so z² = d² / v),
    N units on both sides together and a mixing parameter rho chosen so the interval is tightest at N*
    units (var ab_sequential_tuning_n; Waudby-Smith et al. eq. 161):

        rho²       = (-2 ln alpha + ln(1 - 2 ln alpha)) / N*
        half-width = sqrt( v · 2 (N rho² + 1) / (N rho²) · ln( sqrt(N rho² + 1) / alpha ) )
        p-value    = min(1, sqrt(N rho² + 1) · exp( -z² N rho² / (2 (N rho² + 1)) ))

    The p-value is 1 / the mixture likelihood ratio (the mSPRT of Johari, Koomen, Pekelis & Walsh 2017 /
    2022): by Ville's inequality the chance that it *ever* falls below a under no effect is at most a, so it
    may be read every day. The interval excludes 0 exactly when the p-value is below alpha. -#}

{% macro sequential_rho_squared(alpha=0.05) -%}
    ((-2 * ln(cast({{ alpha }} as {{ type_double() }})) + ln(1 - 2 * ln(cast({{ alpha }} as {{ type_double() }})))) / {{ var('ab_sequential_tuning_n') }})
{%- endmacro %}

{% macro sequential_half_width(variance, n, alpha=0.05) -%}
    {%- set variance = "(" ~ variance ~ ")" -%}
    {%- set n = "(" ~ n ~ ")" -%}
    (case when {{ variance }} > 0 and {{ n }} > 0 then
        sqrt(
            {{ variance }} * 2 * ({{ n }} * {{ sequential_rho_squared(alpha) }} + 1)
            / ({{ n }} * {{ sequential_rho_squared(alpha) }})
            * ln(sqrt({{ n }} * {{ sequential_rho_squared(alpha) }} + 1) / {{ alpha }})
        )
    end)
{%- endmacro %}

{#- Tuned with the same alpha as the interval, so both agree; valid as a p-value for any threshold. -#}
{% macro sequential_p_value(estimate, variance, n, alpha=0.05) -%}
    {%- set estimate = "(" ~ estimate ~ ")" -%}
    {%- set variance = "(" ~ variance ~ ")" -%}
    {%- set n = "(" ~ n ~ ")" -%}
    (case when {{ variance }} > 0 and {{ n }} > 0 then
        least(1.0,
            sqrt({{ n }} * {{ sequential_rho_squared(alpha) }} + 1)
            * {{ safe_exp(
                '-(pow(' ~ estimate ~ ', 2) / ' ~ variance ~ ') * ' ~ n ~ ' * ' ~ sequential_rho_squared(alpha)
                ~ ' / (2 * (' ~ n ~ ' * ' ~ sequential_rho_squared(alpha) ~ ' + 1))'
            ) }}
        )
    end)
{%- endmacro %}

{#- ---- Welch's unequal-variance t test (difference of two means, e.g. revenue per customer) -------------
    Standard error sqrt(s1²/n1 + s2²/n2) from the sample variances; degrees of freedom by Welch-Satterthwaite.
    Student's t has no closed form, so: the 97.5 % quantile by the Cornish-Fisher expansion in 1/df
    (Abramowitz & Stegun 26.7.5, four terms; error < 1e-3 for df >= 4, < 3e-4 for df >= 5, < 1e-5 for
    df >= 10) and the two-sided p-value by Hill's normalising transformation (Hill 1970, CACM Algorithm 395;
    absolute error < 3e-6 for df >= 4). ab_results needs >= 5 customers per side, so df >= 4. -#}

{% macro welch_df(var1, n1, var2, n2) -%}
    {%- set var1 = "(" ~ var1 ~ ")" -%}
    {%- set n1 = "(" ~ n1 ~ ")" -%}
    {%- set var2 = "(" ~ var2 ~ ")" -%}
    {%- set n2 = "(" ~ n2 ~ ")" -%}
    (case when {{ n1 }} > 1 and {{ n2 }} > 1 and ({{ var1 }} > 0 or {{ var2 }} > 0) then
        pow({{ var1 }} / {{ n1 }} + {{ var2 }} / {{ n2 }}, 2)
        / (
            pow({{ var1 }} / {{ n1 }}, 2) / ({{ n1 }} - 1)
            + pow({{ var2 }} / {{ n2 }}, 2) / ({{ n2 }} - 1)
        )
    end)
{%- endmacro %}

{% macro student_t_975(df) -%}
    {%- set df = "(" ~ df ~ ")" -%}
    {%- set z = 1.959963984540054 -%}
    {%- set g1 = (z ** 3 + z) / 4 -%}
    {%- set g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96 -%}
    {%- set g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384 -%}
    {%- set g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160 -%}
    (cast({{ z }} as {{ type_double() }}) + cast({{ g1 }} as {{ type_double() }}) / {{ df }} + cast({{ g2 }} as {{ type_double() }}) / pow({{ df }}, 2)
        + cast({{ g3 }} as {{ type_double() }}) / pow({{ df }}, 3) + cast({{ g4 }} as {{ type_double() }}) / pow({{ df }}, 4))
{%- endmacro %}

{#- Hill: y = (df - 1/2) ln(1 + t²/df) is nearly chi-square(1); a correction in 1 / (48 (df - 1/2)²) makes
    sqrt(y) a standard normal deviate. -#}
{% macro student_t_two_sided_p(t, df) -%}
    {%- set t = "(" ~ t ~ ")" -%}
    {%- set df = "(" ~ df ~ ")" -%}
    {%- set y = "((" ~ df ~ " - 0.5) * ln(1 + pow(" ~ t ~ ", 2) / " ~ df ~ "))" -%}
    {%- set b = "(48 * pow(" ~ df ~ " - 0.5, 2))" -%}
    {%- set z = "((((((-0.4 * " ~ y ~ " - 3.3) * " ~ y ~ " - 24) * " ~ y ~ " - 85.5) / (0.8 * pow(" ~ y ~ ", 2) + 100 + "
        ~ b ~ ") + " ~ y ~ " + 3) / " ~ b ~ " + 1) * sqrt(" ~ y ~ "))" -%}
    (case when {{ t }} is not null and {{ df }} > 0 then {{ two_sided_p_value(z) }} end)
{%- endmacro %}

{#- ---- Sample-ratio mismatch --------------------------------------------------------------------------------
    Survival function P(X > x) of the chi-square distribution with an integer df known when the SQL compiles
    (the number of configured arms - 1), in closed form (Abramowitz & Stegun 26.4.4 and 26.4.5):
      even df = 2m:     exp(-x/2) · sum_{i<m} (x/2)^i / i!
      odd df = 2m + 1:  2 Q(sqrt x) + 2 phi(sqrt x) · sum_{i=1..m} x^(i - 1/2) / (1 · 3 · ... · (2i - 1)) -#}
{% macro chi_square_sf(x, df) -%}
    {%- set x = "(" ~ x ~ ")" -%}
    {%- set df = df | int -%}
    {%- if df < 1 -%}
        {{ exceptions.raise_compiler_error("chi_square_sf needs df >= 1, got " ~ df) }}
    {%- endif -%}
    (case when {{ x }} is null then null when {{ x }} <= 0 then 1.0 else
    {%- if df % 2 == 0 %}
        {{ safe_exp('-(' ~ x ~ ') / 2') }} * (1
        {%- set ns = namespace(factorial=1) -%}
        {%- for i in range(1, df // 2) -%}
            {%- set ns.factorial = ns.factorial * i %}
            + pow(({{ x }}) / 2, {{ i }}) / {{ ns.factorial }}
        {%- endfor %})
    {%- else %}
        2 * {{ normal_upper_tail("sqrt(" ~ x ~ ")") }}
        {%- set ns = namespace(double_factorial=1) -%}
        {%- for i in range(1, (df - 1) // 2 + 1) -%}
            {%- set ns.double_factorial = ns.double_factorial * (2 * i - 1) %}
            + 2 * {{ safe_exp('-(' ~ x ~ ') / 2') }} / sqrt(2 * pi()) * pow({{ x }}, {{ i }} - 0.5) / {{ ns.double_factorial }}
        {%- endfor %}
    {%- endif %}
    end)
{%- endmacro %}

{#- ---- Multiple comparisons ----------------------------------------------------------------------------------
    Holm's step-down adjustment (Holm 1979) of the p-values in one family: the i-th smallest of m gets
    max over j <= i of min(1, (m - j + 1) p_(j)). It controls the family-wise error rate at alpha whatever
    the dependence between the tests, and rejects at least what Bonferroni rejects. Null p-values stay null
    and do not count in m. SQL cannot nest window functions, so it takes two selects: `holm_step` in one,
    `holm_adjusted` over its result in the next (ties in p are peers of the `range` frame, so they get the
    same adjusted value, as in statsmodels). -#}
{% macro holm_step(p, partition_by) -%}
    {%- set p = "(" ~ p ~ ")" -%}
    (case when {{ p }} is not null then
        least(1.0,
            (count({{ p }}) over (partition by {{ partition_by }})
                - row_number() over (partition by {{ partition_by }}, {{ p }} is null order by {{ p }}) + 1)
            * {{ p }})
    end)
{%- endmacro %}

{% macro holm_adjusted(step, p, partition_by) -%}
    {%- set step = "(" ~ step ~ ")" -%}
    {%- set p = "(" ~ p ~ ")" -%}
    (case when {{ p }} is not null then
        max({{ step }}) over (
            partition by {{ partition_by }}, {{ p }} is null order by {{ p }}
            range between unbounded preceding and current row
        )
    end)
{%- endmacro %}
