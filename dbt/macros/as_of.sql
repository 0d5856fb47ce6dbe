{#- The run's logical time as a UTC timestamp literal. Every time rule compares against this, never
    against the wall clock, so a run is reproducible: `dbt build --vars '{as_of: "2026-11-24T10:00:00Z"}'`.
    Without that var, the environment variable NACHFASS_AS_OF gives it (the Dagster runs pass it so: vars
    are part of dbt's partial-parse checksum, so a new as_of in --vars made every run parse the whole
    project again; read only while executing, it is not tracked by the parse and changes nothing there).
    With the var `as_of_source: variable`, the models compile against the DuckDB variable `nachfass_as_of`
    instead: `nachfass replay` compiles them once and runs every tick with that variable set. -#}
{% macro as_of() -%}
    {%- set value = var('as_of', none) -%}
    {%- if value is none and execute -%}
        {%- set value = env_var('NACHFASS_AS_OF', '') or none -%}
    {%- endif -%}
    {%- if var('as_of_source', none) == 'variable' -%}
        cast(getvariable('nachfass_as_of') as timestamp)
    {%- elif value -%}
        {{ utc_timestamp_literal(value) }}
    {%- else -%}
        {{ utc_now() }}
    {%- endif -%}
{%- endmacro %}

{#- `nachfass replay` updates a few costly tick models (meta `tick_delta_key`, e.g. int_carts) from one tick
    to the next instead of computing them whole: compiled with the var `tick_delta: true`, such a model
    selects only the keys whose rows may differ between the time its table was built, this macro (the DuckDB
    variable `nachfass_delta_from`), and as_of, in a column `tick_delta_key`, with their rows as of as_of
    beside it (null when the key has no row any more). The replay deletes those keys and inserts the rows. -#}
{% macro tick_delta() -%}
    {{ return(var('tick_delta', false) and var('as_of_source', none) == 'variable') }}
{%- endmacro %}

{% macro tick_delta_from() -%}
    cast(getvariable('nachfass_delta_from') as timestamp)
{%- endmacro %}

{#- The keys of `relation` (a store of versions) with a time of `times` in (tick_delta_from, as_of]: the
    keys whose version picked as of as_of (macro as_of_version) may differ from the one picked at the
    earlier build, or that appear. -#}
{% macro tick_delta_keys(relation, key, times) -%}
    select distinct {{ key }} from {{ relation }}
    where
    {%- for column in times %}
        {% if not loop.first %}or {% endif %}({{ column }} > {{ tick_delta_from() }} and {{ column }} <= {{ as_of() }})
    {%- endfor %}
{%- endmacro %}

{#- The start of the as_of's day (UTC) as a timestamp: the cutoff of models computed once a day
    (int_product_pairs). -#}
{% macro as_of_day() -%}
    cast(date_trunc('day', {{ as_of() }}) as timestamp)
{%- endmacro %}

{#- The pre-hook of a model computed once a day (an incremental table with a `cutoff` column): delete
    the rows of any other cutoff, so the model's select adds the day's rows when they are missing. A table
    from before the column existed loses all its rows (on_schema_change then adds the column). -#}
{% macro delete_other_cutoffs(relation, cutoff) -%}
    {%- if execute and is_incremental() -%}
        {%- if _has_cutoff_column(relation) and not _recompute_daily_models() -%}
            delete from {{ relation }} where cutoff is distinct from {{ cutoff }}
        {%- else -%}
            delete from {{ relation }}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}

{#- Whether such a model's table holds the rows of `cutoff` already (asked while dbt compiles the model, before
    its pre-hook runs): then the model selects nothing instead of computing them again. False outside an
    incremental run (a full refresh, the replay's compile, Spark) and with `daily_models: recompute`. -#}
{% macro has_cutoff_rows(relation, cutoff) -%}
    {%- if not (execute and is_incremental() and _has_cutoff_column(relation)) or _recompute_daily_models() -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set found = run_query("select count(*) from " ~ relation ~ " where cutoff = " ~ cutoff) -%}
    {{ return(found.columns[0].values()[0] > 0) }}
{%- endmacro %}

{#- `--vars '{daily_models: recompute}'`: compute such models again even when the day's rows are there
    (`nachfass diff` does, so that a changed rule of theirs shows in its copies of the warehouse). -#}
{% macro _recompute_daily_models() -%}
    {{ return(var('daily_models', 'keep') == 'recompute') }}
{%- endmacro %}

{% macro _has_cutoff_column(relation) -%}
    {%- set columns = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
    {{ return('cutoff' in columns) }}
{%- endmacro %}
