{#-
    DuckDB only: the columns a model names in its `column_compression` config (column name -> a DuckDB
    compression method, e.g. {payload: zstd}) are declared `using compression <method>` in the table's
    DDL. The segments and mail_candidates set it for their JSON payloads (dbt/dbt_project.yml).

    Why: the mail payloads (one JSON text per trigger) are the largest thing the daily build writes, and
    DuckDB's default for text (dictionary/FSST) spends most of a segment's build analysing strings that
    hardly repeat. zstd on that one column writes the same rows in about 0.7x the time into a column a
    fraction of the size (docs/benchmarks.md, "The daily build's payload writes"). DuckDB's global
    `force_compression` setting would apply to every column of every table a concurrent dbt thread
    writes, so the method is set per column here.

    This renders the column list of a model with an enforced contract (every segment and mail_candidates
    have one): dbt-duckdb then creates the table from it and fills it with `insert ... select`. It is
    dbt's own rendering (table_columns_and_constraints) plus the compression clause, which DuckDB accepts
    after the type and constraints. PostgreSQL and Spark never reach this macro; a model without an
    enforced contract is built by `create table as` and the setting does nothing there.
-#}
{% macro duckdb__get_table_columns_and_constraints() -%}
  {%- set compression = config.get('column_compression') or {} -%}
  {%- set columns = model['columns'].values() | list -%}
  {%- set raw_column_constraints = adapter.render_raw_columns_constraints(raw_columns=model['columns']) -%}
  {%- set raw_model_constraints = adapter.render_raw_model_constraints(raw_constraints=model['constraints']) -%}
    (
    {% for c in raw_column_constraints -%}
      {{ c }}
      {%- if columns[loop.index0]['name'] in compression %} using compression {{ compression[columns[loop.index0]['name']] }}{% endif -%}
      {{ "," if not loop.last or raw_model_constraints }}
    {% endfor %}
    {% for c in raw_model_constraints -%}
        {{ c }}{{ "," if not loop.last }}
    {% endfor -%}
    )
{%- endmacro %}
