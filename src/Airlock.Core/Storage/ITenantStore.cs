using System.Text.Json.Serialization;

namespace Airlock.Core.Storage;

/// <summary>What an API key may do, weakest first (a key may only mint keys of a scope no stronger than its own).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ApiKeyScope>))]
public enum ApiKeyScope
{
    /// <summary>GET, list, logs and metrics of its tenant's sandboxes; nothing that changes state.</summary>
    [JsonStringEnumMemberName("read-only")] ReadOnly = 0,

    /// <summary>Its tenant's sandboxes, and its tenant's keys of scope tenant or read-only.</summary>
    [JsonStringEnumMemberName("tenant")] Tenant = 1,

    /// <summary>Everything: every tenant and every key.</summary>
    [JsonStringEnumMemberName("admin")] Admin = 2,
}

public static class ApiKeyScopes
{
    public static string Name(this ApiKeyScope scope) => scope switch
    {
        ApiKeyScope.Admin => "admin",
        ApiKeyScope.Tenant => "tenant",
        _ => "read-only",
    };

    public static bool TryParse(string? text, out ApiKeyScope scope)
    {
        switch (text)
        {
            case "admin": scope = ApiKeyScope.Admin; return true;
            case "tenant": scope = ApiKeyScope.Tenant; return true;
            case "read-only": scope = ApiKeyScope.ReadOnly; return true;
            default: scope = ApiKeyScope.ReadOnly; return false;
        }
    }
}

/// <summary>A tenant's own admission limits; null fields fall back to the server's per-tenant defaults.</summary>
public sealed record TenantQuotas
{
    public static readonly TenantQuotas None = new();

    /// <summary>Sandboxes starting, running, resuming or frozen in place at once.</summary>
    public int? MaxSandboxes { get; init; }

    public int? MaxMemoryMiB { get; init; }

    public int? MaxVCpus { get; init; }
}

/// <summary>Tenants and API keys beyond what <see cref="IStore"/> needs to bootstrap: the admin API's store.</summary>
public interface ITenantStore
{
    Task<Tenant> CreateTenantAsync(string name, TenantQuotas quotas, CancellationToken cancellationToken);

    /// <summary>The tenant, deleted or not; null if it never existed.</summary>
    Task<Tenant?> GetTenantAsync(string tenantId, CancellationToken cancellationToken);

    /// <summary>Replaces a live tenant's quotas; false if there is no such live tenant.</summary>
    Task<bool> SetTenantQuotasAsync(string tenantId, TenantQuotas quotas, CancellationToken cancellationToken);

    /// <summary>Marks a live tenant deleted and revokes all its keys in one transaction; false if there is no such live tenant.</summary>
    Task<bool> DeleteTenantAsync(string tenantId, DateTimeOffset at, CancellationToken cancellationToken);

    Task<ApiKeyRecord?> GetApiKeyAsync(string keyId, CancellationToken cancellationToken);

    /// <summary>Keys (revoked ones included) of one tenant, or of all when <paramref name="tenantId"/> is null, oldest first.</summary>
    Task<IReadOnlyList<ApiKeyRecord>> ListApiKeysAsync(string? tenantId, CancellationToken cancellationToken);

    /// <summary>Revokes a key; false if there is no such key or it was revoked already.</summary>
    Task<bool> RevokeApiKeyAsync(string keyId, DateTimeOffset at, CancellationToken cancellationToken);

    /// <summary>Gives a live key a new secret (its hash): the old secret stops matching at once. False if the key is unknown or revoked.</summary>
    Task<bool> RotateApiKeyAsync(string keyId, string newKeyHash, CancellationToken cancellationToken);

    /// <summary>Records when a key was last used (callers throttle this).</summary>
    Task TouchApiKeyAsync(string keyId, DateTimeOffset at, CancellationToken cancellationToken);
}
