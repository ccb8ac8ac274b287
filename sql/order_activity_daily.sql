-- How many orders were created each day, and in which state are they now?
-- One row per UTC creation day and current order state.
create or replace view mews.order_activity_daily as
select
    cast(created_utc as date) as day,
    state,
    count(*) as orders
from mews.product_service_orders
group by cast(created_utc as date), state;
