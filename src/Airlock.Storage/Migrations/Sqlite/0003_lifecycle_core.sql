-- Lifecycle core: the node that runs a sandbox, its lifecycle settings (onTimeout, keepMemory, autoResume) and its
-- network policy.
ALTER TABLE sandboxes ADD COLUMN node_id TEXT NOT NULL DEFAULT 'local';
ALTER TABLE sandboxes ADD COLUMN lifecycle TEXT;
ALTER TABLE sandboxes ADD COLUMN network_policy TEXT;
-- A sandbox's own audit records (its logs) without scanning the tenant's whole trail.
CREATE INDEX audit_sandbox ON audit(sandbox_id, seq);
