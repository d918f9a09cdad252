-- scriptbox service store, version 2 (PostgreSQL): callbacks. The same
-- columns and rules as SQLite's 0002: callback_state is NULL until the run
-- ends, 'pending' while a delivery is due or being retried, then
-- 'delivered' or 'failed'; callback_attempts is the JSON array of every
-- attempt; callback_next_at (ms) is when the next attempt is due (a node
-- taking a delivery pushes it forward as a lease, so a node that dies
-- mid-delivery leaves it due again for any other).

ALTER TABLE runs ADD COLUMN callback_state TEXT;
ALTER TABLE runs ADD COLUMN callback_attempts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN callback_next_at BIGINT;

CREATE INDEX runs_callbacks_due ON runs (callback_next_at) WHERE callback_state = 'pending';

CREATE TABLE tenant_secrets (
    tenant      TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Every way a run ends (finished by a worker, cancelled while queued, lost
-- by lease expiry, rejected at submission) makes its callback due, here in
-- one place so that no path can forget it. A run queued again after it was
-- lost (retry_on_lost) is not ended, so nothing is due then.
CREATE FUNCTION sbx_callback_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.callback_url IS NOT NULL AND NEW.status NOT IN ('queued', 'running')
       AND (TG_OP = 'INSERT' OR OLD.status IN ('queued', 'running')) THEN
        NEW.callback_state := 'pending';
        NEW.callback_next_at := COALESCE(NEW.finished_at, NEW.created_at);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER runs_callback_due_on_insert BEFORE INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION sbx_callback_due();
CREATE TRIGGER runs_callback_due_on_end BEFORE UPDATE OF status ON runs
    FOR EACH ROW EXECUTE FUNCTION sbx_callback_due();
