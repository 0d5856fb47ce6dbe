{#- One row per trigger that is due at as_of, with the decision (send / defer / skip) and the reason.
    "Why did / didn't this customer get the mail?" is one query on this table. Rules apply in the order of
    the `decided` CTE; the first that matches gives the reason. -#}
{%- set settings = campaign_settings() -%}
{#- `only_campaigns` (a list) builds one campaign through eligibility by name: its segment and what it
    needs, nothing of the others (`nachfass campaigns build NAME`, `dbt build --select +mail_candidates`). -#}
{%- set only = var('only_campaigns', none) -%}
{#- A job that sends some campaigns only builds their segments (dagster_project/jobs.py) and reads the
    others' as their last build left them; in such a build a segment never built yet (the first run of a
    warehouse is a 15-minute one) has no triggers: its campaign is sent by a job that builds it. -#}
{%- set wanted = campaign_models() if only is none else campaign_models() | select('in', only) | list -%}
{%- set selected = selected_models(wanted) -%}
{#- the customer's bucket in their campaign's experiment, computed once per trigger whose variant is read
    (column variant_bucket of `due`; in a lean tick of `to_enrich`), and the variant read from it -#}
{%- set bucket_expression -%}
    {%- if settings.values() | selectattr('experiment', 'defined') | list -%}
        case triggers.campaign
            {%- for name, campaign in settings.items() if campaign.get('experiment') %}
            when '{{ name }}' then {{ experiment_bucket('triggers.customer_id', campaign['experiment']) }}
            {%- endfor %}
        end
    {%- else %}cast(null as bigint){% endif -%}
{%- endset -%}
{%- set variant_expression -%}
    {%- if settings.values() | selectattr('experiment', 'defined') | list -%}
        case due.campaign
            {%- for name, campaign in settings.items() if campaign.get('experiment') %}
            when '{{ name }}' then {{ assign_variant('due.customer_id', campaign['experiment'], bucket='due.variant_bucket') }}
            {%- endfor %}
            else 'control'
        end
    {%- else %}'control'{% endif -%}
{%- endset -%}
{#- `nachfass replay` (the var as_of_source: variable, DuckDB) may decide lean: with the DuckDB variable
    nachfass_lean_candidates true, a trigger the first rules decide from itself, the ledger and the clock
    alone (already sent, exited, already reminded, expired: five in six of the due triggers at 100k) is
    not joined to the customer, consent, window and cap tables and goes straight to the table as `skip` with
    its reason (none of the later rules, ranks or payloads can change it), with only the columns the replay
    records (its key, customer, decision and reason; no variant is computed for it). Every decision and
    reason is the same (tests/test_replay.py compares them); the replay decides its last tick in full, so
    the table it leaves is the whole one. -#}
{%- set lean = replay_lean() -%}
{%- set segments = [] -%}
{%- for model in wanted if not selected or model in selected or load_relation(ref(model)) is not none -%}
    {%- do segments.append(model) -%}
{%- endfor %}
with segment_triggers as {{ cte_not_materialized() }} (
    {%- for model in segments %}
    select
        campaign, step, trigger_key, customer_id, email, trigger_at, due_at, expires_at, exit_reason,
        cast(payload as {{ type_text() }}) as payload
    from {{ ref(model) }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

-- send-time experiments: the assigned variant's extra delay moves the due time (macro variant_delay)
triggers as (
    select
        campaign, step, trigger_key, customer_id, email, trigger_at,
        due_at + {{ variant_delay('campaign', 'customer_id', settings) }} as due_at,
        expires_at, exit_reason, payload
    from segment_triggers
),

campaign_settings as (
    {%- for name, campaign in settings.items() %}
    select
        '{{ name }}' as campaign,
        '{{ campaign["consent_policy"] }}' as consent_policy,
        {{ campaign.get("priority", 99) }} as priority,
        {{ "true" if campaign.get("exit_on_order", false) else "false" }} as exit_on_order,
        {{ "'" ~ campaign["experiment"]["id"] ~ "'" if campaign.get("experiment") else "null" }} as experiment_id,
        {%- set reminded_by = campaign.get("skip_if_reminded_by", []) %}
        {{ text_list(reminded_by) }} as skip_if_reminded_by,
        {#- going live (setting `rollout`): nothing before live_from; triggers already due then are the
            backlog, skipped, sent at once, or dripped out at drip_per_day -#}
        {%- set rollout = campaign.get("rollout") or {} %}
        {% if rollout.get("live_from") -%}
        {{ utc_timestamp_literal(rollout["live_from"]) }}
        {%- else %}cast(null as timestamp){% endif %} as live_from,
        '{{ rollout.get("backlog", "all") }}' as backlog_mode,
        {{ rollout.get("drip_per_day") or "cast(null as integer)" }} as drip_per_day,
        '{{ rollout.get("drip_order", "oldest") }}' as drip_order
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- else %}
    select null as campaign, null as consent_policy, null as priority, null as exit_on_order, null as experiment_id,
        {{ text_list([]) }} as skip_if_reminded_by, cast(null as timestamp) as live_from,
        'all' as backlog_mode, cast(null as integer) as drip_per_day, 'oldest' as drip_order
    where false
    {%- endfor %}
),

-- The customers and send windows of the triggers' customers only. Both tables have a row per customer (1M);
-- narrowed first, the engine joins them to the due triggers from their side instead of building its hash
-- tables over the (wide) trigger rows: the model took 2.4-2.9 s without, 1.5-1.8 s with, at 1M customers
-- (docs/benchmarks.md). The address-keyed tables gained nothing from the same. Not on Spark: its executor
-- fails to deserialize the plan of an `in` subquery over the segments' union (a ClassCastException on
-- UnionExec.children, Spark 4.3 in local mode), and the tables stay whole there.
customers as (
    select * from {{ ref('stg_customers') }}
    {%- if not engine_is_spark() %}
    where customer_id in (select customer_id from triggers)
    {%- endif %}
),

consent as (
    select * from {{ ref('int_consent_state') }}
),

suppressions as (
    select * from {{ ref('int_suppressions') }}
),

windows as (
    select * from {{ ref('int_send_windows') }}
    {%- if not engine_is_spark() %}
    where customer_id in (select customer_id from triggers)
    {%- endif %}
),

dormant as (
    select * from {{ ref('int_dormant_addresses') }}
),

-- the ledger's columns the rules read: the CTE is read four times and kept, so it holds these, not the whole row
ledger as (
    select campaign, step, trigger_key, email, send_status, sent_at from {{ ref('stg_sends') }}
),

orders as (
    select * from {{ ref('stg_orders') }}
),

marketing_campaigns as (
    select campaign from campaign_settings where consent_policy in ('required', 'existing_customer')
),

-- marketing mails that went out (or may have: unknown) per address, for the frequency caps
recent_marketing as (
    select
        lower(ledger.email) as email,
        count(*) filter (where ledger.sent_at > {{ as_of() }} - interval '24 hour') as n_last_24h,
        count(*) filter (where ledger.sent_at > {{ as_of() }} - interval '7 day') as n_last_7d
    from ledger
    inner join marketing_campaigns on ledger.campaign = marketing_campaigns.campaign
    where ledger.send_status in ('sending', 'sent', 'unknown')
        -- the mails of the last 7 days alone count: not the whole ledger grouped at every run
        and ledger.sent_at > {{ as_of() }} - interval '7 day'
    group by lower(ledger.email)
),

-- "one cart, one series": the campaigns that already mailed each trigger key (e.g. a checkout recovery
-- for a cart), for campaigns whose setting `skip_if_reminded_by` names them
{%- set reminding = [] -%}
{%- for campaign in settings.values() -%}
    {%- for name in campaign.get('skip_if_reminded_by', []) if name not in reminding -%}
        {%- do reminding.append(name) -%}
    {%- endfor -%}
{%- endfor %}
-- (only the mails of campaigns some setting names: no other can make a trigger `already_reminded`)
reminded as (
    select trigger_key, array_agg(distinct campaign) as campaigns
    from ledger
    where send_status in ('sending', 'sent', 'unknown')
        and {% if reminding %}campaign in ('{{ reminding | join("', '") }}'){% else %}false{% endif %}
    group by trigger_key
),

buyers as (
    select
        customer_id,
        min(placed_at) as first_order_at,
        sum(total_amount) filter (where not is_cancelled_or_returned) as revenue_to_date
    from orders
    where placed_at <= {{ as_of() }}
    group by customer_id
),

-- The rules below join about ten tables to the due triggers. The payload (≈ 1.2 KB a trigger, most of the row)
-- stays out of them and joins back once at the end (payloads): at 1M customers the engine builds several
-- of those joins' hash tables over the trigger rows, which with the payload took 1.6 GB each and broke a 2GiB
-- memory limit (DuckDB, docs/benchmarks.md).
due as (
    select
        triggers.campaign,
        triggers.step,
        triggers.trigger_key,
        triggers.customer_id,
        triggers.email,
        triggers.trigger_at,
        triggers.due_at,
        triggers.expires_at,
        triggers.exit_reason,
        -- what "most valuable first" ranks a dripped backlog by: the cart or order total, read from the
        -- payload only for those rows, not for every candidate
        case
            when triggers.due_at < campaign_settings.live_from and campaign_settings.drip_order = 'most_valuable'
                then {{ try_cast_double(json_text('triggers.payload', 'total_amount')) }}
        end as payload_total_amount,
        {%- if not lean %}
        {{ bucket_expression | indent(8) }} as variant_bucket,
        {%- endif %}
        campaign_settings.consent_policy,
        campaign_settings.priority,
        campaign_settings.exit_on_order,
        campaign_settings.experiment_id,
        campaign_settings.skip_if_reminded_by,
        campaign_settings.consent_policy in ('required', 'existing_customer') as is_marketing,
        campaign_settings.live_from,
        campaign_settings.backlog_mode,
        campaign_settings.drip_per_day,
        campaign_settings.drip_order,
        coalesce(triggers.due_at < campaign_settings.live_from, false) as is_backlog
    from triggers
    inner join campaign_settings on triggers.campaign = campaign_settings.campaign
    where triggers.due_at <= {{ as_of() }}
),

{% if lean -%}
{#- the first rules of pre_decided, in its order (an exit reason naming a deferral is left to the full
    rules: its decision would be `defer`) -#}
{%- set early_reason -%}
    case
        when ledger_status is not null then 'already_sent'
        when exit_reason in {{ deferral_reasons() }} then null
        when exit_reason is not null and exit_reason <> 'purchased' then exit_reason
        when exit_reason = 'purchased' and exit_on_order then exit_reason
        when is_already_reminded then 'already_reminded'
        when {{ as_of() }} > expires_at then 'expired'
    end
{%- endset %}
-- what the first rules read besides the trigger: the ledger and the mails sent for the same trigger key
prechecked as (
    select
        due.*,
        ledger.send_status as ledger_status,
        coalesce({{ lists_overlap('due.skip_if_reminded_by', 'reminded.campaigns') }}, false) as is_already_reminded
    from due
    left join ledger
        on due.campaign = ledger.campaign and due.step = ledger.step and due.trigger_key = ledger.trigger_key
    left join reminded on due.trigger_key = reminded.trigger_key
),

-- when one of the first rules holds (its reason), no later rule is read
prechecked_reasons as (
    select *, {{ early_reason | indent(4) }} as early_reason
    from prechecked
),

to_enrich as (
    select
        triggers.* exclude (early_reason),
        {{ bucket_expression | indent(8) }} as variant_bucket
    from prechecked_reasons as triggers
    where not (coalesce(getvariable('nachfass_lean_candidates'), false) and triggers.early_reason is not null)
),

{% endif -%}
enriched as (
    select
        due.*,
        customers.first_name,
        customers.last_name,
        customers.salutation,
        customers.locale,
        customers.timezone,
        customers.is_guest,
        coalesce(consent.has_marketing_consent, false) as has_marketing_consent,
        coalesce(consent.has_objection_notice, false) as has_objection_notice,
        coalesce(consent.prefers_weekly, false) as prefers_weekly,
        coalesce(consent.has_withdrawn, false) as has_withdrawn,
        buyers.first_order_at is not null and buyers.first_order_at < due.trigger_at as has_bought_before,
        -- what "most valuable first" ranks a dripped backlog by: the cart or order total, else the
        -- customer's revenue so far
        case when due.is_backlog and due.drip_order = 'most_valuable' then coalesce(
            due.payload_total_amount, buyers.revenue_to_date, 0
        ) end as trigger_value,
        suppressions.suppression_reason,
        dormant.dormant_since,
        -- Every address passed the shared address rule (dagster_project/addresses.py) when it was loaded;
        -- a second, different rule here could only disagree with it. What is left is a trigger without one.
        coalesce(trim(due.email), '') = '' as is_invalid_address,
        {%- if not lean %}
        ledger.send_status as ledger_status,
        coalesce({{ lists_overlap('due.skip_if_reminded_by', 'reminded.campaigns') }}, false) as is_already_reminded,
        {%- endif %}
        windows.is_in_send_window,
        windows.next_window_at,
        coalesce(recent_marketing.n_last_24h, 0) as n_marketing_last_24h,
        coalesce(recent_marketing.n_last_7d, 0) as n_marketing_last_7d,
        {{ variant_expression }} as variant
    from {{ 'to_enrich' if lean else 'due' }} as due
    left join customers on due.customer_id = customers.customer_id
    left join consent on lower(due.email) = consent.email
    left join suppressions on lower(due.email) = suppressions.email
    {%- if not lean %}
    left join ledger
        on due.campaign = ledger.campaign and due.step = ledger.step and due.trigger_key = ledger.trigger_key
    {%- endif %}
    left join windows on due.customer_id = windows.customer_id
    left join recent_marketing on lower(due.email) = recent_marketing.email
    left join buyers on due.customer_id = buyers.customer_id
    left join dormant on lower(due.email) = dormant.email
    {%- if not lean %}
    left join reminded on due.trigger_key = reminded.trigger_key
    {%- endif %}
),
{%- if lean %}

-- the due triggers the first rules decide alone (see `lean` above): skipped for that rule's reason
decided_early as (
    select * from prechecked_reasons
    where coalesce(getvariable('nachfass_lean_candidates'), false) and early_reason is not null
),
{%- endif %}

pre_decided as (
    select
        enriched.*,
        case
            when ledger_status is not null then 'already_sent'
            -- the segment's own rule rejected the trigger (a near miss: not_logged_in, empty_cart,
            -- not_inactive_yet …) or the order was cancelled or returned: always skipped
            when exit_reason is not null and exit_reason <> 'purchased' then exit_reason
            when exit_reason = 'purchased' and exit_on_order then exit_reason
            when is_already_reminded then 'already_reminded'
            when {{ as_of() }} > expires_at then 'expired'
            when {{ as_of() }} < live_from then 'not_live_yet'
            when is_backlog and backlog_mode = 'skip' then 'backlog_skipped'
            when is_invalid_address or suppression_reason = 'invalid_address' then 'invalid_address'
            when suppression_reason is not null then 'suppressed'
            when is_marketing and is_guest and not has_marketing_consent then 'no_consent'
            when consent_policy = 'required' and not has_marketing_consent then 'no_consent'
            when consent_policy = 'existing_customer'
                and not has_marketing_consent
                and not (has_bought_before and has_objection_notice and not has_withdrawn)
                then 'no_consent'
            when is_marketing and dormant_since is not null then 'dormant'
            when variant = 'holdout' then 'holdout'
            when is_marketing and not is_in_send_window and next_window_at > expires_at then 'expired'
            when is_marketing and not is_in_send_window then 'quiet_hours'
            when is_marketing and n_marketing_last_24h >= 1 then 'frequency_cap'
            when is_marketing and n_marketing_last_7d >= (case when prefers_weekly then 1 else 3 end)
                then 'frequency_cap'
        end as pre_reason
    from enriched
),

-- backlog drip: of the backlog triggers that passed every rule above, a campaign sends at most
-- drip_per_day in any 24 h (backlog mails it sent in the 24 h before as_of count); the rest is deferred
-- to the next run (reason backlog_drip), oldest or most valuable first
drip_used as (
    select
        ledger.campaign,
        count(*) as n_used,
        min(ledger.sent_at) as first_used_at
    from ledger
    inner join triggers
        on ledger.campaign = triggers.campaign
        and ledger.step = triggers.step
        and ledger.trigger_key = triggers.trigger_key
    inner join campaign_settings on ledger.campaign = campaign_settings.campaign
    where campaign_settings.backlog_mode = 'drip'
        and triggers.due_at < campaign_settings.live_from
        and ledger.send_status in ('sending', 'sent', 'unknown')
        and ledger.sent_at > {{ as_of() }} - interval '24 hour'
    group by ledger.campaign
),

drip_ranks as (
    select
        campaign,
        step,
        trigger_key,
        row_number() over (
            partition by campaign
            order by
                case when drip_order = 'most_valuable' then -trigger_value end nulls last,
                due_at, step, trigger_key
        ) as drip_rank
    from pre_decided
    where pre_reason is null and is_backlog and backlog_mode = 'drip'
),

decided as (
    select
        pre_decided.*,
        case
            when drip_ranks.drip_rank > pre_decided.drip_per_day - coalesce(drip_used.n_used, 0)
                then 'backlog_drip'
            else pre_decided.pre_reason
        end as rule_reason,
        -- the next run at which a drip slot is free: 24 h after the oldest backlog mail in the window
        coalesce(drip_used.first_used_at, {{ as_of() }}) + interval '24 hour' as drip_free_at
    from pre_decided
    left join drip_ranks
        on pre_decided.campaign = drip_ranks.campaign
        and pre_decided.step = drip_ranks.step
        and pre_decided.trigger_key = drip_ranks.trigger_key
    left join drip_used on pre_decided.campaign = drip_used.campaign
),

-- several marketing mails competing for one address in this run: the highest priority wins. Ranked over the
-- competing rows only (a narrow window, joined back), not over every row with its payload
marketing_ranks as (
    select
        campaign,
        step,
        trigger_key,
        row_number() over (
            partition by lower(email)
            order by priority, due_at, campaign, step, trigger_key
        ) as marketing_rank
    from decided
    where rule_reason is null and is_marketing
),

-- The keys of the mails this run sends (no rule against them, first for their address) and of the holdouts
-- (recorded in the ledger as if sent): a narrow table. What reads it (the winners per trigger key, the payloads)
-- reads these few hundred keys, and the wide rows of every due trigger are joined once, at the end, instead of
-- being copied into a table per step (~15 % of the model's time at 100k, docs/benchmarks.md).
sent_or_held_out as (
    select decided.campaign, decided.step, decided.trigger_key, decided.rule_reason
    from decided
    left join marketing_ranks
        on decided.campaign = marketing_ranks.campaign
        and decided.step = marketing_ranks.step
        and decided.trigger_key = marketing_ranks.trigger_key
    where (decided.rule_reason is null and coalesce(marketing_ranks.marketing_rank, 1) = 1)
        or decided.rule_reason = 'holdout'
),

-- the mails this run sends, per trigger key: a cart reminder losing to this run's checkout recovery of the
-- same cart is `already_reminded` (the same rule as for a checkout recovery sent in an earlier run)
run_winners as (
    select trigger_key, array_agg(distinct campaign) as campaigns
    from sent_or_held_out
    where rule_reason is null
    group by trigger_key
),

-- The payload only where something reads it: the mails this run sends (the render step) and the holdouts.
-- A skipped or deferred trigger is decided afresh, payload and all, at a later run; every trigger's payload
-- stays in its segment table. At 1M customers 85 % of the payload bytes were on skipped rows (expired, already
-- sent, no consent), and leaving them out took the model from 8.6 to 6.8 s in a scheduled run
-- (docs/benchmarks.md). Only those rows' payloads are picked (by key), so the join back holds a few hundred
-- payloads, not every due trigger's (~8 % of the model's time at 100k).
payloads as (
    select triggers.campaign, triggers.step, triggers.trigger_key, triggers.payload
    from triggers
    where triggers.due_at <= {{ as_of() }}
        and exists (
            select 1 from sent_or_held_out
            where sent_or_held_out.campaign = triggers.campaign
                and sent_or_held_out.step = triggers.step
                and sent_or_held_out.trigger_key = triggers.trigger_key
        )
),

-- the decision and its reason, and the payload joined back
decisions as (
    select
        decided.*,
        case
            when decided.rule_reason in {{ deferral_reasons() }} then 'defer'
            when decided.rule_reason is not null then 'skip'
            when marketing_ranks.marketing_rank > 1 then 'skip'
            else 'send'
        end as decision,
        case
            when decided.rule_reason is not null then decided.rule_reason
            when marketing_ranks.marketing_rank > 1
                and coalesce({{ lists_overlap('decided.skip_if_reminded_by', 'run_winners.campaigns') }}, false)
                then 'already_reminded'
            when marketing_ranks.marketing_rank > 1 then 'frequency_cap'
            else 'due'
        end as reason,
        payloads.payload
    from decided
    left join marketing_ranks
        on decided.campaign = marketing_ranks.campaign
        and decided.step = marketing_ranks.step
        and decided.trigger_key = marketing_ranks.trigger_key
    left join run_winners on decided.trigger_key = run_winners.trigger_key
    left join payloads
        on decided.campaign = payloads.campaign
        and decided.step = payloads.step
        and decided.trigger_key = payloads.trigger_key
),

final_decided as (
    select
        campaign,
        step,
        trigger_key,
        customer_id,
        email,
        first_name,
        last_name,
        salutation,
        locale,
        timezone,
        consent_policy,
        is_marketing,
        has_marketing_consent,
        priority,
        experiment_id,
        variant,
        trigger_at,
        due_at,
        expires_at,
        payload,
        decision,
        reason,
        case
            when rule_reason = 'quiet_hours' then next_window_at
            when rule_reason = 'not_live_yet' then live_from
            when rule_reason = 'backlog_drip' then drip_free_at
        end as deferred_until,
        is_backlog,
        exit_reason,
        suppression_reason,
        dormant_since,
        n_marketing_last_24h,
        n_marketing_last_7d,
        prefers_weekly,
        {{ as_of() }} as decided_at
    from decisions
),
{%- if lean %}

-- the columns a row decided early has: what the replay records of each tick's decisions
-- (replay.record_tick_decisions); the others stay null, as the rules left them unread
final_early as (
    select
        campaign,
        step,
        trigger_key,
        customer_id,
        'skip' as decision,
        early_reason as reason,
        {{ as_of() }} as decided_at
    from decided_early
),

final as (
    select * from final_decided
    union all by name
    select * from final_early
)
{%- else %}

final as (
    select * from final_decided
)
{%- endif %}

select * from final
