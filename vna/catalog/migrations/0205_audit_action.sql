-- The audit trail searched by action (`vna audit --action`, the console's audit search, its
-- list of fixity checks), newest first: without it, a search for a rare action reads the
-- whole trail.
CREATE INDEX audit_action ON audit (action, at);
