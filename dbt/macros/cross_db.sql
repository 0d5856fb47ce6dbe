{#- The project's cross-database macros: each piece of SQL whose spelling differs between the engines the
    project runs on (DuckDB, the default; PostgreSQL; Spark later) and that dbt's own cross-database macros
    (dbt.datediff, dbt.dateadd, dbt.cast …) do not cover. `duckdb__` keeps DuckDB's fastest form,
    `postgres__` is PostgreSQL's; `default__` stops the compilation with the macro's name on an engine
    that has no implementation yet (where no standard spelling exists): a `spark__` implementation goes
    next to the others. Where no adapter exists (sqlfluff templates the models with
    plain Jinja, dialect duckdb) the DuckDB form is used. The results are identical on every engine
    (tests/test_dbt_engines.py compares them row by row). -#}

{#- ---- Engine preconditions ---------------------------------------------------------------------------------
    Run before every dbt command (on-run-start). PostgreSQL must compare strings by bytes, as DuckDB does
    (ORDER BY, min/max, ranks and tie-breaks on ids depend on it), so the database must use the "C"
    collation. The session time zone does not matter: every timestamp is UTC without time zone and every
    conversion names its zone. -#}
{% macro check_engine() -%}
    {{ return(adapter.dispatch('check_engine', 'nachfass')()) }}
{%- endmacro %}

{% macro default__check_engine() -%}
    select 1
{%- endmacro %}

{% macro postgres__check_engine() -%}
    {%- if execute -%}
        {%- set row = run_query(
            "select datcollate, datlocprovider from pg_database where datname = current_database()"
        ).rows[0] -%}
        {%- if row[1] != 'c' or row[0] not in ('C', 'POSIX', 'C.UTF-8', 'C.utf8') -%}
            {{ exceptions.raise_compiler_error(
                "database " ~ target.dbname ~ " sorts text "
                ~ ("with the ICU locale provider" if row[1] != 'c' else "by collation " ~ row[0])
                ~ ": the models need the \"C\" collation (byte order, as on DuckDB). Create it with: "
                ~ "create database ... template template0 locale_provider libc lc_collate 'C' lc_ctype 'C'") }}
        {%- endif -%}
    {%- endif -%}
    select 1
{%- endmacro %}

{#- The compiler error of a macro that has no implementation for the target's engine. -#}
{% macro unsupported_on_engine(name) -%}
    {{ exceptions.raise_compiler_error(
        "nachfass." ~ name ~ " has no implementation for " ~ target.type ~ ": add " ~ target.type ~ "__" ~ name
        ~ " to dbt/macros/cross_db.sql") }}
{%- endmacro %}

{#- ---- Types ---------------------------------------------------------------------------------------------- -#}

{#- An 8-byte float. dbt.type_float() is FLOAT, which DuckDB reads as a 4-byte float. -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'nachfass')() if adapter is defined else duckdb__type_double()) }}
{%- endmacro %}

{% macro default__type_double() -%}double precision{%- endmacro %}

{% macro duckdb__type_double() -%}double{%- endmacro %}

{#- ---- Picking rows ------------------------------------------------------------------------------------------ -#}

{#- Every column of the first row per partition by the given order (a total order: ties would make the winner
    engine-dependent). DuckDB: qualify; PostgreSQL: distinct on, its fastest form of the same. -#}
{% macro first_row_per(relation, partition_by, order_by) -%}
    {{ return(adapter.dispatch('first_row_per', 'nachfass')(relation, partition_by, order_by) if adapter is defined else duckdb__first_row_per(relation, partition_by, order_by)) }}
{%- endmacro %}

{% macro default__first_row_per(relation, partition_by, order_by) -%}
    {{ unsupported_on_engine('first_row_per') }}
{%- endmacro %}

{% macro postgres__first_row_per(relation, partition_by, order_by) -%}
    select distinct on ({{ partition_by }}) *
    from {{ relation }}
    order by {{ partition_by }}, {{ order_by }}
{%- endmacro %}

{% macro duckdb__first_row_per(relation, partition_by, order_by) -%}
    select *
    from {{ relation }}
    qualify row_number() over (partition by {{ partition_by }} order by {{ order_by }}) = 1
{%- endmacro %}

{#- arg_max / arg_min: the value of `arg` in the row with the largest / smallest `val` of the group, rows
    with a null arg or val left out (DuckDB's semantics); `where` restricts the rows like a FILTER clause.
    Ties in `val` go to the largest (arg_max) / smallest (arg_min) `arg`, on every engine: DuckDB's own
    arg_max picks any of the tied rows. -#}
{% macro arg_max(arg, val, where=none) -%}
    {{ return(adapter.dispatch('arg_extreme', 'nachfass')(arg, val, 'desc', where) if adapter is defined else duckdb__arg_extreme(arg, val, 'desc', where)) }}
{%- endmacro %}

{% macro arg_min(arg, val, where=none) -%}
    {{ return(adapter.dispatch('arg_extreme', 'nachfass')(arg, val, 'asc', where) if adapter is defined else duckdb__arg_extreme(arg, val, 'asc', where)) }}
{%- endmacro %}

{% macro default__arg_extreme(arg, val, direction, where) -%}
    {{ unsupported_on_engine('arg_extreme') }}
{%- endmacro %}

{% macro postgres__arg_extreme(arg, val, direction, where) -%}
    (array_agg({{ arg }} order by {{ val }} {{ direction }}, {{ arg }} {{ direction }}) filter (
        where {{ arg }} is not null and {{ val }} is not null{% if where %} and ({{ where }}){% endif %}
    ))[1]
{%- endmacro %}

{% macro duckdb__arg_extreme(arg, val, direction, where) -%}
    {{ 'arg_max' if direction == 'desc' else 'arg_min' }}({{ arg }}, {'val': {{ val }}, 'arg': {{ arg }}}) filter (
        where {{ arg }} is not null and {{ val }} is not null{% if where %} and ({{ where }}){% endif %}
    )
{%- endmacro %}

{#- Every row of `relation` with `name`: the median of `value` over the rows of the same partition up to and
    including this one (ordered by `order_columns`, a list that orders the rows totally; `key` is unique).
    PostgreSQL has no ordered-set aggregate as a window function: each row joins the earlier rows of its
    partition and percentile_cont aggregates them (a hash join per partition, not a scan per row). Both
    interpolate between the two middle values and leave nulls out. -#}
{% macro with_running_median(relation, value, partition_by, order_columns, key, name) -%}
    {{ return(adapter.dispatch('with_running_median', 'nachfass')(relation, value, partition_by, order_columns, key, name) if adapter is defined else duckdb__with_running_median(relation, value, partition_by, order_columns, key, name)) }}
{%- endmacro %}

{% macro default__with_running_median(relation, value, partition_by, order_columns, key, name) -%}
    {{ unsupported_on_engine('with_running_median') }}
{%- endmacro %}

{% macro postgres__with_running_median(relation, value, partition_by, order_columns, key, name) -%}
    select {{ relation }}.*, medians.{{ name }}
    from {{ relation }}
    inner join (
        select
            this_row.{{ key }},
            percentile_cont(0.5) within group (order by earlier.{{ value }}) as {{ name }}
        from {{ relation }} as this_row
        inner join {{ relation }} as earlier
            on earlier.{{ partition_by }} = this_row.{{ partition_by }}
            and (earlier.{{ order_columns | join(', earlier.') }})
            <= (this_row.{{ order_columns | join(', this_row.') }})
        group by this_row.{{ key }}
    ) as medians on {{ relation }}.{{ key }} = medians.{{ key }}
{%- endmacro %}

{% macro duckdb__with_running_median(relation, value, partition_by, order_columns, key, name) -%}
    select
        *,
        median({{ value }}) over (
            partition by {{ partition_by }} order by {{ order_columns | join(', ') }}
            rows between unbounded preceding and current row
        ) as {{ name }}
    from {{ relation }}
{%- endmacro %}

{#- ---- Hashes ------------------------------------------------------------------------------------------------ -#}

{#- SHA-256 of text (UTF-8) as 64 lower-case hex digits. -#}
{% macro sha256_hex(expr) -%}
    {{ return(adapter.dispatch('sha256_hex', 'nachfass')(expr) if adapter is defined else duckdb__sha256_hex(expr)) }}
{%- endmacro %}

{% macro default__sha256_hex(expr) -%}
    {{ unsupported_on_engine('sha256_hex') }}
{%- endmacro %}

{% macro postgres__sha256_hex(expr) -%}
    encode(sha256(convert_to({{ expr }}, 'UTF8')), 'hex')
{%- endmacro %}

{% macro duckdb__sha256_hex(expr) -%}
    sha256({{ expr }})
{%- endmacro %}

{#- The unsigned integer value of 1 to 15 hex digits (text), as bigint. -#}
{% macro hex_to_bigint(hex_digits) -%}
    {{ return(adapter.dispatch('hex_to_bigint', 'nachfass')(hex_digits) if adapter is defined else duckdb__hex_to_bigint(hex_digits)) }}
{%- endmacro %}

{% macro default__hex_to_bigint(hex_digits) -%}
    {{ unsupported_on_engine('hex_to_bigint') }}
{%- endmacro %}

{% macro postgres__hex_to_bigint(hex_digits) -%}
    cast(cast('x' || lpad({{ hex_digits }}, 16, '0') as bit(64)) as bigint)
{%- endmacro %}

{% macro duckdb__hex_to_bigint(hex_digits) -%}
    cast(('0x' || {{ hex_digits }}) as bigint)
{%- endmacro %}

{#- ---- JSON and lists ------------------------------------------------------------------------------------------
    The payloads the mails carry are JSON objects built from records and ordered lists of records. DuckDB
    builds them as structs and lists (to_json at the end); PostgreSQL as `json` values (json_build_object,
    json_agg), never jsonb, so the keys keep the order the model writes. A list of records is a DuckDB list
    and a PostgreSQL json array: list_head takes its first n, to_json turns either into JSON. -#}

{#- A record from a mapping of key → SQL expression, keys in the mapping's order. -#}
{% macro record(fields) -%}
    {{ return(adapter.dispatch('record', 'nachfass')(fields) if adapter is defined else duckdb__record(fields)) }}
{%- endmacro %}

{% macro default__record(fields) -%}
    {{ unsupported_on_engine('record') }}
{%- endmacro %}

{% macro postgres__record(fields) -%}
    json_build_object(
        {%- for key, value in fields.items() %}
        '{{ key }}', {{ value }}{% if not loop.last %},{% endif %}
        {%- endfor %}
    )
{%- endmacro %}

{% macro duckdb__record(fields) -%}
    {
        {%- for key, value in fields.items() %}
        '{{ key }}': {{ value }}{% if not loop.last %},{% endif %}
        {%- endfor %}
    }
{%- endmacro %}

{#- A timestamp inside a record: DuckDB's to_json writes it as `2026-11-24 10:00:00`; PostgreSQL's json would
    write `2026-11-24T10:00:00`, so there it becomes the same text first. -#}
{% macro record_timestamp(expr) -%}
    {{ return(adapter.dispatch('record_timestamp', 'nachfass')(expr) if adapter is defined else duckdb__record_timestamp(expr)) }}
{%- endmacro %}

{% macro default__record_timestamp(expr) -%}
    {{ unsupported_on_engine('record_timestamp') }}
{%- endmacro %}

{% macro postgres__record_timestamp(expr) -%}
    cast({{ expr }} as text)
{%- endmacro %}

{% macro duckdb__record_timestamp(expr) -%}
    {{ expr }}
{%- endmacro %}

{#- The records of a group as a list ordered by `order_by` (unique within the group). With
    `record_leads_with_order`, the record's own leading fields are that order (DuckDB then sorts the records
    themselves, the cheapest form); otherwise DuckDB sorts (key, record) pairs. Both are much cheaper on
    DuckDB than an ordered aggregate. -#}
{% macro ordered_list(item, order_by, record_leads_with_order=false) -%}
    {{ return(adapter.dispatch('ordered_list', 'nachfass')(item, order_by, record_leads_with_order) if adapter is defined else duckdb__ordered_list(item, order_by, record_leads_with_order)) }}
{%- endmacro %}

{% macro default__ordered_list(item, order_by, record_leads_with_order) -%}
    {{ unsupported_on_engine('ordered_list') }}
{%- endmacro %}

{% macro postgres__ordered_list(item, order_by, record_leads_with_order) -%}
    json_agg({{ item }} order by {{ order_by }})
{%- endmacro %}

{% macro duckdb__ordered_list(item, order_by, record_leads_with_order) -%}
    {%- if record_leads_with_order -%}
    list_sort(list({{ item }}))
    {%- else -%}
    list_transform(list_sort(list({'sort_key': {{ order_by }}, 'item': {{ item }}})), lambda entry: entry.item)
    {%- endif -%}
{%- endmacro %}

{#- An empty list of records (e.g. coalesce(recommendations[1:4], empty_record_list())). -#}
{% macro empty_record_list() -%}
    {{ return(adapter.dispatch('empty_record_list', 'nachfass')() if adapter is defined else duckdb__empty_record_list()) }}
{%- endmacro %}

{% macro default__empty_record_list() -%}
    {{ unsupported_on_engine('empty_record_list') }}
{%- endmacro %}

{% macro postgres__empty_record_list() -%}
    cast('[]' as json)
{%- endmacro %}

{#- The first n records of a list of records (all of a shorter one; null stays null). -#}
{% macro list_head(expr, n) -%}
    {{ return(adapter.dispatch('list_head', 'nachfass')(expr, n) if adapter is defined else duckdb__list_head(expr, n)) }}
{%- endmacro %}

{% macro default__list_head(expr, n) -%}
    {{ unsupported_on_engine('list_head') }}
{%- endmacro %}

{% macro postgres__list_head(expr, n) -%}
    (
        select json_agg(head.element order by head.position)
        from json_array_elements({{ expr }}) with ordinality as head (element, position)
        where head.position <= {{ n }}
    )
{%- endmacro %}

{% macro duckdb__list_head(expr, n) -%}
    {{ expr }}[1:{{ n }}]
{%- endmacro %}

{% macro duckdb__empty_record_list() -%}
    []
{%- endmacro %}

{#- One row per element of a JSON array of objects, as `alias` with the given text columns: a from-clause
    item after a comma (it may read the tables before it); columns are read as alias.column. -#}
{% macro json_array_rows(expr, alias, columns) -%}
    {{ return(adapter.dispatch('json_array_rows', 'nachfass')(expr, alias, columns) if adapter is defined else duckdb__json_array_rows(expr, alias, columns)) }}
{%- endmacro %}

{% macro default__json_array_rows(expr, alias, columns) -%}
    {{ unsupported_on_engine('json_array_rows') }}
{%- endmacro %}

{% macro postgres__json_array_rows(expr, alias, columns) -%}
    json_to_recordset({{ expr }}) as {{ alias }} ({{ columns | join(' text, ') }} text)
{%- endmacro %}

{% macro duckdb__json_array_rows(expr, alias, columns) -%}
    unnest(from_json({{ expr }}, '[{
        {%- for column in columns %}"{{ column }}": "VARCHAR"{% if not loop.last %}, {% endif %}{% endfor -%}
    }]')) as {{ alias }}_rows ({{ alias }})
{%- endmacro %}

{#- The text value of a top-level key of a JSON object held as text or json (null when absent). -#}
{% macro json_text(expr, key) -%}
    {{ return(adapter.dispatch('json_text', 'nachfass')(expr, key) if adapter is defined else duckdb__json_text(expr, key)) }}
{%- endmacro %}

{% macro default__json_text(expr, key) -%}
    {{ unsupported_on_engine('json_text') }}
{%- endmacro %}

{% macro postgres__json_text(expr, key) -%}
    (cast({{ expr }} as json) ->> '{{ key }}')
{%- endmacro %}

{% macro duckdb__json_text(expr, key) -%}
    json_extract_string({{ expr }}, '$.{{ key }}')
{%- endmacro %}

{#- The length of the JSON array under a top-level key (0 when the key is absent). -#}
{% macro json_array_length_at(expr, key) -%}
    {{ return(adapter.dispatch('json_array_length_at', 'nachfass')(expr, key) if adapter is defined else duckdb__json_array_length_at(expr, key)) }}
{%- endmacro %}

{% macro default__json_array_length_at(expr, key) -%}
    {{ unsupported_on_engine('json_array_length_at') }}
{%- endmacro %}

{% macro postgres__json_array_length_at(expr, key) -%}
    json_array_length(coalesce(cast({{ expr }} as json) -> '{{ key }}', cast('[]' as json)))
{%- endmacro %}

{% macro duckdb__json_array_length_at(expr, key) -%}
    json_array_length(coalesce(json_extract({{ expr }}, '$.{{ key }}'), '[]'))
{%- endmacro %}

{#- ---- Numbers ------------------------------------------------------------------------------------------------ -#}

{#- Text as a double, null where it is not a number. -#}
{% macro try_cast_double(expr) -%}
    {{ return(adapter.dispatch('try_cast_double', 'nachfass')(expr) if adapter is defined else duckdb__try_cast_double(expr)) }}
{%- endmacro %}

{% macro default__try_cast_double(expr) -%}
    {{ unsupported_on_engine('try_cast_double') }}
{%- endmacro %}

{% macro postgres__try_cast_double(expr) -%}
    (case when trim({{ expr }}) ~ '^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$'
        then cast({{ expr }} as double precision) end)
{%- endmacro %}

{% macro duckdb__try_cast_double(expr) -%}
    try_cast({{ expr }} as double)
{%- endmacro %}

{#- exp(x), 0 where the result is below the smallest double (DuckDB returns 0; PostgreSQL raises an
    underflow error). -#}
{% macro safe_exp(expr) -%}
    {{ return(adapter.dispatch('safe_exp', 'nachfass')(expr) if adapter is defined else duckdb__safe_exp(expr)) }}
{%- endmacro %}

{% macro default__safe_exp(expr) -%}
    {{ unsupported_on_engine('safe_exp') }}
{%- endmacro %}

{% macro postgres__safe_exp(expr) -%}
    (case when ({{ expr }}) < -745 then cast(0 as double precision) else exp({{ expr }}) end)
{%- endmacro %}

{% macro duckdb__safe_exp(expr) -%}
    exp({{ expr }})
{%- endmacro %}

{#- A double rounded to `digits` decimals, the same double on every engine: x · 10^digits rounded half away
    from zero (C round), divided back, all in doubles. DuckDB's round(x, digits) rounds the exact binary value
    (0.1421875 is stored as 0.14218749999…, so it gives 0.142187) and PostgreSQL's numeric round a 15-digit
    decimal (0.142188); neither can be spelled on the other engine. -#}
{% macro round_double(expr, digits) -%}
    {{ return(adapter.dispatch('round_double', 'nachfass')(expr, digits) if adapter is defined else duckdb__round_double(expr, digits)) }}
{%- endmacro %}

{#- PostgreSQL's round(double) rounds half to even: C round spelled out (y - trunc(y) is exact). -#}
{% macro default__round_double(expr, digits) -%}
    {{ unsupported_on_engine('round_double') }}
{%- endmacro %}

{% macro postgres__round_double(expr, digits) -%}
    {%- set scaled = '((' ~ expr ~ ') * cast(1e' ~ digits ~ ' as double precision))' -%}
    ((trunc({{ scaled }}) + case when abs({{ scaled }} - trunc({{ scaled }})) >= 0.5 then sign({{ scaled }}) else 0 end)
        / cast(1e{{ digits }} as double precision))
{%- endmacro %}

{% macro duckdb__round_double(expr, digits) -%}
    (round(({{ expr }}) * cast(1e{{ digits }} as double)) / cast(1e{{ digits }} as double))
{%- endmacro %}

{#- Whether two lists of text (arrays) have an element in common (null when either is null). -#}
{% macro lists_overlap(left, right) -%}
    {{ return(adapter.dispatch('lists_overlap', 'nachfass')(left, right) if adapter is defined else duckdb__lists_overlap(left, right)) }}
{%- endmacro %}

{% macro default__lists_overlap(left, right) -%}
    {{ unsupported_on_engine('lists_overlap') }}
{%- endmacro %}

{% macro postgres__lists_overlap(left, right) -%}
    (cast({{ left }} as text[]) && cast({{ right }} as text[]))
{%- endmacro %}

{% macro duckdb__lists_overlap(left, right) -%}
    list_has_any({{ left }}, {{ right }})
{%- endmacro %}

{#- ---- Dates: dbt's cross-database macros (dbt.dateadd, dbt.datediff), reachable where sqlfluff templates the
    models without dbt (the DuckDB form then). -#}
{% macro timestamp_add(datepart, interval, from_timestamp) -%}
    {%- if dbt is defined -%}
        {{ return(dbt.dateadd(datepart, interval, from_timestamp)) }}
    {%- else -%}
        {{ return('(' ~ from_timestamp ~ ' + cast(' ~ interval ~ ' as bigint) * interval 1 ' ~ datepart ~ ')') }}
    {%- endif -%}
{%- endmacro %}

{% macro timestamp_diff(first_timestamp, second_timestamp, datepart) -%}
    {%- if dbt is defined -%}
        {{ return(dbt.datediff(first_timestamp, second_timestamp, datepart)) }}
    {%- else -%}
        {{ return("date_diff('" ~ datepart ~ "', " ~ first_timestamp ~ ", " ~ second_timestamp ~ ")") }}
    {%- endif -%}
{%- endmacro %}
