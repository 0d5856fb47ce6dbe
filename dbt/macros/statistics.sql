{#- Two-sided p-value of a z statistic: 2 * (1 - Phi(|z|)), with Phi from Abramowitz & Stegun 26.2.17
    (absolute error < 7.5e-8), since SQL engines have no normal CDF. Checked against scipy in tests. -#}
{% macro two_sided_p_value(z) -%}
    (case when {{ z }} is null then null else
        2 * (exp(-0.5 * pow(abs({{ z }}), 2)) / sqrt(2 * pi()))
        * (
            0.319381530 * (1 / (1 + 0.2316419 * abs({{ z }})))
            - 0.356563782 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 2)
            + 1.781477937 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 3)
            - 1.821255978 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 4)
            + 1.330274429 * pow(1 / (1 + 0.2316419 * abs({{ z }})), 5)
        )
    end)
{%- endmacro %}

{#- Pooled two-proportion z statistic for x1/n1 vs x2/n2 (null when undefined). -#}
{% macro two_proportion_z(x1, n1, x2, n2) -%}
    (case
        when {{ n1 }} > 0 and {{ n2 }} > 0
            and ({{ x1 }} + {{ x2 }}) > 0 and ({{ x1 }} + {{ x2 }}) < ({{ n1 }} + {{ n2 }})
        then ({{ x1 }} / {{ n1 }}::double - {{ x2 }} / {{ n2 }}::double)
            / sqrt(
                (({{ x1 }} + {{ x2 }})::double / ({{ n1 }} + {{ n2 }}))
                * (1 - ({{ x1 }} + {{ x2 }})::double / ({{ n1 }} + {{ n2 }}))
                * (1.0 / {{ n1 }} + 1.0 / {{ n2 }})
            )
    end)
{%- endmacro %}

{#- Half-width of the 95 % Wald interval of the difference p1 - p2 (unpooled). -#}
{% macro diff_ci95_half_width(x1, n1, x2, n2) -%}
    (case when {{ n1 }} > 0 and {{ n2 }} > 0 then
        1.959963984540054 * sqrt(
            ({{ x1 }} / {{ n1 }}::double) * (1 - {{ x1 }} / {{ n1 }}::double) / {{ n1 }}
            + ({{ x2 }} / {{ n2 }}::double) * (1 - {{ x2 }} / {{ n2 }}::double) / {{ n2 }}
        )
    end)
{%- endmacro %}
