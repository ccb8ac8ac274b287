-- How many orders were created, last updated and cancelled on each hotel's own local day?
-- By enterprise and current state.
-- One row per local day, enterprise and current order state with at least one of the three.
-- A day is cut at midnight in the enterprise's time zone (enterprises.time_zone_identifier,
-- daylight saving time included), so a breakfast ordered at 00:30 in Prague on a summer night
-- counts on that Prague day, not on the UTC day before. An order whose service or enterprise
-- is not synced has no time zone: it counts on its UTC day, with enterprise_id null.
-- "Last updated" and state are as in order_activity_daily (latest version only).
create or replace view order_activity_local_daily as
with orders as (
    select
        o.state,
        o.created_utc,
        o.updated_utc,
        o.cancelled_utc,
        e.id as enterprise_id,
        e.name as enterprise_name,
        coalesce(e.time_zone_identifier, 'UTC') as time_zone
    from product_service_orders as o
    left join services as s on s.id = o.service_id
    left join enterprises as e on e.id = s.enterprise_id
),
events as (
    select
        cast(created_utc at time zone time_zone as date) as day,
        enterprise_id, enterprise_name, time_zone, state, 'created' as event
    from orders
    where created_utc is not null
    union all
    select
        cast(updated_utc at time zone time_zone as date),
        enterprise_id, enterprise_name, time_zone, state, 'updated'
    from orders
    where updated_utc is not null
    union all
    select
        cast(cancelled_utc at time zone time_zone as date),
        enterprise_id, enterprise_name, time_zone, state, 'cancelled'
    from orders
    where cancelled_utc is not null
)
select
    day,
    enterprise_id,
    enterprise_name,
    time_zone,
    state,
    count(case when event = 'created' then 1 end) as orders_created,
    count(case when event = 'updated' then 1 end) as orders_last_updated,
    count(case when event = 'cancelled' then 1 end) as orders_cancelled
from events
group by day, enterprise_id, enterprise_name, time_zone, state;
