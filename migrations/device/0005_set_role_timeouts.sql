-- No request may hold a lock for long: a statement that runs for 30 s is
-- cancelled, and a transaction left open and idle for 10 s (a host bug, an
-- instance killed mid-request, Spin's pool returning a connection with BEGIN
-- still open) is ended by the server, releasing its locks for every other
-- replica. A pooled connection idle for 5 minutes is closed, so the idle
-- pool of one replica does not keep the role's CONNECTION LIMIT from the
-- others. Set on the owning role (the component's only login), so every
-- session of the component gets them.
ALTER ROLE CURRENT_USER SET statement_timeout = '30s';
ALTER ROLE CURRENT_USER SET idle_in_transaction_session_timeout = '10s';
ALTER ROLE CURRENT_USER SET idle_session_timeout = '300s';
