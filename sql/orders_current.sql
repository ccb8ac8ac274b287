-- Which orders exist now, for which service and enterprise, and how many notes each has?
-- One row per product service order in its latest synced version, canceled ones included
-- (filter on state). service_name, enterprise_id and enterprise_name are null for an order
-- whose service (or its enterprise) is not synced. gross_total is the sum of the gross amounts
-- of the order's items that are not Canceled (rebates lower it), in currency, the currency of
-- its items (one per order: the enterprise's); both are null for an order without items, and
-- gross_total is null should an order's items ever be in several currencies.
create or replace view orders_current as
select
    o.id,
    o.number,
    o.state,
    o.origin,
    o.service_id,
    s.name as service_name,
    s.enterprise_id,
    e.name as enterprise_name,
    o.account_id,
    o.account_type,
    o.linked_reservation_id,
    o.created_utc,
    o.updated_utc,
    o.cancelled_utc,
    coalesce(n.note_count, 0) as note_count,
    t.currency,
    t.gross_total
from product_service_orders as o
left join services as s on s.id = o.service_id
left join enterprises as e on e.id = s.enterprise_id
left join (
    select service_order_id, count(*) as note_count
    from service_order_notes
    group by service_order_id
) as n on n.service_order_id = o.id
left join (
    select
        service_order_id,
        case when count(distinct amount__currency) = 1 then max(amount__currency) end
            as currency,
        case when count(distinct amount__currency) = 1 then sum(
            case when accounting_state <> 'Canceled' then amount__gross_value else 0 end
        ) end as gross_total
    from order_items
    group by service_order_id
) as t on t.service_order_id = o.id;
