-- scriptbox service store, version 1 (SQLite).
-- Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('submit', 'admin')),
    hash        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE runs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    tenant           TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    filename         TEXT NOT NULL,
    script           BLOB NOT NULL,
    script_sha256    TEXT NOT NULL,
    stdin            BLOB,
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
    lease_until      INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    retry_on_lost    INTEGER NOT NULL DEFAULT 0,
    callback_url     TEXT,
    UNIQUE (tenant, idempotency_key)
);

CREATE INDEX runs_by_status ON runs (status, seq);
CREATE INDEX runs_by_tenant ON runs (tenant, seq);
CREATE INDEX runs_by_finish ON runs (finished_at);
CREATE INDEX runs_by_tenant_start ON runs (tenant, started_at);

CREATE TABLE run_labels (
    run_id  TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE INDEX run_labels_by_pair ON run_labels (key, value);

CREATE TABLE run_output (
    run_id  TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    stream  TEXT NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- How many runs each tenant has queued, kept by triggers, so admission
-- and claiming read a count instead of scanning the queue.
CREATE TABLE queue_counts (
    tenant  TEXT PRIMARY KEY,
    queued  INTEGER NOT NULL
);

CREATE TRIGGER runs_queued_insert AFTER INSERT ON runs WHEN NEW.status = 'queued'
BEGIN
    INSERT INTO queue_counts (tenant, queued) VALUES (NEW.tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET queued = queued + 1;
END;

CREATE TRIGGER runs_queued_leave AFTER UPDATE OF status ON runs
    WHEN OLD.status = 'queued' AND NEW.status != 'queued'
BEGIN
    UPDATE queue_counts SET queued = queued - 1 WHERE tenant = OLD.tenant;
END;

CREATE TRIGGER runs_queued_enter AFTER UPDATE OF status ON runs
    WHEN OLD.status != 'queued' AND NEW.status = 'queued'
BEGIN
    INSERT INTO queue_counts (tenant, queued) VALUES (NEW.tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET queued = queued + 1;
END;

CREATE TRIGGER runs_queued_delete AFTER DELETE ON runs WHEN OLD.status = 'queued'
BEGIN
    UPDATE queue_counts SET queued = queued - 1 WHERE tenant = OLD.tenant;
END;
