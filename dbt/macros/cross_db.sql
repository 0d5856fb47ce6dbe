{#- The project's cross-database macros: each piece of SQL whose spelling differs between the engines the
    project runs on (DuckDB, the default; PostgreSQL; Apache Spark) and that dbt's own cross-database macros
    (dbt.datediff, dbt.dateadd, dbt.cast …) do not cover. `duckdb__` keeps DuckDB's fastest form,
    `postgres__` is PostgreSQL's; `default__` stops the compilation with the macro's name on an engine
    that has no implementation (where no standard spelling exists). Where no adapter exists (sqlfluff templates the models with
    plain Jinja, dialect duckdb) the DuckDB form is used. The results are identical on every engine
    (tests/test_dbt_engines.py and tests/test_dbt_spark.py compare them row by row). Spark runs with its
    session time zone at UTC (dbt/profiles.yml), so its `timestamp` (with local time zone) holds the same
    UTC wall-clock times as the other engines' timestamps without time zone. -#}

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

{#- Whether the target is Spark: its tables are parquet files without DELETE or MERGE, so the incremental
    staging models (delete+insert) are rebuilt as tables there. False where sqlfluff templates without dbt. -#}
{% macro engine_is_spark() -%}
    {{ return(target is defined and target.type == 'spark') }}
{%- endmacro %}

{#- ---- Types ---------------------------------------------------------------------------------------------- -#}

{#- An 8-byte float. dbt.type_float() is FLOAT, which DuckDB reads as a 4-byte float. -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'nachfass')() if adapter is defined else duckdb__type_double()) }}
{%- endmacro %}

{% macro default__type_double() -%}double precision{%- endmacro %}

{% macro duckdb__type_double() -%}double{%- endmacro %}

{% macro spark__type_double() -%}double{%- endmacro %}

{#- Text. Spark has no `varchar` without a length. -#}
{% macro type_text() -%}
    {{ return(adapter.dispatch('type_text', 'nachfass')() if adapter is defined else duckdb__type_text()) }}
{%- endmacro %}

{% macro default__type_text() -%}
    {{ unsupported_on_engine('type_text') }}
{%- endmacro %}

{% macro duckdb__type_text() -%}varchar{%- endmacro %}

{% macro postgres__type_text() -%}
    {{ duckdb__type_text() }}
{%- endmacro %}

{% macro spark__type_text() -%}string{%- endmacro %}

{#- A list of text constants (a text array; empty for no values). -#}
{% macro text_list(values) -%}
    {{ return(adapter.dispatch('text_list', 'nachfass')(values) if adapter is defined else duckdb__text_list(values)) }}
{%- endmacro %}

{% macro default__text_list(values) -%}
    {{ unsupported_on_engine('text_list') }}
{%- endmacro %}

{% macro duckdb__text_list(values) -%}
    cast({% if values %}array['{{ values | join("', '") }}']{% else %}array[]{% endif %} as text[])
{%- endmacro %}

{% macro postgres__text_list(values) -%}
    {{ duckdb__text_list(values) }}
{%- endmacro %}

{% macro spark__text_list(values) -%}
    cast(array({% if values %}'{{ values | join("', '") }}'{% endif %}) as array<string>)
{%- endmacro %}

{#- The sorted list of a group's non-null text values (an aggregate). -#}
{% macro sorted_text_list(expr) -%}
    {{ return(adapter.dispatch('sorted_text_list', 'nachfass')(expr) if adapter is defined else duckdb__sorted_text_list(expr)) }}
{%- endmacro %}

{% macro default__sorted_text_list(expr) -%}
    {{ unsupported_on_engine('sorted_text_list') }}
{%- endmacro %}

{% macro duckdb__sorted_text_list(expr) -%}
    array_agg({{ expr }} order by {{ expr }})
{%- endmacro %}

{% macro postgres__sorted_text_list(expr) -%}
    {{ duckdb__sorted_text_list(expr) }}
{%- endmacro %}

{#- Spark: collect_list leaves nulls out, as the model's callers need (their values are never null). -#}
{% macro spark__sorted_text_list(expr) -%}
    array_sort(collect_list({{ expr }}))
{%- endmacro %}

{#- The optimiser hint of a CTE that is read several times but should be inlined (DuckDB and PostgreSQL:
    `not materialized`; Spark always inlines CTEs and has no hint). -#}
{% macro cte_not_materialized() -%}
    {{ return(adapter.dispatch('cte_not_materialized', 'nachfass')() if adapter is defined else duckdb__cte_not_materialized()) }}
{%- endmacro %}

{% macro default__cte_not_materialized() -%}
    {{ unsupported_on_engine('cte_not_materialized') }}
{%- endmacro %}

{% macro duckdb__cte_not_materialized() -%}not materialized{%- endmacro %}

{% macro postgres__cte_not_materialized() -%}
    {{ duckdb__cte_not_materialized() }}
{%- endmacro %}

{% macro spark__cte_not_materialized() -%}{%- endmacro %}

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

{% macro spark__first_row_per(relation, partition_by, order_by) -%}
    {{ duckdb__first_row_per(relation, partition_by, order_by) }}
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

{% macro spark__arg_extreme(arg, val, direction, where) -%}
    {{ 'max_by' if direction == 'desc' else 'min_by' }}({{ arg }}, named_struct('val', {{ val }}, 'arg', {{ arg }})) filter (
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

{#- Spark: median is no window function, percentile(x, 0.5) is, and interpolates the same way. -#}
{% macro spark__with_running_median(relation, value, partition_by, order_columns, key, name) -%}
    select
        *,
        percentile({{ value }}, 0.5) over (
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

{% macro spark__sha256_hex(expr) -%}
    sha2({{ expr }}, 256)
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

{#- Spark: casting '0x…' text to bigint gives NULL (no error: dbt-spark turns ANSI mode off), so every
    bucket would be NULL; conv() parses the hex digits. -#}
{% macro spark__hex_to_bigint(hex_digits) -%}
    cast(conv({{ hex_digits }}, 16, 10) as bigint)
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

{#- Spark: a struct; to_json writes null fields too (spark.sql.jsonGenerator.ignoreNullFields=false in the
    profile, as DuckDB and PostgreSQL do). -#}
{% macro spark__record(fields) -%}
    named_struct(
        {%- for key, value in fields.items() %}
        '{{ key }}', {{ value }}{% if not loop.last %},{% endif %}
        {%- endfor %}
    )
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

{#- Spark's to_json writes `2026-11-24T10:00:00.000Z`; its text form is DuckDB's. -#}
{% macro spark__record_timestamp(expr) -%}
    cast({{ expr }} as string)
{%- endmacro %}

{#- A JSON value (json on DuckDB and PostgreSQL, JSON text on Spark) to put into a record as JSON, not as a
    string: Spark nests it as a variant (parse_json), whose objects write their keys in sorted order. -#}
{% macro record_json(expr) -%}
    {{ return(adapter.dispatch('record_json', 'nachfass')(expr) if adapter is defined else duckdb__record_json(expr)) }}
{%- endmacro %}

{% macro default__record_json(expr) -%}
    {{ unsupported_on_engine('record_json') }}
{%- endmacro %}

{% macro duckdb__record_json(expr) -%}
    {{ expr }}
{%- endmacro %}

{% macro postgres__record_json(expr) -%}
    {{ expr }}
{%- endmacro %}

{% macro spark__record_json(expr) -%}
    parse_json({{ expr }})
{%- endmacro %}

{#- JSON text (or null) to put into a record as JSON, not as a string: `[]` when null. On DuckDB and PostgreSQL
    the value is json already; Spark keeps JSON as text and nests it as a variant. -#}
{% macro record_json_list(expr) -%}
    {{ return(adapter.dispatch('record_json_list', 'nachfass')(expr) if adapter is defined else duckdb__record_json_list(expr)) }}
{%- endmacro %}

{% macro default__record_json_list(expr) -%}
    {{ unsupported_on_engine('record_json_list') }}
{%- endmacro %}

{% macro duckdb__record_json_list(expr) -%}
    coalesce({{ expr }}, cast('[]' as json))
{%- endmacro %}

{% macro postgres__record_json_list(expr) -%}
    {{ duckdb__record_json_list(expr) }}
{%- endmacro %}

{% macro spark__record_json_list(expr) -%}
    parse_json(coalesce({{ expr }}, '[]'))
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

{#- Spark: array_sort orders structs field by field, as DuckDB's list_sort does. -#}
{% macro spark__ordered_list(item, order_by, record_leads_with_order) -%}
    {%- if record_leads_with_order -%}
    array_sort(collect_list({{ item }}))
    {%- else -%}
    transform(array_sort(collect_list(named_struct('sort_key', {{ order_by }}, 'item', {{ item }}))), entry -> entry.item)
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

{% macro spark__list_head(expr, n) -%}
    slice({{ expr }}, 1, {{ n }})
{%- endmacro %}

{% macro duckdb__empty_record_list() -%}
    []
{%- endmacro %}

{% macro spark__empty_record_list() -%}
    array()
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

{% macro spark__json_array_rows(expr, alias, columns) -%}
    lateral explode(from_json({{ expr }}, 'array<struct<
        {%- for column in columns %}{{ column }}:string{% if not loop.last %},{% endif %}{% endfor -%}
    >>')) as {{ alias }}_rows ({{ alias }})
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

{% macro spark__json_text(expr, key) -%}
    get_json_object({{ expr }}, '$.{{ key }}')
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

{% macro spark__json_array_length_at(expr, key) -%}
    json_array_length(coalesce(get_json_object({{ expr }}, '$.{{ key }}'), '[]'))
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

{% macro spark__try_cast_double(expr) -%}
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

{% macro spark__safe_exp(expr) -%}
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

{#- Spark's round(double, 0) rounds half up (away from zero), like C round. -#}
{% macro spark__round_double(expr, digits) -%}
    (round(({{ expr }}) * cast(1e{{ digits }} as double), 0) / cast(1e{{ digits }} as double))
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

{% macro spark__lists_overlap(left, right) -%}
    arrays_overlap({{ left }}, {{ right }})
{%- endmacro %}

{#- ---- Time zones: timestamps are UTC without time zone on every engine -------------------------------------- -#}

{#- A UTC timestamp from an ISO 8601 text constant with an offset (e.g. 2026-11-24T10:00:00Z). -#}
{% macro utc_timestamp_literal(value) -%}
    {{ return(adapter.dispatch('utc_timestamp_literal', 'nachfass')(value) if adapter is defined else duckdb__utc_timestamp_literal(value)) }}
{%- endmacro %}

{% macro default__utc_timestamp_literal(value) -%}
    {{ unsupported_on_engine('utc_timestamp_literal') }}
{%- endmacro %}

{% macro duckdb__utc_timestamp_literal(value) -%}
    cast(timezone('UTC', cast('{{ value }}' as timestamptz)) as timestamp)
{%- endmacro %}

{% macro postgres__utc_timestamp_literal(value) -%}
    {{ duckdb__utc_timestamp_literal(value) }}
{%- endmacro %}

{#- Spark has no timestamptz: the text's offset is applied and the result shown in the session zone, UTC. -#}
{% macro spark__utc_timestamp_literal(value) -%}
    cast('{{ value }}' as timestamp)
{%- endmacro %}

{#- The wall clock now, in UTC. -#}
{% macro utc_now() -%}
    {{ return(adapter.dispatch('utc_now', 'nachfass')() if adapter is defined else duckdb__utc_now()) }}
{%- endmacro %}

{% macro default__utc_now() -%}
    {{ unsupported_on_engine('utc_now') }}
{%- endmacro %}

{% macro duckdb__utc_now() -%}
    cast(timezone('UTC', now()) as timestamp)
{%- endmacro %}

{% macro postgres__utc_now() -%}
    {{ duckdb__utc_now() }}
{%- endmacro %}

{% macro spark__utc_now() -%}
    current_timestamp()
{%- endmacro %}

{#- The local wall-clock time in time zone `tz` (an IANA name) of a UTC timestamp, and back. -#}
{% macro utc_to_local(ts, tz) -%}
    {{ return(adapter.dispatch('utc_to_local', 'nachfass')(ts, tz) if adapter is defined else duckdb__utc_to_local(ts, tz)) }}
{%- endmacro %}

{% macro default__utc_to_local(ts, tz) -%}
    {{ unsupported_on_engine('utc_to_local') }}
{%- endmacro %}

{% macro duckdb__utc_to_local(ts, tz) -%}
    timezone({{ tz }}, timezone('UTC', {{ ts }}))
{%- endmacro %}

{% macro postgres__utc_to_local(ts, tz) -%}
    {{ duckdb__utc_to_local(ts, tz) }}
{%- endmacro %}

{% macro spark__utc_to_local(ts, tz) -%}
    from_utc_timestamp({{ ts }}, {{ tz }})
{%- endmacro %}

{% macro local_to_utc(ts, tz) -%}
    {{ return(adapter.dispatch('local_to_utc', 'nachfass')(ts, tz) if adapter is defined else duckdb__local_to_utc(ts, tz)) }}
{%- endmacro %}

{% macro default__local_to_utc(ts, tz) -%}
    {{ unsupported_on_engine('local_to_utc') }}
{%- endmacro %}

{% macro duckdb__local_to_utc(ts, tz) -%}
    cast(timezone('UTC', timezone({{ tz }}, {{ ts }})) as timestamp)
{%- endmacro %}

{% macro postgres__local_to_utc(ts, tz) -%}
    {{ duckdb__local_to_utc(ts, tz) }}
{%- endmacro %}

{% macro spark__local_to_utc(ts, tz) -%}
    to_utc_timestamp({{ ts }}, {{ tz }})
{%- endmacro %}

{#- The day of the week of a date, Sunday = 0 … Saturday = 6. Spark's extract(dow …) and dayofweek count
    Sunday = 1 … Saturday = 7: unchanged, a Sunday rule would silently never match there. -#}
{% macro day_of_week(expr) -%}
    {{ return(adapter.dispatch('day_of_week', 'nachfass')(expr) if adapter is defined else duckdb__day_of_week(expr)) }}
{%- endmacro %}

{% macro default__day_of_week(expr) -%}
    {{ unsupported_on_engine('day_of_week') }}
{%- endmacro %}

{% macro duckdb__day_of_week(expr) -%}
    extract(dow from {{ expr }})
{%- endmacro %}

{% macro postgres__day_of_week(expr) -%}
    {{ duckdb__day_of_week(expr) }}
{%- endmacro %}

{% macro spark__day_of_week(expr) -%}
    (dayofweek({{ expr }}) - 1)
{%- endmacro %}

{#- A from-clause item: the integers start..stop (both included) as `alias (column)`. -#}
{% macro integer_series(start, stop, alias, column) -%}
    {{ return(adapter.dispatch('integer_series', 'nachfass')(start, stop, alias, column) if adapter is defined else duckdb__integer_series(start, stop, alias, column)) }}
{%- endmacro %}

{% macro default__integer_series(start, stop, alias, column) -%}
    {{ unsupported_on_engine('integer_series') }}
{%- endmacro %}

{% macro duckdb__integer_series(start, stop, alias, column) -%}
    generate_series({{ start }}, {{ stop }}) as {{ alias }} ({{ column }})
{%- endmacro %}

{% macro postgres__integer_series(start, stop, alias, column) -%}
    {{ duckdb__integer_series(start, stop, alias, column) }}
{%- endmacro %}

{% macro spark__integer_series(start, stop, alias, column) -%}
    (select explode(sequence({{ start }}, {{ stop }})) as {{ column }}) as {{ alias }}
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

{#- ---- Contracts: the models' YAML names the column types as DuckDB and PostgreSQL spell them ------------------
    dbt checks an enforced contract by casting null to each declared type. Spark has no `varchar` without a
    length, no `json` (JSON is text there) and no `float8`: on Spark the declared types are read in its
    spelling (this overrides dbt's own default__get_empty_schema_sql for Spark only). -#}
{% macro spark__get_empty_schema_sql(columns) -%}
    {%- set spark_types = {'varchar': 'string', 'text': 'string', 'json': 'string', 'float8': 'double'} -%}
    {%- set translated = {} -%}
    {%- for name, column in columns.items() -%}
        {%- set column = column.copy() -%}
        {%- if column.get('data_type') -%}
            {%- do column.update({'data_type': spark_types.get(column['data_type'].strip().lower(), column['data_type'])}) -%}
        {%- endif -%}
        {%- do translated.update({name: column}) -%}
    {%- endfor -%}
    {{ return(default__get_empty_schema_sql(translated)) }}
{%- endmacro %}
