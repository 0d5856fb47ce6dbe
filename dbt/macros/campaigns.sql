{#- Campaign settings live in each segment model's YAML (`config.meta.campaign`), one file per campaign,
    edited by marketers. These macros read them back from the dbt graph so `mail_candidates` applies the
    consent policy, priority and experiment of every campaign without a second copy of the settings. -#}

{#- The segment models that feed mail_candidates: every model in models/segments/ whose YAML has
    config.meta.campaign. The campaign registry (nachfass/core/campaigns.py) finds them and passes their
    names as the var `campaigns` on every dbt call (nachfass.core.dbt.dbt_vars): dbt must know the refs
    while it parses, before the graph exists. At run time the list is checked against the graph, so a
    stale list passed by hand stops the build instead of silently leaving a campaign out. -#}
{% macro campaign_models() -%}
    {%- set names = var('campaigns', none) -%}
    {%- if names is none -%}
        {{ exceptions.raise_compiler_error(
            "the var `campaigns` is missing: run dbt through nachfass (`nachfass dbt ...`, or "
            ~ "`dbt build --vars \"$(nachfass campaigns dbt-vars)\"`), which passes the campaign registry") }}
    {%- endif -%}
    {#- a unit test's graph has no nodes: it passes its own list (override `campaigns`) -#}
    {%- if execute and graph.get('nodes') -%}
        {%- set found = [] -%}
        {%- for node in graph.nodes.values() -%}
            {%- if node.resource_type == 'model' and node.fqn[1] == 'segments' and node.config.meta.get('campaign') -%}
                {%- do found.append(node.name) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if (found | sort) != (names | sort) -%}
            {{ exceptions.raise_compiler_error(
                "the var `campaigns` " ~ (names | sort) ~ " differs from the campaigns in models/segments "
                ~ (found | sort) ~ ": pass the registry's list (nachfass.core.dbt.dbt_vars)") }}
        {%- endif -%}
    {%- endif -%}
    {{ return(names) }}
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
    hash(), whose values are an implementation detail). Python mirrors it in dagster_project.campaigns. -#}
{% macro stable_bucket(expr) -%}
    ({{ hex_to_bigint('substr(md5(' ~ expr ~ '), 1, 8)') }} % 10000)
{%- endmacro %}

{#- A customer's bucket in an experiment (stable_bucket of customer id and experiment id). -#}
{% macro experiment_bucket(customer_id, experiment) -%}
    {{ stable_bucket("cast(" ~ customer_id ~ " as " ~ type_text() ~ ") || ':' || '" ~ experiment['id'] ~ "'") }}
{%- endmacro %}

{#- Variant for a customer in an experiment: holdout first, then variants by cumulative weight. `bucket`: an
    expression (a column) holding the customer's experiment_bucket, when a model computed it once already:
    the case below reads it once per variant, and the md5 behind it is the costly part. -#}
{% macro assign_variant(customer_id, experiment, bucket=none) -%}
    {%- if not experiment -%}
        'control'
    {%- else -%}
        {%- set bucket = bucket or experiment_bucket(customer_id, experiment) -%}
        {%- set holdout = (experiment.get('holdout_percent', 0) * 100) | int -%}
        {#- a variant is a weight, or a mapping with its weight and extra_delay_minutes (send-time tests) -#}
        {%- set variants = {} -%}
        {%- for name, spec in experiment['variants'].items() -%}
            {%- do variants.update({name: spec['weight'] if spec is mapping else spec}) -%}
        {%- endfor -%}
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

{#- Sum of minute settings as one interval literal, e.g. delay + expiry. The `int` filter also lets dbt
    parse the model before the YAML settings are attached (they exist only at run time). -#}
{% macro minutes() -%}
    interval '{{ varargs | map("int") | sum }} minutes'
{%- endmacro %}

{#- A trigger whose mail expired at most 7 days ago (due = trigger + delay, expiry = due + expire_after).
    Older triggers can only ever be `expired`: leaving them out keeps segments the size of the recent past,
    while mail_candidates still explains the recently expired ones. -#}
{% macro within_recent_past(trigger_at, step) -%}
    {{ trigger_at }} > {{ as_of() }} - {{ minutes(step["delay_minutes"], step["expire_after_minutes"]) }} - interval '7 day'
{%- endmacro %}

{#- The rule reasons that defer a trigger to a later run rather than skip it. -#}
{% macro deferral_reasons() -%}
    ('quiet_hours', 'not_live_yet', 'backlog_drip')
{%- endmacro %}

{#- Whether the models compile for `nachfass replay`'s lean ticks (as_of from a DuckDB variable): a tick that
    is not the replay's last may leave out what no rule reads (mail_candidates' `lean`, segment_payload). -#}
{% macro replay_lean() -%}
    {{ return(var('as_of_source', none) == 'variable' and target.type == 'duckdb') }}
{%- endmacro %}

{#- A segment's payload column from its record (macro record): the JSON object the mail carries.
    Segments build it in their `final` CTE and select their rows with segment_rows, which turns it into JSON
    (a segment using one without the other does not compile).
    In a lean replay tick the record stays a record until segment_rows, which writes no payload for a trigger
    mail_candidates can only skip (see there): the JSON of every row was ~40 % of a cart reminder segment's
    time, and five in six of its rows are exited or expired (docs/benchmarks.md). -#}
{% macro segment_payload(fields) -%}
    {%- if model is defined and model.raw_code is defined and 'segment_rows(' not in model.raw_code -%}
        {{ exceptions.raise_compiler_error(
            "segment_payload builds a record that segment_rows turns into JSON: end the segment with "
            ~ "{{ segment_rows('final', campaign) }}, or write the payload as to_json({...})") }}
    {%- endif -%}
    {%- if replay_lean() -%}
        {{ record(fields) }}
    {%- else -%}
        to_json({{ record(fields) }})
    {%- endif -%}
{%- endmacro %}

{#- The rows of a segment from its CTE `relation` (columns of the segment contract, payload from
    segment_payload; `campaign`: the segment's settings). Compiled for a lean replay tick and with the DuckDB
    variable nachfass_lean_payloads true (`nachfass replay` sets it for a model it builds again at a later
    tick, so the table the replay leaves is always whole), a trigger whose mail mail_candidates skips
    without reading the payload, at this tick and at every later one reading this table, has none: exited
    for a reason that is not a deferral (an order only where the campaign exits on orders), or expired. -#}
{% macro segment_rows(relation, campaign) -%}
    {%- if replay_lean() -%}
    select
        campaign, step, trigger_key, customer_id, email, trigger_at, due_at, expires_at, exit_reason,
        case
            when coalesce(getvariable('nachfass_lean_payloads'), false) and (
                {{ as_of() }} > expires_at
                or (exit_reason is not null and exit_reason not in {{ deferral_reasons() }}
                    {%- if not campaign.get('exit_on_order', false) %} and exit_reason <> 'purchased'{% endif %})
            ) then null
            else to_json(payload)
        end as payload
    from {{ relation }}
    {%- else -%}
    select * from {{ relation }}
    {%- endif -%}
{%- endmacro %}

{#- The settings of a segment model (its YAML `config.meta.campaign`). Read from the model's config; a unit
    test of the model has its own config, so there the settings come from the model's node in the graph.
    YAML configs are attached after dbt parses the SQL, so while parsing this returns placeholder zeros. -#}
{% macro segment_settings(name) -%}
    {#- `config.get` is undefined where the model is only templated, not parsed (sqlfluff lint) -#}
    {%- set campaign = (config.get('meta') or {}).get('campaign') if config.get is defined else none -%}
    {%- if campaign -%}
        {{ return(campaign) }}
    {%- endif -%}
    {%- if execute -%}
        {%- for node in graph.nodes.values() -%}
            {%- if node.resource_type == 'model' and node.name == name and node.config.meta.get('campaign') -%}
                {{ return(node.config.meta['campaign']) }}
            {%- endif -%}
        {%- endfor -%}
        {{ exceptions.raise_compiler_error("segment " ~ name ~ " has no config.meta.campaign in its YAML") }}
    {%- endif -%}
    {%- set placeholder_step = {'delay_minutes': 0, 'expire_after_minutes': 0, 'template': ''} -%}
    {{ return({
        'consent_policy': 'none',
        'inactive_after_days': 0,
        'steps': {'1': placeholder_step, '2': placeholder_step, 'shipped': placeholder_step,
                  'delivered': placeholder_step}
    }) }}
{%- endmacro %}

{#- Send-time experiments: the extra delay of the variant a customer is assigned to in their campaign's
    experiment (an interval; zero for the control, other campaigns and variants without a delay). Added to
    a trigger's due time in mail_candidates; the expiry stays where the campaign puts it. -#}
{% macro variant_delay(campaign, customer_id, settings) -%}
    {%- set ns = namespace(whens=[]) -%}
    {%- for name, campaign_settings in settings.items() if campaign_settings.get('experiment') -%}
        {%- set experiment = campaign_settings['experiment'] -%}
        {%- for variant, spec in experiment['variants'].items() -%}
            {%- if spec is mapping and spec.get('extra_delay_minutes') -%}
                {%- do ns.whens.append(
                    "when " ~ campaign ~ " = '" ~ name ~ "' and " ~ assign_variant(customer_id, experiment)
                    ~ " = '" ~ variant ~ "' then interval '" ~ (spec['extra_delay_minutes'] | int) ~ " minutes'"
                ) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endfor -%}
    {%- if ns.whens -%}
        case {{ ns.whens | join(' ') }} else interval '0 minutes' end
    {%- else -%}
        interval '0 minutes'
    {%- endif -%}
{%- endmacro %}

{#- The models among `names` that this dbt invocation builds (dbt's selected_resources). Empty while parsing
    and in a unit test (its graph has no nodes). A scheduled job that sends some campaigns builds their
    segments only (dagster_project/jobs.py): mail_candidates and int_product_recommendations ask. -#}
{% macro selected_models(names) -%}
    {%- set found = [] -%}
    {%- if execute and graph.get('nodes') -%}
        {%- for name in names if ('model.' ~ project_name ~ '.' ~ name) in selected_resources -%}
            {%- do found.append(name) -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(found) }}
{%- endmacro %}

{#- The var `name` as a whole number of days: null counts as 0; anything else but a number of days (0 or more)
    stops the build with a message naming the var. -#}
{% macro days_var(name) -%}
    {%- set value = var(name, none) -%}
    {#- `exceptions` is undefined where the model is only templated, not parsed (sqlfluff lint) -#}
    {%- if value is not none and (value | int(-1)) < 0 and exceptions is defined -%}
        {{ exceptions.raise_compiler_error(
            "the var " ~ name ~ " must be a number of days (0 or more) or null, not " ~ value) }}
    {%- endif -%}
    {{ return((value or 0) | int) }}
{%- endmacro %}
