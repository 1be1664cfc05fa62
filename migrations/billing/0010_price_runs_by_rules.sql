-- Device time is priced by the billing rule for `device_time` that applies
-- to a run's tenant when it started (docs/billing.md, "Rules"), fixed on
-- the run at its first charge with the rule's pricing (a rule's pricing is
-- never edited, but the copy keeps each run's price whole even if the rule
-- is retired). Without a rule, the default price an hour, as before.
ALTER TABLE metered_runs ADD COLUMN pricing jsonb, ADD COLUMN rule_id uuid;
