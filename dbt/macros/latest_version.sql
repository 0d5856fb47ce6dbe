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
