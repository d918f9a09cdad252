-- scriptbox service store, version 1 (PostgreSQL): the same tables as the
-- SQLite store, plus what several nodes need: per-tenant running counts for
-- cluster-wide limits, leases, a history of status changes, and
-- notifications (LISTEN/NOTIFY) so nodes wake at once instead of polling.
-- Times are milliseconds since the Unix epoch (UTC). Lease times come from
-- the database's clock, so nodes' clocks never have to agree.

CREATE FUNCTION sbx_now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE AS
    $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT $$;

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('submit', 'admin')),
    hash        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE runs (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    tenant           TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    filename         TEXT NOT NULL,
    script           BYTEA NOT NULL,
    script_sha256    TEXT NOT NULL,
    stdin            BYTEA,
    args             TEXT NOT NULL,
    policy           TEXT NOT NULL,
    policy_digest    TEXT NOT NULL,
    profile          TEXT NOT NULL,
    backend          TEXT NOT NULL,
    labels           TEXT NOT NULL,
    idempotency_key  TEXT,
    request_digest   TEXT NOT NULL,
    outcome          TEXT,
    node             TEXT,
    lease_until      BIGINT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    attempts         BIGINT NOT NULL DEFAULT 0,
    retry_on_lost    BOOLEAN NOT NULL DEFAULT FALSE,
    callback_url     TEXT,
    UNIQUE (tenant, idempotency_key)
);

CREATE INDEX runs_queued ON runs (seq) WHERE status = 'queued';
CREATE INDEX runs_running ON runs (lease_until) WHERE status = 'running';
CREATE INDEX runs_by_node ON runs (node) WHERE status = 'running';
CREATE INDEX runs_by_status ON runs (status, seq);
CREATE INDEX runs_by_tenant ON runs (tenant, seq);
CREATE INDEX runs_by_finish ON runs (finished_at);

CREATE TABLE run_labels (
    run_id  TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE INDEX run_labels_by_pair ON run_labels (key, value);

CREATE TABLE run_output (
    run_id  TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    stream  TEXT NOT NULL,
    data    BYTEA NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- Every status a run took, with the node that set it: a run's history,
-- and the proof that it ended once.
CREATE TABLE run_events (
    run_id  TEXT NOT NULL,
    at      BIGINT NOT NULL,
    status  TEXT NOT NULL,
    node    TEXT,
    attempt BIGINT NOT NULL
);

CREATE INDEX run_events_by_run ON run_events (run_id, at);

-- Per tenant: runs queued, runs running on any node, and when one last
-- started, kept by triggers. Admission and claiming read these counts, and
-- a claim locks its tenant's row, so the per-tenant running limit holds
-- across nodes.
CREATE TABLE queue_counts (
    tenant        TEXT PRIMARY KEY,
    queued        BIGINT NOT NULL DEFAULT 0,
    running       BIGINT NOT NULL DEFAULT 0,
    last_started  BIGINT
);

CREATE FUNCTION sbx_runs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN ('queued', 'running') THEN
        UPDATE queue_counts
           SET queued = queued - (OLD.status = 'queued')::int,
               running = running - (OLD.status = 'running')::int
         WHERE tenant = OLD.tenant;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        IF NEW.status IN ('queued', 'running') THEN
            INSERT INTO queue_counts AS c (tenant, queued, running, last_started)
            VALUES (NEW.tenant, (NEW.status = 'queued')::int, (NEW.status = 'running')::int,
                    CASE WHEN NEW.status = 'running' THEN NEW.started_at END)
            ON CONFLICT (tenant) DO UPDATE
               SET queued = c.queued + EXCLUDED.queued,
                   running = c.running + EXCLUDED.running,
                   last_started = GREATEST(c.last_started, EXCLUDED.last_started);
        END IF;
        INSERT INTO run_events (run_id, at, status, node, attempt)
        VALUES (NEW.id, sbx_now_ms(), NEW.status, NEW.node, NEW.attempts);
        PERFORM pg_notify('scriptbox_run', NEW.id);
        -- A queued run, or a freed running slot of its tenant: workers look.
        IF NEW.status = 'queued' OR (TG_OP = 'UPDATE' AND OLD.status = 'running') THEN
            PERFORM pg_notify('scriptbox_queue', '');
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER runs_inserted AFTER INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION sbx_runs_changed();
CREATE TRIGGER runs_deleted AFTER DELETE ON runs
    FOR EACH ROW EXECUTE FUNCTION sbx_runs_changed();
CREATE TRIGGER runs_status_changed AFTER UPDATE OF status ON runs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION sbx_runs_changed();

-- A cancel asked on any node reaches the worker running the run.
CREATE FUNCTION sbx_cancel_requested() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('scriptbox_cancel', NEW.id);
    RETURN NULL;
END $$;

CREATE TRIGGER runs_cancel_requested AFTER UPDATE OF cancel_requested ON runs
    FOR EACH ROW WHEN (NEW.cancel_requested AND NOT OLD.cancel_requested)
    EXECUTE FUNCTION sbx_cancel_requested();

-- New output wakes the streams following the run, on every node.
CREATE FUNCTION sbx_output_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('scriptbox_run', NEW.run_id);
    RETURN NULL;
END $$;

CREATE TRIGGER run_output_added AFTER INSERT ON run_output
    FOR EACH ROW EXECUTE FUNCTION sbx_output_added();
