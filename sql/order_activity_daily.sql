-- How many orders were created, last updated and cancelled on each UTC day, by state?
-- One row per UTC day and current order state with at least one of the three. Only each
-- order's latest version is kept, so "last updated" counts an order on the day of its latest
-- change only, and state is the order's state now, not on that day.
-- Days are cut in UTC whatever the session's time zone (AT TIME ZONE 'UTC' gives the UTC
-- wall-clock time); count(case ...) rather than FILTER or sum() keeps it portable and BIGINT.
create or replace view order_activity_daily as
with events as (
    select cast(created_utc at time zone 'UTC' as date) as day, state, 'created' as event
    from product_service_orders
    union all
    select cast(updated_utc at time zone 'UTC' as date), state, 'updated'
    from product_service_orders
    union all
    select cast(cancelled_utc at time zone 'UTC' as date), state, 'cancelled'
    from product_service_orders
    where cancelled_utc is not null
)
select
    day,
    state,
    count(case when event = 'created' then 1 end) as orders_created,
    count(case when event = 'updated' then 1 end) as orders_last_updated,
    count(case when event = 'cancelled' then 1 end) as orders_cancelled
from events
group by day, state;
