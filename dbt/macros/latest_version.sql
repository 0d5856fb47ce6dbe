{#- Newest version of each key: by updated_at where the table has it, else by load order
    (file loaded later wins, later row in the same file wins). Raw tables are append-only. -#}
{% macro latest_version(relation, key_columns, updated_at=none) -%}
    {{ first_row_per(
        relation,
        key_columns | join(', '),
        (updated_at ~ ' desc nulls last, ' if updated_at else '') ~ '_loaded_at desc, _file desc, _row desc'
    ) }}
{%- endmacro %}

{#- latest_version of the raw rows of `relation` that `where` selects (an append-only export table; one key
    column), numbering only the versions of keys loaded more than once. The ingest quarantines every repeat
    of a key within a file ("duplicate key in file", nachfass/core/ingest.py), so the rows of one load (one
    `_file` loaded at one `_loaded_at`) hold one version of each key. The largest load's rows are taken as
    they are where no other load has their key; the other loads' rows and the largest load's rows they
    contest go through latest_version. A shop's history usually comes as one large file and a few small
    ones: at 1 M customers numbering all 31 M session events by key was half of stg_session_events' full
    build (docs/benchmarks.md). The largest load is asked of the warehouse when the model runs; while dbt
    only parses, and when nothing is selected, this is latest_version itself. -#}
{% macro latest_version_of_loads(relation, key_column, where='true') -%}
    {%- set largest = none -%}
    {%- if execute -%}
        {%- set loads -%}
            select _file, cast(_loaded_at as {{ type_text() }}) as loaded_at, count(*) as n_rows
            from {{ relation }}
            where {{ where }}
            group by _file, _loaded_at
            order by n_rows desc, loaded_at desc, _file desc
            limit 1
        {%- endset -%}
        {%- set rows = run_query(loads).rows -%}
        {%- if rows | length > 0 -%}
            {%- set largest = rows[0] -%}
        {%- endif -%}
    {%- endif -%}
    {%- if largest is none -%}
    {{ latest_version('(select * from ' ~ relation ~ ' where ' ~ where ~ ') as new_rows', [key_column]) }}
    {%- else -%}
    {%- set file = "'" ~ (largest[0] | replace("'", "''")) ~ "'" -%}
    {%- set loaded_at = "cast('" ~ largest[1] ~ "' as timestamp)" -%}
    {#- the two conditions partition the rows (null load columns count as another load) -#}
    {%- set in_largest = '(_file = ' ~ file ~ ' and _loaded_at = ' ~ loaded_at ~ ')' -%}
    {%- set not_in_largest = '(_file is null or _loaded_at is null or _file <> ' ~ file ~ ' or _loaded_at <> '
        ~ loaded_at ~ ')' -%}
    {%- set contested -%}
        exists (
            select 1 from {{ relation }} as other_loads
            where {{ where }} and {{ not_in_largest }} and other_loads.{{ key_column }} = largest_load.{{ key_column }}
        )
    {%- endset -%}
    select * from {{ relation }} as largest_load
    where {{ where }} and {{ in_largest }} and not {{ contested }}
    union all
    select * from (
        {{ latest_version(
            '(select * from ' ~ relation ~ ' where ' ~ where ~ ' and ' ~ not_in_largest
            ~ ' union all select * from ' ~ relation ~ ' as largest_load where ' ~ where ~ ' and ' ~ in_largest
            ~ ' and ' ~ contested ~ ') as contested_rows',
            [key_column]
        ) }}
    ) as newest_of_contested
    {%- endif -%}
{%- endmacro %}

{#- latest_version for an incremental staging table (unique_key = key_columns, delete+insert). On an
    incremental run only the keys with a version loaded since the last run (raw `_loaded_at` above the
    table's newest `_loaded_at`) are recomputed, from ALL their raw versions, so the winner is the same as
    latest_version over the whole raw table; the other keys keep their rows. The first key column selects
    the affected keys (a superset for composite keys: all lines of an order, same winners). -#}
{% macro latest_version_incremental(relation, key_columns, updated_at=none) -%}
    {%- if is_incremental() -%}
    {%- set affected -%}
    (
        select * from {{ relation }}
        where {{ key_columns[0] }} in (
            select {{ key_columns[0] }}
            from {{ relation }}
            where _loaded_at > (select coalesce(max(_loaded_at), timestamp '1900-01-01') from {{ this }})
        )
    ) as affected
    {%- endset %}
    {{ first_row_per(
        affected,
        key_columns | join(', '),
        (updated_at ~ ' desc nulls last, ' if updated_at else '') ~ '_loaded_at desc, _file desc, _row desc'
    ) }}
    {%- else -%}
    {{ latest_version(relation, key_columns, updated_at) }}
    {%- endif -%}
{%- endmacro %}

{#- Every version of each key, one row per (key, version_at): the staging store of a versioned export
    table (customers, orders, products, support tickets). `version_at` is the moment the version became
    true (updated_at, else the row's own creation time); two rows of one key with the same version_at are
    the same version, and the one loaded last wins (a re-export corrects it). Incremental: only rows loaded
    since the last run are read; delete+insert on (key, version_at) replaces re-exported versions.
    Keeping every version, not only the newest, is what lets a run see the state *at its as_of*. -#}
{% macro versions_incremental(relation, key_columns, version_at) -%}
    {%- set versions -%}
    (
        select
            *,
            {{ version_at }} as version_at
        from {{ relation }}
        {%- if is_incremental() %}
        where _loaded_at > (select coalesce(max(_loaded_at), timestamp '1900-01-01') from {{ this }})
        {%- endif %}
    ) as versions
    {%- endset %}
    {{ first_row_per(versions, key_columns | join(', ') ~ ', version_at', '_loaded_at desc, _file desc, _row desc') }}
{%- endmacro %}

{#- The version of each key that was true at the run's as_of: the newest with version_at <= as_of. Data
    stamped after as_of waits for a later run. A key whose every version is stamped later (a snapshot
    export replayed into an earlier period) falls back to its earliest version; `is_later_version` says
    so, and the staging model masks the facts that version cannot have known at as_of. -#}
{% macro as_of_version(relation, key_columns) -%}
    {%- set versions -%}
    (
        select
            *,
            version_at > {{ as_of() }} as is_later_version
        from {{ relation }}
    ) as versions
    {%- endset %}
    {{ first_row_per(
        versions,
        key_columns | join(', '),
        '(version_at <= ' ~ as_of() ~ ') desc, case when version_at <= ' ~ as_of()
        ~ ' then version_at end desc nulls last, version_at'
    ) }}
{%- endmacro %}
