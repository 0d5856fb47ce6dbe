{#- The model (optionally filtered with `where:`) has no rows. Used with severity warn to flag data-quality
    findings (orphans, shared addresses) without stopping a run. -#}
{% test expect_no_rows(model) %}
select * from {{ model }}
{% endtest %}
