-- principald SQLite schema, version 13: nodes and workload entries.
-- * principals.type admits 'node' (a host running `principald agent`). SQLite cannot change a CHECK constraint in
--   place, so the table is rebuilt as SQLite's documentation describes (the migration runs with foreign keys off and
--   checks them before it commits).
-- * workloads: one row per workload entry; its id is also its principal's id. Listed by node for the agents.

CREATE TABLE principals_new (
    id            TEXT PRIMARY KEY,
    type          TEXT NOT NULL CHECK (type IN ('admin', 'worker', 'user', 'service', 'node')),
    status        TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    description   TEXT NOT NULL,
    email         TEXT,
    status_reason TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    generation    INTEGER NOT NULL DEFAULT 0
) STRICT;

INSERT INTO principals_new (id, type, status, description, email, status_reason, created_at, updated_at, generation)
    SELECT id, type, status, description, email, status_reason, created_at, updated_at, generation FROM principals;
DROP TABLE principals;
ALTER TABLE principals_new RENAME TO principals;
CREATE INDEX principals_by_type_status ON principals (type, status, id);
CREATE INDEX principals_by_status ON principals (status, id);

CREATE TABLE workloads (
    id          TEXT PRIMARY KEY REFERENCES principals (id),
    node        TEXT NOT NULL REFERENCES principals (id),
    type        TEXT NOT NULL,
    selectors   TEXT NOT NULL,
    ttl_seconds INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX workloads_by_node ON workloads (node, id);
