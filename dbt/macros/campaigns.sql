{#- Campaign settings live in each segment model's YAML (`config.meta.campaign`), one file per campaign,
    edited by marketers. These macros read them back from the dbt graph so `mail_candidates` applies the
    consent policy, priority and experiment of every campaign without a second copy of the settings. -#}

{#- The segment models that feed mail_candidates. Adding a campaign = a new segment model + its name here. -#}
{% macro campaign_models() -%}
    {{ return(['abandoned_cart']) }}
{%- endmacro %}

{% macro campaign_settings() -%}
    {%- set settings = {} -%}
    {%- if execute -%}
        {%- for node in graph.nodes.values() -%}
            {%- if node.resource_type == 'model' and node.name in campaign_models() -%}
                {%- do settings.update({node.name: node.config.meta.get('campaign', {})}) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(settings) }}
{%- endmacro %}

{#- A stable bucket in [0, 10000) from text, identical on every run and every DuckDB version (md5, not
    hash(), whose values are an implementation detail). Python mirrors it in dagster_project.mail.ab. -#}
{% macro stable_bucket(expr) -%}
    (cast(('0x' || substr(md5({{ expr }}), 1, 8)) as bigint) % 10000)
{%- endmacro %}

{#- Variant for a customer in an experiment: holdout first, then variants by cumulative weight. -#}
{% macro assign_variant(customer_id, experiment) -%}
    {%- if not experiment -%}
        'control'
    {%- else -%}
        {%- set bucket = stable_bucket("cast(" ~ customer_id ~ " as varchar) || ':' || '" ~ experiment['id'] ~ "'") -%}
        {%- set holdout = (experiment.get('holdout_percent', 0) * 100) | int -%}
        {%- set variants = experiment['variants'] -%}
        {%- set total = variants.values() | sum -%}
        case
            when {{ bucket }} < {{ holdout }} then 'holdout'
            {%- set ns = namespace(cum=0) %}
            {%- for name, weight in variants.items() %}
            {%- set ns.cum = ns.cum + weight %}
            when ({{ bucket }} - {{ holdout }}) * {{ total }} < {{ ns.cum }} * ({{ 10000 - holdout }}) then '{{ name }}'
            {%- endfor %}
        end
    {%- endif -%}
{%- endmacro %}
