using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;

namespace Airlock.Core.Storage;

public sealed record Tenant(string TenantId, string Name, DateTimeOffset CreatedAt)
{
    /// <summary>This tenant's own limits; what is unset falls back to the server's per-tenant defaults.</summary>
    public TenantQuotas Quotas { get; init; } = TenantQuotas.None;

    /// <summary>Set once the tenant is deleted (rows stay: its sandboxes and audit records name it).</summary>
    public DateTimeOffset? DeletedAt { get; init; }
}

/// <summary>A stored API key: its SHA-256 only, never the secret.</summary>
public sealed record ApiKeyRecord(string KeyId, string TenantId, string KeyHash, string Name, DateTimeOffset CreatedAt)
{
    public ApiKeyScope Scope { get; init; } = ApiKeyScope.Tenant;
    public DateTimeOffset? ExpiresAt { get; init; }
    public DateTimeOffset? LastUsedAt { get; init; }
    public DateTimeOffset? RevokedAt { get; init; }

    /// <summary>Whether the key authenticates at <paramref name="now"/>: not revoked and not expired.</summary>
    public bool IsValidAt(DateTimeOffset now) => RevokedAt is null && (ExpiresAt is not { } expires || now < expires);
}

/// <summary>Persistent state: tenants, keys, sandboxes, audit. Every sandbox query is tenant-scoped.</summary>
public interface IStore : IAsyncDisposable
{
    Task MigrateAsync(CancellationToken cancellationToken);

    Task<Tenant> CreateTenantAsync(string name, CancellationToken cancellationToken);
    Task<IReadOnlyList<Tenant>> ListTenantsAsync(CancellationToken cancellationToken);
    Task AddApiKeyAsync(ApiKeyRecord key, CancellationToken cancellationToken);
    Task<ApiKeyRecord?> FindApiKeyByHashAsync(string keyHash, CancellationToken cancellationToken);

    Task InsertSandboxAsync(SandboxRecord sandbox, CancellationToken cancellationToken);
    Task UpdateSandboxAsync(SandboxRecord sandbox, CancellationToken cancellationToken);
    Task<SandboxRecord?> GetSandboxAsync(string tenantId, string sandboxId, CancellationToken cancellationToken);
    /// <summary>Unscoped lookup for internal use (reconcile, routing after token check).</summary>
    Task<SandboxRecord?> GetSandboxAnyTenantAsync(string sandboxId, CancellationToken cancellationToken);
    Task<IReadOnlyList<SandboxRecord>> ListSandboxesAsync(string? tenantId, IReadOnlyCollection<SandboxState>? states, CancellationToken cancellationToken);

    /// <summary>Appends one audit record atomically with its chain link (serialised per store).</summary>
    Task<AuditRecord> AppendAuditAsync(AuditEntry entry, DateTimeOffset time, Func<AuditRecord?, DateTimeOffset, AuditEntry, AuditRecord> link, CancellationToken cancellationToken);
    IAsyncEnumerable<AuditRecord> ReadAuditAsync(long afterSeq, string? tenantId, CancellationToken cancellationToken);
    /// <summary>One sandbox's audit records of this tenant, oldest first (its lifecycle log), by index.</summary>
    IAsyncEnumerable<AuditRecord> ReadSandboxAuditAsync(string tenantId, string sandboxId, CancellationToken cancellationToken);
}
