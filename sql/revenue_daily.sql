-- What did each hotel earn per local day, by service and product, in its own currency?
-- One row per enterprise, local day of consumption, service, product and currency with at
-- least one item. Every order item that is not Canceled counts (Open, Closed and Inactive
-- alike), rebates included: a ProductOrderRebate has negative amounts and the product of the
-- item it rebates, so it lowers that product's revenue on the day the rebate was consumed.
-- A day is cut at midnight in the enterprise's time zone, as in order_activity_local_daily;
-- an item whose enterprise is not synced counts on its UTC day. Amounts are exact decimals,
-- summed per currency, never converted: filter or group by currency.
create or replace view revenue_daily as
with items as (
    select
        i.enterprise_id,
        e.name as enterprise_name,
        coalesce(e.time_zone_identifier, 'UTC') as time_zone,
        i.consumed_utc,
        i.service_id,
        i.product_id,
        i.amount__currency as currency,
        i.amount__net_value as net_value,
        i.amount__gross_value as gross_value
    from order_items as i
    left join enterprises as e on e.id = i.enterprise_id
    where i.accounting_state <> 'Canceled'
)
select
    cast(i.consumed_utc at time zone i.time_zone as date) as day,
    i.enterprise_id,
    i.enterprise_name,
    i.time_zone,
    i.service_id,
    s.name as service_name,
    i.product_id,
    p.name as product_name,
    i.currency,
    count(*) as items,
    sum(i.net_value) as net_value,
    sum(i.gross_value) as gross_value
from items as i
left join services as s on s.id = i.service_id
left join products as p on p.id = i.product_id
group by
    cast(i.consumed_utc at time zone i.time_zone as date),
    i.enterprise_id,
    i.enterprise_name,
    i.time_zone,
    i.service_id,
    s.name,
    i.product_id,
    p.name,
    i.currency;
