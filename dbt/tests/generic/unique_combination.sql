{#- The few generic tests we need, written here because dbt Hub packages (dbt_utils) cannot be
    installed on the build machines. -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
