{#- Newest version of each key: by updated_at where the table has it, else by load order
    (file loaded later wins, later row in the same file wins). Raw tables are append-only. -#}
{% macro latest_version(relation, key_columns, updated_at=none) -%}
    select *
    from {{ relation }}
    qualify row_number() over (
        partition by {{ key_columns | join(', ') }}
        order by {% if updated_at %}{{ updated_at }} desc nulls last, {% endif %}_loaded_at desc, _file desc, _row desc
    ) = 1
{%- endmacro %}

{#- latest_version for an incremental staging table (unique_key = key_columns, delete+insert). On an
    incremental run only the keys with a version loaded since the last run (raw `_loaded_at` above the
    table's newest `_loaded_at`) are recomputed, from ALL their raw versions, so the winner is the same as
    latest_version over the whole raw table; the other keys keep their rows. The first key column selects
    the affected keys (a superset for composite keys: all lines of an order, same winners). -#}
{% macro latest_version_incremental(relation, key_columns, updated_at=none) -%}
    {%- if is_incremental() -%}
    select *
    from {{ relation }}
    where {{ key_columns[0] }} in (
        select {{ key_columns[0] }}
        from {{ relation }}
        where _loaded_at > (select coalesce(max(_loaded_at), timestamp '1900-01-01') from {{ this }})
    )
    qualify row_number() over (
        partition by {{ key_columns | join(', ') }}
        order by {% if updated_at %}{{ updated_at }} desc nulls last, {% endif %}_loaded_at desc, _file desc, _row desc
    ) = 1
    {%- else -%}
    {{ latest_version(relation, key_columns, updated_at) }}
    {%- endif -%}
{%- endmacro %}
