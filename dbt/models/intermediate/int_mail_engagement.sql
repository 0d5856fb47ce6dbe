-- One row per ledger entry that reached SendGrid: delivery and engagement facts from the event webhook.
-- Opens by privacy proxies / machines (sg_machine_open) are not counted as human opens.
with sends as (
    select * from {{ ref('stg_sends') }}
),

events as (
    select * from {{ ref('stg_sendgrid_events') }}
),

-- events are matched by our send id (custom_args); older events without it by the X-Message-Id. Two
-- equi-joins, not one join on "send id = send id or (no send id and message id = message id)": DuckDB joins
-- on such an `or` by comparing every event with every send (a nested-loop join), whose time grows with
-- events × sends (13 s for 40,000 sends and 120,000 events; a shop's ledger and event history are millions
-- of rows: docs/benchmarks.md). No event matches in both: the first needs its send id, the second has none.
matched as (
    select sends.send_id as matched_send_id, events.*
    from events
    inner join sends on events.send_id = sends.send_id
    union all
    select sends.send_id as matched_send_id, events.*
    from events
    inner join sends on events.message_id = sends.sg_message_id
    where events.send_id is null
),

-- the facts per send, from its events only: grouped by the send id alone, not by the ten columns of every
-- send (a send without events, most of a backtest's and all of an outbox's, is not grouped at all)
per_send as (
    select
        matched.matched_send_id as send_id,
        min(matched.occurred_at) filter (where matched.event_type = 'delivered') as delivered_at,
        min(matched.occurred_at) filter (where matched.event_type = 'open' and not matched.is_machine_open)
            as first_open_at,
        min(matched.occurred_at) filter (where matched.event_type = 'click') as first_click_at,
        min(matched.occurred_at) filter (where matched.event_type = 'bounce') as bounced_at,
        {{ arg_min('matched.bounce_type', 'matched.occurred_at', where="matched.event_type = 'bounce'") }}
            as bounce_type,
        min(matched.occurred_at) filter (where matched.event_type = 'dropped') as dropped_at,
        min(matched.occurred_at) filter (where matched.event_type = 'spamreport') as spam_reported_at,
        min(matched.occurred_at) filter (where matched.event_type in ('unsubscribe', 'group_unsubscribe'))
            as unsubscribed_at,
        count(*) filter (where matched.event_type = 'open' and matched.is_machine_open) as n_machine_opens
    from matched
    group by matched.matched_send_id
),

final as (
    select
        sends.send_id,
        sends.campaign,
        sends.step,
        sends.trigger_key,
        sends.customer_id,
        sends.email,
        sends.experiment_id,
        sends.variant,
        sends.send_status,
        sends.sent_at,
        per_send.delivered_at,
        per_send.first_open_at,
        per_send.first_click_at,
        per_send.bounced_at,
        per_send.bounce_type,
        per_send.dropped_at,
        per_send.spam_reported_at,
        per_send.unsubscribed_at,
        coalesce(per_send.n_machine_opens, 0) as n_machine_opens
    from sends
    left join per_send on sends.send_id = per_send.send_id
    where sends.send_status in ('sent', 'unknown')
)

select * from final
