{#- The run's logical time as a UTC timestamp literal. Every time rule compares against this, never
    against the wall clock, so a run is reproducible: `dbt build --vars '{as_of: "2026-11-24T10:00:00Z"}'`.
    With the var `as_of_source: variable`, the models compile against the DuckDB variable `nachfass_as_of`
    instead: `nachfass replay` compiles them once and runs every tick with that variable set. -#}
{% macro as_of() -%}
    {%- set value = var('as_of', none) -%}
    {%- if var('as_of_source', none) == 'variable' -%}
        cast(getvariable('nachfass_as_of') as timestamp)
    {%- elif value -%}
        {{ utc_timestamp_literal(value) }}
    {%- else -%}
        {{ utc_now() }}
    {%- endif -%}
{%- endmacro %}
