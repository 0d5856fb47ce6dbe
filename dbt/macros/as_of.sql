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

{#- A few costly models (meta `tick_delta_key`: stg_orders, stg_customers, int_carts) are updated from the
    table an earlier build left instead of computed whole: compiled in delta form, such a model selects only
    the keys whose rows may differ between the time its table was built (macro tick_delta_from) and as_of,
    in a column `tick_delta_key`, with their rows as of as_of beside it (null when the key has no row any
    more); the other rows are what computing it whole would give. Two users:
    * `nachfass replay` compiles the delta form with the var `tick_delta: true` (from the DuckDB variable
      `nachfass_delta_from`) and deletes and inserts those keys itself (core/replay.py);
    * a live `dbt build` on DuckDB (materialization `delta_materialized()`, incremental strategy
      `tick_delta`) compiles it whenever the table's record of its last build (macro live_delta) fits:
      built by the same model code, macros and campaign settings, as of at most `live_delta_max_gap_days`
      (2) before this as_of and not after it. Rows loaded since that build count as changed too
      (macro delta_loaded_since): a late export with older timestamps changes what the build at as_of sees.
      Otherwise the model is computed whole, as on the other engines. -#}
{% macro tick_delta() -%}
    {{ return((var('tick_delta', false) and var('as_of_source', none) == 'variable') or live_delta() is not none) }}
{%- endmacro %}

{% macro tick_delta_from() -%}
    {%- set live = live_delta() -%}
    {%- if live is not none -%}
        cast('{{ live["as_of"] }}' as timestamp)
    {%- else -%}
        cast(getvariable('nachfass_delta_from') as timestamp)
    {%- endif -%}
{%- endmacro %}

{#- The keys of `relation` (a store of versions) with a time of `times` in (tick_delta_from, as_of]: the
    keys whose version picked as of as_of (macro as_of_version) may differ from the one picked at the
    earlier build, or that appear; in a live build also those with versions loaded since it. -#}
{% macro tick_delta_keys(relation, key, times) -%}
    select distinct {{ key }} from {{ relation }}
    where
    {%- for column in times %}
        {% if not loop.first %}or {% endif %}({{ column }} > {{ tick_delta_from() }} and {{ column }} <= {{ as_of() }})
    {%- endfor %}
        {{ delta_loaded_since() }}
{%- endmacro %}

{#- In a live delta build: `or <column> > <the newest load the last build had seen>`, the rows loaded since
    (`_loaded_at` is the load's time, and grows with every load: the version stores read new rows by it
    too, macro versions_incremental). Nothing in a replay, which has every export loaded before its ticks. -#}
{% macro delta_loaded_since(column='_loaded_at') -%}
    {%- set live = live_delta() -%}
    {%- if live is not none -%}
        or {{ column }} > cast('{{ live["loaded_through"] }}' as timestamp)
    {%- endif -%}
{%- endmacro %}

{#- `incremental` on DuckDB (updated by the strategy below when live_delta fits, else replaced whole),
    `table` elsewhere. -#}
{% macro delta_materialized() -%}
    {{ return('incremental' if target is defined and target.type == 'duckdb' else 'table') }}
{%- endmacro %}

{#- The record of the table's last build, when a delta from it gives this build's rows: a dict with
    `as_of` and `loaded_through` (timestamps as text), else none. The record is the table's comment (macro
    record_delta_build), so it travels with the table: a copy of the warehouse, a table restored from a
    backup or re-created by anything else is computed whole. -#}
{% macro live_delta() -%}
    {%- if not execute or target.type != 'duckdb' or var('as_of_source', none) == 'variable'
        or var('tick_delta', false) or not ((model.config or {}).meta or {}).get('tick_delta_key')
        or not is_incremental() -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set cached = model.get('_nachfass_live_delta') -%}
    {%- if cached is not none -%}
        {{ return(cached['record']) }}
    {%- endif -%}
    {%- set record = _live_delta_record() -%}
    {%- do model.update({'_nachfass_live_delta': {'record': record}}) -%}
    {{ return(record) }}
{%- endmacro %}

{% macro _live_delta_record() -%}
    {%- set found = run_query(
        "select comment from duckdb_tables() where database_name = current_database() and schema_name = '"
        ~ this.schema ~ "' and table_name = '" ~ this.identifier ~ "'") -%}
    {%- set comment = found.columns[0].values()[0] if found and found.rows | length > 0 else none -%}
    {%- if not comment or not comment.startswith(_delta_comment_prefix()) -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set record = fromjson(comment[_delta_comment_prefix() | length:]) -%}
    {%- if record is not mapping or not record.get('as_of') or not record.get('loaded_through')
        or record.get('fingerprint') != delta_fingerprint() -%}
        {{ return(none) }}
    {%- endif -%}
    {#- a record edited by hand that is no timestamp (try_cast: null) computes the model whole -#}
    {%- set built = "try_cast('" ~ (record['as_of'] | string | replace("'", "''")) ~ "' as timestamp)" -%}
    {%- set loaded = "try_cast('" ~ (record['loaded_through'] | string | replace("'", "''")) ~ "' as timestamp)" -%}
    {%- set gap = run_query(
        "select coalesce(" ~ loaded ~ " is not null and " ~ as_of() ~ " >= " ~ built ~ " and " ~ as_of()
        ~ " <= " ~ built ~ " + interval '" ~ (var('live_delta_max_gap_days', 2) | int) ~ " day', false)") -%}
    {{ return(record if gap.columns[0].values()[0] else none) }}
{%- endmacro %}

{% macro _delta_comment_prefix() -%}
    {{ return('nachfass delta build: ') }}
{%- endmacro %}

{#- What the table's rows depend on besides the data and as_of: the model's code, every macro of the
    project, the vars its code names, the campaigns' settings (segment YAML) when its code reads them, and
    dbt's version. A change to any of them computes the model whole once. -#}
{% macro delta_fingerprint() -%}
    {%- set parts = [dbt_version, model.raw_code] -%}
    {%- for name in modules.re.findall("var\\(\\s*'([A-Za-z0-9_]+)'", model.raw_code) | unique | sort -%}
        {%- do parts.append(name ~ '=' ~ tojson(var(name, none))) -%}
    {%- endfor -%}
    {%- for name in context.keys() | sort -%}
        {%- set value = context[name] -%}
        {%- if value.macro is defined and value.macro.package_name == project_name -%}
            {%- do parts.append(name ~ ':' ~ value.macro.macro_sql) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if 'segment_settings(' in model.raw_code -%}
        {%- for node in graph.nodes.values() | sort(attribute='unique_id') -%}
            {%- if node.resource_type == 'model' and node.config.meta.get('campaign') -%}
                {%- do parts.append(node.name ~ ':' ~ tojson(node.config.meta['campaign'])) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(local_md5(parts | join('\n'))) }}
{%- endmacro %}

{#- The post-hook of such a model: record the build (as_of, the newest `_loaded_at` of `relations`, the
    fingerprint) as the table's comment, for the next build's live_delta. -#}
{% macro record_delta_build(relations) -%}
    {%- if execute and target.type == 'duckdb' -%}
        {%- set loaded = [] -%}
        {%- for relation in relations -%}
            {%- do loaded.append("(select max(_loaded_at) from " ~ relation ~ ")") -%}
        {%- endfor -%}
        {%- set found = run_query(
            "select cast(" ~ as_of() ~ " as varchar), cast(coalesce(greatest(" ~ loaded | join(', ')
            ~ "), timestamp '1900-01-01') as varchar)") -%}
        {%- set record = {
            'as_of': found.columns[0].values()[0],
            'loaded_through': found.columns[1].values()[0],
            'fingerprint': delta_fingerprint()
        } -%}
        comment on table {{ this }} is '{{ _delta_comment_prefix() ~ tojson(record) }}'
    {%- endif -%}
{%- endmacro %}

{#- dbt's incremental strategy `tick_delta`: a delta build (a column tick_delta_key) deletes those keys and
    inserts their rows; a whole build replaces the table (and the columns, should the model's have changed). -#}
{% macro get_incremental_tick_delta_sql(arg_dict) -%}
    {%- set target_relation = arg_dict['target_relation'] -%}
    {%- set temp_relation = arg_dict['temp_relation'] -%}
    {%- set key = arg_dict['unique_key'] -%}
    {%- set columns = adapter.get_columns_in_relation(temp_relation) | map(attribute='name') | map('lower') | list -%}
    {%- if 'tick_delta_key' in columns -%}
        delete from {{ target_relation }} where {{ key }} in (select tick_delta_key from {{ temp_relation }});
        insert into {{ target_relation }} by name
        select * exclude (tick_delta_key) from {{ temp_relation }} where {{ key }} is not null
    {%- else -%}
        create or replace table {{ target_relation }} as select * from {{ temp_relation }}
    {%- endif -%}
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
