-- A run is charged, besides device time, for the cores, memory and GPU its
-- spec draws where a billing rule prices them (docs/billing.md, "Metering
-- device time"): the lines fixed at its first charge, each with its rule's
-- pricing. Null: fixed before resources were metered (device time only).
ALTER TABLE metered_runs ADD COLUMN resource_lines jsonb;
