-- Addresses that belong to more than one customer id (newest version of each customer). Not an error in
-- itself (a guest checkout and a later account, a shared family address), but every mail decision is per
-- customer id while consent and suppression are per address: worth a look. Flagged by a warning test.
select
    email,
    count(*) as n_customer_ids,
    {{ sorted_text_list('customer_id') }} as customer_ids,
    count(*) filter (where is_guest) as n_guest_accounts
from {{ ref('stg_customers') }}
group by email
having count(*) > 1
