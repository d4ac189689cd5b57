-- Airlock schema v1: tenants, hashed API keys, sandboxes, the append-only audit chain.
CREATE TABLE tenants (
    tenant_id  TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE api_keys (
    key_id     TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(tenant_id),
    key_hash   TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE sandboxes (
    sandbox_id        TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(tenant_id),
    template_id       TEXT NOT NULL,
    boundary          TEXT NOT NULL,
    state             TEXT NOT NULL,
    failure_reason    TEXT,
    created_at        TEXT NOT NULL,
    end_at            TEXT NOT NULL,
    access_token_hash TEXT NOT NULL,
    access_token      TEXT,
    metadata          TEXT NOT NULL,
    env_vars          TEXT NOT NULL,
    report            TEXT,
    network           TEXT,
    limits            TEXT NOT NULL,
    host_pid          INTEGER,
    on_timeout        TEXT NOT NULL
);
CREATE INDEX sandboxes_tenant_state ON sandboxes(tenant_id, state);

CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    time       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    tenant_id  TEXT,
    sandbox_id TEXT,
    data       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_tenant ON audit(tenant_id, seq);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
