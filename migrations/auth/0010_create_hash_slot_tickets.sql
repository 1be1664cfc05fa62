-- Hashing slots (handlers/hashing.rs): a login that finds every slot busy
-- takes the next ticket and waits on slot ticket % slots, so waiters spread
-- over the slots in turn and each slot's lock queue serves them in order.
CREATE SEQUENCE hash_slot_tickets AS bigint CYCLE;
