{#- Use the folder's schema name as is (staging, segments, eligibility, analytics …) so analysts query
    `analytics.ab_results`, not `main_analytics.ab_results`. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
