-- scriptbox service store, version 2 (SQLite): callbacks.
--
-- A run submitted with a callback_url gets its final record POSTed there
-- when it ends. callback_state is NULL until then, 'pending' while a
-- delivery is due or being retried, then 'delivered' or 'failed'.
-- callback_attempts is the JSON array of every attempt made (kept on the
-- record); callback_next_at is when the next attempt is due (a worker
-- taking a delivery pushes it forward as a lease, so a server that dies
-- mid-delivery retries it at its next start).

ALTER TABLE runs ADD COLUMN callback_state TEXT;
ALTER TABLE runs ADD COLUMN callback_attempts TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN callback_next_at INTEGER;

CREATE INDEX runs_callbacks_due ON runs (callback_next_at) WHERE callback_state = 'pending';

-- Each tenant's secret for signing its callbacks (HMAC needs the secret
-- itself, so it is stored, unlike tokens).
CREATE TABLE tenant_secrets (
    tenant      TEXT PRIMARY KEY,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- Every way a run ends (finished by its worker, cancelled while queued,
-- lost at a restart, rejected at submission) makes its callback due, here
-- in one place so that no path can forget it.
CREATE TRIGGER runs_callback_due_on_end AFTER UPDATE OF status ON runs
    WHEN NEW.callback_url IS NOT NULL AND OLD.status IN ('queued', 'running')
         AND NEW.status NOT IN ('queued', 'running')
BEGIN
    UPDATE runs SET callback_state = 'pending', callback_next_at = COALESCE(NEW.finished_at, 0)
        WHERE seq = NEW.seq;
END;

CREATE TRIGGER runs_callback_due_on_insert AFTER INSERT ON runs
    WHEN NEW.callback_url IS NOT NULL AND NEW.status NOT IN ('queued', 'running')
BEGIN
    UPDATE runs SET callback_state = 'pending', callback_next_at = NEW.created_at
        WHERE seq = NEW.seq;
END;
