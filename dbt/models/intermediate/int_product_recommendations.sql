-- One row per product and recommended product: complementary products customers bought together with it
-- (co-purchases in one order), falling back to products of the same category; in-stock products only.
-- Ranked by how many orders bought the pair (co-purchases always before category fallbacks).
with order_items as (
    select * from {{ ref('stg_order_items') }}
),

products as (
    select * from {{ ref('stg_products') }}
),

order_products as (
    select distinct order_id, product_id from order_items
),

co_purchases as (
    select
        this.product_id,
        other.product_id as recommended_product_id,
        count(*) as n_orders_together
    from order_products as this
    inner join order_products as other
        on this.order_id = other.order_id
        and this.product_id <> other.product_id
    group by this.product_id, other.product_id
),

same_category as (
    select
        this.product_id,
        other.product_id as recommended_product_id,
        0 as n_orders_together
    from products as this
    inner join products as other
        on this.category = other.category
        and this.product_id <> other.product_id
),

combined as (
    select *, 1 as source_rank from co_purchases
    union all
    select *, 2 as source_rank from same_category
),

in_stock as (
    select
        combined.product_id,
        combined.recommended_product_id,
        min(combined.source_rank) as source_rank,
        max(combined.n_orders_together) as n_orders_together
    from combined
    inner join products on combined.recommended_product_id = products.product_id
    where products.is_in_stock
    group by combined.product_id, combined.recommended_product_id
),

final as (
    select
        product_id,
        recommended_product_id,
        source_rank,
        n_orders_together,
        row_number() over (
            partition by product_id
            order by source_rank, n_orders_together desc, recommended_product_id
        ) as recommendation_rank
    from in_stock
    qualify recommendation_rank <= 6
)

select * from final
