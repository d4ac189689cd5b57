using System.Security.Cryptography;
using System.Text.Json;
using Airlock.Core.Storage;
using Microsoft.Data.Sqlite;

namespace Airlock.Storage;

/// <summary>Tenants and API keys. Keys are stored as SHA-256 only; a deleted tenant stays as a row (its sandboxes and audit records name it).</summary>
public sealed partial class SqliteStore
{
    private const string SelectTenant = "SELECT tenant_id, name, created_at, quotas, deleted_at FROM tenants";

    private const string SelectKey = "SELECT key_id, tenant_id, key_hash, name, created_at, scope, expires_at, last_used_at, revoked_at FROM api_keys";

    public Task<Tenant> CreateTenantAsync(string name, CancellationToken cancellationToken) =>
        CreateTenantAsync(name, TenantQuotas.None, cancellationToken);

    public async Task<Tenant> CreateTenantAsync(string name, TenantQuotas quotas, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(quotas);
        var tenant = new Tenant("t_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)), name, _time.GetUtcNow()) { Quotas = quotas };
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "INSERT INTO tenants (tenant_id, name, created_at, quotas) VALUES ($id, $name, $at, $quotas)";
        command.Parameters.AddWithValue("$id", tenant.TenantId);
        command.Parameters.AddWithValue("$name", tenant.Name);
        command.Parameters.AddWithValue("$at", Format(tenant.CreatedAt));
        command.Parameters.AddWithValue("$quotas", JsonSerializer.Serialize(quotas, StorageJsonContext.Default.TenantQuotas));
        await command.ExecuteNonQueryAsync(cancellationToken);
        return tenant;
    }

    /// <summary>Every tenant ever created, deleted ones included (with <see cref="Tenant.DeletedAt"/>), oldest first.</summary>
    public async Task<IReadOnlyList<Tenant>> ListTenantsAsync(CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = SelectTenant + " ORDER BY created_at, tenant_id";
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var tenants = new List<Tenant>();
        while (await reader.ReadAsync(cancellationToken))
        {
            tenants.Add(ReadTenant(reader));
        }

        return tenants;
    }

    public async Task<Tenant?> GetTenantAsync(string tenantId, CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = SelectTenant + " WHERE tenant_id = $id";
        command.Parameters.AddWithValue("$id", tenantId);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? ReadTenant(reader) : null;
    }

    public async Task<bool> SetTenantQuotasAsync(string tenantId, TenantQuotas quotas, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(quotas);
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "UPDATE tenants SET quotas = $quotas WHERE tenant_id = $id AND deleted_at IS NULL";
        command.Parameters.AddWithValue("$id", tenantId);
        command.Parameters.AddWithValue("$quotas", JsonSerializer.Serialize(quotas, StorageJsonContext.Default.TenantQuotas));
        return await command.ExecuteNonQueryAsync(cancellationToken) == 1;
    }

    public async Task<bool> DeleteTenantAsync(string tenantId, DateTimeOffset at, CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var transaction = connection.BeginTransaction(deferred: false);
        await using (var delete = connection.CreateCommand())
        {
            delete.Transaction = transaction;
            delete.CommandText = "UPDATE tenants SET deleted_at = $at WHERE tenant_id = $id AND deleted_at IS NULL";
            delete.Parameters.AddWithValue("$id", tenantId);
            delete.Parameters.AddWithValue("$at", Format(at));
            if (await delete.ExecuteNonQueryAsync(cancellationToken) != 1)
            {
                return false;
            }
        }

        await using (var revoke = connection.CreateCommand())
        {
            revoke.Transaction = transaction;
            revoke.CommandText = "UPDATE api_keys SET revoked_at = $at WHERE tenant_id = $id AND revoked_at IS NULL";
            revoke.Parameters.AddWithValue("$id", tenantId);
            revoke.Parameters.AddWithValue("$at", Format(at));
            await revoke.ExecuteNonQueryAsync(cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
        return true;
    }

    public async Task AddApiKeyAsync(ApiKeyRecord key, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(key);
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = """
            INSERT INTO api_keys (key_id, tenant_id, key_hash, name, created_at, scope, expires_at)
            VALUES ($id, $tenant, $hash, $name, $at, $scope, $expires)
            """;
        command.Parameters.AddWithValue("$id", key.KeyId);
        command.Parameters.AddWithValue("$tenant", key.TenantId);
        command.Parameters.AddWithValue("$hash", key.KeyHash);
        command.Parameters.AddWithValue("$name", key.Name);
        command.Parameters.AddWithValue("$at", Format(key.CreatedAt));
        command.Parameters.AddWithValue("$scope", key.Scope.Name());
        command.Parameters.AddWithValue("$expires", key.ExpiresAt is { } expires ? Format(expires) : DBNull.Value);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    public Task<ApiKeyRecord?> FindApiKeyByHashAsync(string keyHash, CancellationToken cancellationToken) =>
        FindKeyAsync("key_hash", keyHash, cancellationToken);

    public Task<ApiKeyRecord?> GetApiKeyAsync(string keyId, CancellationToken cancellationToken) =>
        FindKeyAsync("key_id", keyId, cancellationToken);

    public async Task<IReadOnlyList<ApiKeyRecord>> ListApiKeysAsync(string? tenantId, CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = SelectKey + (tenantId is null ? "" : " WHERE tenant_id = $tenant") + " ORDER BY created_at, key_id";
        if (tenantId is not null)
        {
            command.Parameters.AddWithValue("$tenant", tenantId);
        }

        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var keys = new List<ApiKeyRecord>();
        while (await reader.ReadAsync(cancellationToken))
        {
            keys.Add(ReadKey(reader));
        }

        return keys;
    }

    public async Task<bool> RevokeApiKeyAsync(string keyId, DateTimeOffset at, CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "UPDATE api_keys SET revoked_at = $at WHERE key_id = $id AND revoked_at IS NULL";
        command.Parameters.AddWithValue("$id", keyId);
        command.Parameters.AddWithValue("$at", Format(at));
        return await command.ExecuteNonQueryAsync(cancellationToken) == 1;
    }

    public async Task<bool> RotateApiKeyAsync(string keyId, string newKeyHash, CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "UPDATE api_keys SET key_hash = $hash, last_used_at = NULL WHERE key_id = $id AND revoked_at IS NULL";
        command.Parameters.AddWithValue("$id", keyId);
        command.Parameters.AddWithValue("$hash", newKeyHash);
        return await command.ExecuteNonQueryAsync(cancellationToken) == 1;
    }

    public async Task TouchApiKeyAsync(string keyId, DateTimeOffset at, CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "UPDATE api_keys SET last_used_at = $at WHERE key_id = $id";
        command.Parameters.AddWithValue("$id", keyId);
        command.Parameters.AddWithValue("$at", Format(at));
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private async Task<ApiKeyRecord?> FindKeyAsync(string column, string value, CancellationToken cancellationToken)
    {
        await using var connection = await OpenConnectionAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = SelectKey + $" WHERE {column} = $value";
        command.Parameters.AddWithValue("$value", value);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? ReadKey(reader) : null;
    }

    private static Tenant ReadTenant(SqliteDataReader r) => new(r.GetString(0), r.GetString(1), Parse(r.GetString(2)))
    {
        Quotas = r.IsDBNull(3) ? TenantQuotas.None : JsonSerializer.Deserialize(r.GetString(3), StorageJsonContext.Default.TenantQuotas) ?? TenantQuotas.None,
        DeletedAt = r.IsDBNull(4) ? null : Parse(r.GetString(4)),
    };

    private static ApiKeyRecord ReadKey(SqliteDataReader r) => new(r.GetString(0), r.GetString(1), r.GetString(2), r.GetString(3), Parse(r.GetString(4)))
    {
        // An unknown scope (a newer airlockd's) reads as the weakest, never as a stronger one.
        Scope = ApiKeyScopes.TryParse(r.GetString(5), out var scope) ? scope : ApiKeyScope.ReadOnly,
        ExpiresAt = r.IsDBNull(6) ? null : Parse(r.GetString(6)),
        LastUsedAt = r.IsDBNull(7) ? null : Parse(r.GetString(7)),
        RevokedAt = r.IsDBNull(8) ? null : Parse(r.GetString(8)),
    };
}
