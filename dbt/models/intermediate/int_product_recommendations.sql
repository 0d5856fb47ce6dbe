-- The recommendation model of every sales mail: one row per target (an order, a cart or a customer) and
-- recommended product, best first (up to `max_recommendations`). Used by cross_sell (order), abandoned_cart
-- (cart: "Kunden kauften auch") and reactivation (customer), through int_recommendation_lists.
--
-- A target's anchors are its products: the order's lines, the cart's lines, or the customer's most recent
-- purchases (more recent ones weigh more). Candidates come from three sources and their scores add up:
--   * bought together: the anchors' related products (int_product_pairs), summed similarity;
--   * category affinity: bestsellers of the anchors' categories, by the category's share of the anchors;
--   * popularity: the shop's bestsellers (so a target always gets products).
-- Only in-stock products; never one the customer bought before or one in the cart/order itself. Each row
-- keeps the reason its biggest score part gives, for the customer-readable line under the product
-- ("Passend zu Hochbeet Classic", "Beliebt in Gartenwerkzeug", "Bei unserer Kundschaft beliebt").
-- bench/bench_recommendations.py measures it (hit rate of the next purchase) against popularity alone.
--
-- Targets, as narrow as the mails need them (the model runs every day; targeting the whole customer base cost
-- over a minute at 1 M customers), all of customers with marketing consent (the three campaigns require it):
-- the orders a cross-sell mail is due and not expired for, the carts a reminder may still go out for (known
-- customer, logged in, not bought, younger than the reminders' expiry), and customers whose inactivity
-- episode (spec: no order for max(inactive_after_days, 2 × their median days between orders)) began within
-- reactivation's window. A target outside these gets no recommendations: its mail would show none.
-- `--vars '{recommendation_targets: all_customers}'` targets every customer with an order instead (the
-- offline benchmark).
--
-- A build that selects some of the three campaigns but not all (the 15-minute job builds abandoned_cart, not
-- cross_sell and reactivation: dagster_project/jobs.py) targets only what the selected ones read: their
-- segments keep the lists their own last build gave them. Order targets are ~80 % of the work at 1 M
-- customers. A build selecting none of them (`--select +int_product_recommendations`) targets all three.
-- depends_on: {{ ref('int_customer_order_gaps') }} {{ ref('int_carts') }}
{%- set cross = segment_settings('cross_sell')['steps']['1'] %}
{%- set cart = segment_settings('abandoned_cart')['steps']['1'] %}
{%- set reactivation = segment_settings('reactivation') %}
{%- set inactive_after_days = reactivation['inactive_after_days'] %}
{%- set all_customers = var('recommendation_targets', 'mails') == 'all_customers' %}
{%- set consumers = {'order': 'cross_sell', 'cart': 'abandoned_cart', 'customer': 'reactivation'} %}
{%- set selected_consumers = selected_models(consumers.values() | list) %}
{%- set kinds = [] %}
{%- for kind, campaign in consumers.items() if campaign in selected_consumers or not selected_consumers %}
    {%- do kinds.append(kind) %}
{%- endfor %}
{%- set max_recommendations = 6 %}
{%- set customer_anchors = 8 %}
{%- set popular_per_category = 6 %}
{%- set bestsellers = 8 %}
{%- set weight_category = 0.35 %}
{%- set weight_popular = 0.15 %}
with orders as (
    select * from {{ ref('int_orders') }}
),

order_items as (
    select * from {{ ref('stg_order_items') }}
),

products as (
    select * from {{ ref('stg_products') }}
),

{% if 'cart' in kinds -%}
carts as (
    select * from {{ ref('int_carts') }}
),

{% endif -%}
{% if 'customer' in kinds -%}
order_gaps as (
    select * from {{ ref('int_customer_order_gaps') }}
),

{% endif -%}
customers as (
    select * from {{ ref('stg_customers') }}
),

consent as (
    select * from {{ ref('int_consent_state') }}
),

pairs as (
    select * from {{ ref('int_product_pairs') }}
),

-- bestsellers: distinct buyers in the last 90 days, in stock; `popularity` relative to the top product,
-- `category_popularity` relative to the top product of its category
recent_buyers as (
    select order_items.product_id, count(distinct orders.customer_id) as n_buyers
    from order_items
    inner join orders on order_items.order_id = orders.order_id
    where orders.placed_at > {{ as_of() }} - interval '90 day'
        and not orders.is_cancelled_or_returned
    group by order_items.product_id
),

popularity as (
    select
        products.product_id,
        products.category,
        cast(recent_buyers.n_buyers as {{ type_double() }}) / max(recent_buyers.n_buyers) over () as popularity,
        cast(recent_buyers.n_buyers as {{ type_double() }})
        / max(recent_buyers.n_buyers) over (partition by products.category) as category_popularity,
        row_number() over (partition by products.category order by recent_buyers.n_buyers desc, products.product_id asc)
            as rank_in_category,
        row_number() over (order by recent_buyers.n_buyers desc, products.product_id asc) as rank_overall
    from recent_buyers
    inner join products on recent_buyers.product_id = products.product_id
    where products.is_in_stock
),

-- all three campaigns need marketing consent (policy `required`): nobody else is shown recommendations
consented_customers as (
    select customers.customer_id
    from customers
    inner join consent on lower(customers.email) = consent.email
    where consent.has_marketing_consent
),

-- targets and their anchor products (weight 1; a customer's older purchases weigh less)
order_anchors as (
    select distinct
        'order' as target_type,
        orders.order_id as target_id,
        orders.customer_id,
        order_items.product_id as anchor_product_id,
        cast(1 as {{ type_double() }}) as anchor_weight
    from orders
    inner join order_items on orders.order_id = order_items.order_id
    inner join consented_customers on orders.customer_id = consented_customers.customer_id
    -- due and not expired
    where {{ 'true' if 'order' in kinds else 'false' }}
        and orders.delivered_at_or_assumed <= {{ as_of() }} - {{ minutes(cross["delay_minutes"]) }}
        and orders.delivered_at_or_assumed
            > {{ as_of() }} - {{ minutes(cross["delay_minutes"], cross["expire_after_minutes"]) }}
),

cart_anchors as (
    {%- if 'cart' in kinds %}
    select distinct
        'cart' as target_type,
        carts.cart_id as target_id,
        carts.customer_id,
        cart_line.product_id as anchor_product_id,
        cast(1 as {{ type_double() }}) as anchor_weight
    from carts
    inner join consented_customers on carts.customer_id = consented_customers.customer_id,
        {{ json_array_rows('carts.items', 'cart_line', ['product_id']) }}
    where carts.customer_id is not null
        and carts.was_logged_in
        and carts.n_items > 0
        and carts.purchased_at is null
        and carts.last_cart_activity_at > {{ as_of() }} - {{ minutes(cart["expire_after_minutes"]) }}
    {%- else %}
    -- a build without the cart campaigns (the daily job) does not read the carts at all: it leaves int_carts
    -- out, which a warehouse whose first run is a daily one has never built
    select * from order_anchors where false
    {%- endif %}
),

-- customers whose inactivity began within reactivation's window (both steps: step 2 is due a week after
-- step 1 and expires after its own expiry), with consent; or every customer with an order (benchmark)
customer_targets as (
    {%- if 'customer' in kinds %}
    select distinct order_gaps.customer_id
    from order_gaps
    {%- if not all_customers %}
    inner join consented_customers on order_gaps.customer_id = consented_customers.customer_id
    where order_gaps.next_order_at is null
        and {{ timestamp_add('second', 'cast(86400 * greatest(' ~ (inactive_after_days | int)
            ~ ', 2 * coalesce(order_gaps.median_days_between_orders, 0)) as bigint)', 'order_gaps.placed_at') }}
        between {{ as_of() }}
            - {{ minutes(reactivation['steps']['1']['delay_minutes'], reactivation['steps']['2']['delay_minutes'],
                         reactivation['steps']['2']['expire_after_minutes']) }} - interval '7 day'
        and {{ as_of() }}
    {%- endif %}
    {%- else %}
    select customer_id from customers where false
    {%- endif %}
),

target_customers as (
    select customer_id from order_anchors
    union
    select customer_id from cart_anchors
    union
    select customer_id from customer_targets
),

-- what the target customers bought up to as_of (never recommended to them again), newest first
bought as (
    select orders.customer_id, order_items.product_id, max(orders.placed_at) as last_bought_at
    from order_items
    inner join orders on order_items.order_id = orders.order_id
    where not orders.is_cancelled_or_returned
        and orders.customer_id in (select customer_id from target_customers)
    group by orders.customer_id, order_items.product_id
),

customer_anchors as (
    select
        'customer' as target_type,
        customer_id as target_id,
        customer_id,
        product_id as anchor_product_id,
        -- the most recent purchase counts fully, each older one 15 % less
        pow(cast(0.85 as {{ type_double() }}), purchase_rank - 1) as anchor_weight
    from (
        select
            bought.customer_id,
            bought.product_id,
            row_number() over (
                partition by bought.customer_id order by bought.last_bought_at desc, bought.product_id asc
            ) as purchase_rank
        from bought
        inner join customer_targets on bought.customer_id = customer_targets.customer_id
    ) as ranked_purchases
    where purchase_rank <= {{ customer_anchors }}
),

anchors_by_id as (
    select * from order_anchors
    union all
    select * from cart_anchors
    union all
    select * from customer_anchors
),

-- The scoring below groups, joins and ranks millions of (target, product) rows at 1 M customers. It works on
-- integer keys, numbered here, instead of the text ids (target type and id, product id): hashing and
-- comparing two integers instead of three strings took about 30 % off the model at 1 M customers (the same
-- rows). Product keys follow the product ids' order, so ties still break by product id.
targets as (
    select
        target_type,
        target_id,
        customer_id,
        row_number() over (order by target_type, target_id) as target_key
    from (select distinct target_type, target_id, customer_id from anchors_by_id) as distinct_targets
),

-- every product id the scoring meets: the catalogue's, and the ones an order, cart or pair names before the
-- product export has them (such an anchor still brings its related products, and is named as the reason)
product_keys as (
    select
        known_ids.product_id,
        catalogue.product_name,
        catalogue.category,
        catalogue.is_in_stock,
        row_number() over (order by known_ids.product_id) as product_key
    from (
        select product_id from products
        union
        select anchor_product_id from anchors_by_id
        union
        select product_id from pairs
    ) as known_ids
    left join products as catalogue on known_ids.product_id = catalogue.product_id
),

anchors as (
    select targets.target_key, product_keys.product_key as anchor_product_key, anchors_by_id.anchor_weight
    from anchors_by_id
    inner join targets
        on anchors_by_id.target_type = targets.target_type
        and anchors_by_id.target_id = targets.target_id
    inner join product_keys on anchors_by_id.anchor_product_id = product_keys.product_id
),

pair_keys as (
    select this.product_key, related.product_key as related_product_key, pairs.similarity
    from pairs
    inner join product_keys as this on pairs.product_id = this.product_id
    inner join product_keys as related on pairs.related_product_id = related.product_id
),

popular_keys as (
    select product_keys.product_key, popularity.*
    from popularity
    inner join product_keys on popularity.product_id = product_keys.product_id
),

-- what each target's customer bought before (never recommended again)
bought_keys as (
    select targets.target_key, product_keys.product_key
    from bought
    inner join targets on bought.customer_id = targets.customer_id
    inner join product_keys on bought.product_id = product_keys.product_id
),

bought_together as (
    select
        anchors.target_key,
        pair_keys.related_product_key as product_key,
        sum(pair_keys.similarity * anchors.anchor_weight) as score,
        {{ arg_max('anchors.anchor_product_key', 'pair_keys.similarity * anchors.anchor_weight') }}
            as reason_product_key
    from anchors
    inner join pair_keys on anchors.anchor_product_key = pair_keys.product_key
    group by anchors.target_key, pair_keys.related_product_key
),

category_shares as (
    select
        anchors.target_key,
        product_keys.category,
        sum(anchors.anchor_weight)
        / sum(sum(anchors.anchor_weight)) over (partition by anchors.target_key) as share
    from anchors
    inner join product_keys on anchors.anchor_product_key = product_keys.product_key
    where product_keys.category is not null
    group by anchors.target_key, product_keys.category
),

category_affinity as (
    select
        category_shares.target_key,
        popular_keys.product_key,
        {{ weight_category }} * category_shares.share * popular_keys.category_popularity as score
    from category_shares
    inner join popular_keys
        on category_shares.category = popular_keys.category
        and popular_keys.rank_in_category <= {{ popular_per_category }}
),

bestsellers as (
    select
        targets.target_key,
        popular_keys.product_key,
        {{ weight_popular }} * popular_keys.popularity as score
    from targets
    cross join popular_keys
    where popular_keys.rank_overall <= {{ bestsellers }}
),

-- the three sources' scores added up per target and product (one aggregation, not joins of the three)
scored as (
    select
        target_key,
        product_key,
        sum(bought_together_score) as bought_together_score,
        sum(category_score) as category_score,
        sum(popularity_score) as popularity_score,
        max(reason_product_key) as reason_product_key
    from (
        select target_key, product_key, score as bought_together_score,
            cast(0 as {{ type_double() }}) as category_score, cast(0 as {{ type_double() }}) as popularity_score,
            reason_product_key
        from bought_together
        union all
        select target_key, product_key, 0, score, 0, null from category_affinity
        union all
        select target_key, product_key, 0, 0, score, null from bestsellers
    ) as candidates
    group by target_key, product_key
),

eligible as (
    select
        scored.*,
        scored.bought_together_score + scored.category_score + scored.popularity_score as score
    from scored
    inner join product_keys on scored.product_key = product_keys.product_key
    where product_keys.is_in_stock
        -- never what the customer bought before, nor what is in the cart/order itself
        and not exists (
            select 1 from bought_keys
            where bought_keys.target_key = scored.target_key and bought_keys.product_key = scored.product_key
        )
        and not exists (
            select 1 from anchors
            where anchors.target_key = scored.target_key and anchors.anchor_product_key = scored.product_key
        )
),

ranked as (
    select *
    from (
        select
            *,
            row_number() over (
                partition by target_key order by score desc, product_key asc
            ) as recommendation_rank
        from eligible
    ) as numbered
    where recommendation_rank <= {{ max_recommendations }}
),

final as (
    select
        targets.target_type,
        targets.target_id,
        targets.customer_id,
        ranked.recommendation_rank,
        product_keys.product_id,
        {{ round_double('ranked.score', 6) }} as score,
        case
            when ranked.bought_together_score >= greatest(ranked.category_score, ranked.popularity_score)
                then 'bought_together'
            when ranked.category_score >= ranked.popularity_score then 'category'
            else 'popular'
        end as reason,
        anchor_keys.product_id as reason_product_id,
        anchor_keys.product_name as reason_product_name,
        product_keys.category as reason_category
    from ranked
    inner join targets on ranked.target_key = targets.target_key
    inner join product_keys on ranked.product_key = product_keys.product_key
    left join product_keys as anchor_keys
        on anchor_keys.product_key = case
            when ranked.bought_together_score >= greatest(ranked.category_score, ranked.popularity_score)
                then ranked.reason_product_key
        end
)

select * from final
