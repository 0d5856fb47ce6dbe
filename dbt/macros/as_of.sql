{#- The run's logical time as a UTC timestamp literal. Every time rule compares against this, never
    against the wall clock, so a run is reproducible: `dbt build --vars '{as_of: "2026-11-24T10:00:00Z"}'`. -#}
{% macro as_of() -%}
    {%- set value = var('as_of', none) -%}
    {%- if value -%}
        cast(timezone('UTC', cast('{{ value }}' as timestamptz)) as timestamp)
    {%- else -%}
        cast(timezone('UTC', now()) as timestamp)
    {%- endif -%}
{%- endmacro %}
