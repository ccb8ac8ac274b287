-- What did staff write on orders, and about which order, service and enterprise?
-- One row per note, with its order's number and current state and its service's name.
create or replace view notes_with_orders as
select
    n.id as note_id,
    n.type as note_type,
    n.text,
    n.created_utc as note_created_utc,
    o.id as order_id,
    o.number as order_number,
    o.state as order_state,
    o.created_utc as order_created_utc,
    o.service_id,
    s.name as service_name,
    s.enterprise_id,
    e.name as enterprise_name
from service_order_notes as n
join product_service_orders as o on o.id = n.service_order_id
left join services as s on s.id = o.service_id
left join enterprises as e on e.id = s.enterprise_id;
