-- Tenants and API keys: per-tenant quotas, soft delete (sandboxes and audit records keep naming the tenant), key
-- scopes, expiry, last use and revocation. Every key before v4 was the bootstrap key, which could do everything: it
-- becomes an admin key of its (the default) tenant.
ALTER TABLE tenants ADD COLUMN quotas TEXT;
ALTER TABLE tenants ADD COLUMN deleted_at TEXT;
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'tenant';
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;
ALTER TABLE api_keys ADD COLUMN revoked_at TEXT;
UPDATE api_keys SET scope = 'admin';
CREATE INDEX api_keys_tenant ON api_keys(tenant_id, created_at);
