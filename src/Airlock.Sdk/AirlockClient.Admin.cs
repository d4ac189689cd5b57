using System.Net.Http.Json;
using Airlock.Core.Api;

namespace Airlock.Sdk;

/// <summary>Tenants and API keys (admin keys; a tenant key manages its own tenant's keys).</summary>
public sealed partial class AirlockClient
{
    /// <summary>Creates a tenant; quotas left out use the server's per-tenant defaults.</summary>
    public Task<TenantInfo> CreateTenantAsync(string name, QuotaSettings? quotas = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        return SendAsync(HttpMethod.Post, "tenants", JsonContent.Create(new NewTenantRequest { Name = name, Quotas = quotas }, AdminJsonContext.Default.NewTenantRequest),
            AdminJsonContext.Default.TenantInfo, cancellationToken);
    }

    public async Task<IReadOnlyList<TenantInfo>> ListTenantsAsync(CancellationToken cancellationToken = default) =>
        await SendAsync(HttpMethod.Get, "tenants", null, AdminJsonContext.Default.ListTenantInfo, cancellationToken).ConfigureAwait(false);

    public Task<TenantInfo> GetTenantAsync(string tenantId, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Get, "tenants/" + EscapeId(tenantId), null, AdminJsonContext.Default.TenantInfo, cancellationToken);

    /// <summary>Replaces a tenant's own quotas.</summary>
    public Task<TenantInfo> SetTenantQuotasAsync(string tenantId, QuotaSettings quotas, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Patch, "tenants/" + EscapeId(tenantId), JsonContent.Create(new UpdateTenantRequest { Quotas = quotas }, AdminJsonContext.Default.UpdateTenantRequest),
            AdminJsonContext.Default.TenantInfo, cancellationToken);

    /// <summary>Deletes a tenant and revokes its keys; refused (409) while it has sandboxes running or paused.</summary>
    public Task DeleteTenantAsync(string tenantId, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Delete, "tenants/" + EscapeId(tenantId), null, cancellationToken);

    /// <summary>Creates an API key; the secret is in the result and nowhere else, ever.</summary>
    public Task<ApiKeyIssued> CreateApiKeyAsync(NewApiKeyRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        return SendAsync(HttpMethod.Post, "keys", JsonContent.Create(request, AdminJsonContext.Default.NewApiKeyRequest), AdminJsonContext.Default.ApiKeyIssued, cancellationToken);
    }

    /// <summary>Keys (never secrets): the caller's tenant's, or, for an admin key, all or one tenant's.</summary>
    public async Task<IReadOnlyList<ApiKeyInfo>> ListApiKeysAsync(string? tenantId = null, CancellationToken cancellationToken = default) =>
        await SendAsync(HttpMethod.Get, tenantId is null ? "keys" : "keys?tenantId=" + Uri.EscapeDataString(tenantId), null, AdminJsonContext.Default.ListApiKeyInfo, cancellationToken).ConfigureAwait(false);

    /// <summary>Revokes a key: its next request gets 401.</summary>
    public Task RevokeApiKeyAsync(string keyId, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Delete, "keys/" + EscapeId(keyId), null, cancellationToken);

    /// <summary>Gives a key a new secret (same id, scope and tenant); the old secret stops working at once.</summary>
    public Task<ApiKeyIssued> RotateApiKeyAsync(string keyId, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Post, "keys/" + EscapeId(keyId) + "/rotate", null, AdminJsonContext.Default.ApiKeyIssued, cancellationToken);
}
