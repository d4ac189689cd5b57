using System.Text.Json;
using System.Text.Json.Serialization;

namespace Airlock.Core.Api;

// Admin API contracts: tenants and API keys (Airlock's own; E2B has no public equivalent).

/// <summary>A tenant's own limits; a field left out falls back to the server's per-tenant default.</summary>
public sealed record QuotaSettings
{
    [JsonPropertyName("maxSandboxes")] public int? MaxSandboxes { get; init; }
    [JsonPropertyName("maxMemoryMB")] public int? MaxMemoryMB { get; init; }
    [JsonPropertyName("maxVCpus")] public int? MaxVCpus { get; init; }
}

/// <summary>POST /tenants body.</summary>
public sealed record NewTenantRequest
{
    [JsonPropertyName("name")] public string? Name { get; init; }
    [JsonPropertyName("quotas")] public QuotaSettings? Quotas { get; init; }
}

/// <summary>PATCH /tenants/{id} body: the quotas replace the tenant's stored ones.</summary>
public sealed record UpdateTenantRequest
{
    [JsonPropertyName("quotas")] public QuotaSettings? Quotas { get; init; }
}

public sealed record TenantInfo
{
    [JsonPropertyName("tenantID")] public required string TenantId { get; init; }
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("createdAt")] public required DateTimeOffset CreatedAt { get; init; }
    /// <summary>The tenant's own quotas (only what it overrides).</summary>
    [JsonPropertyName("quotas")] public required QuotaSettings Quotas { get; init; }
    /// <summary>What applies now: its own quotas over the server's defaults.</summary>
    [JsonPropertyName("effectiveQuotas")] public required QuotaSettings EffectiveQuotas { get; init; }
}

/// <summary>POST /keys body. <c>scope</c>: admin, tenant or read-only; expiry as <c>expiresAt</c> or <c>ttl</c> seconds, not both.</summary>
public sealed record NewApiKeyRequest
{
    /// <summary>The tenant the key acts for; the caller's own when left out.</summary>
    [JsonPropertyName("tenantID")] public string? TenantId { get; init; }
    [JsonPropertyName("name")] public string? Name { get; init; }
    [JsonPropertyName("scope")] public string? Scope { get; init; }
    [JsonPropertyName("expiresAt")] public DateTimeOffset? ExpiresAt { get; init; }
    [JsonPropertyName("ttl")] public long? Ttl { get; init; }
}

/// <summary>An API key as listed: never its secret.</summary>
public sealed record ApiKeyInfo
{
    [JsonPropertyName("keyID")] public required string KeyId { get; init; }
    [JsonPropertyName("tenantID")] public required string TenantId { get; init; }
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("scope")] public required string Scope { get; init; }
    [JsonPropertyName("createdAt")] public required DateTimeOffset CreatedAt { get; init; }
    [JsonPropertyName("expiresAt")] public DateTimeOffset? ExpiresAt { get; init; }
    [JsonPropertyName("lastUsedAt")] public DateTimeOffset? LastUsedAt { get; init; }
    [JsonPropertyName("revokedAt")] public DateTimeOffset? RevokedAt { get; init; }
}

/// <summary>POST /keys and POST /keys/{id}/rotate: the key and, this once, its secret.</summary>
public sealed record ApiKeyIssued
{
    [JsonPropertyName("key")] public required string Key { get; init; }
    [JsonPropertyName("apiKey")] public required ApiKeyInfo ApiKey { get; init; }
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(NewTenantRequest))]
[JsonSerializable(typeof(UpdateTenantRequest))]
[JsonSerializable(typeof(TenantInfo))]
[JsonSerializable(typeof(List<TenantInfo>))]
[JsonSerializable(typeof(NewApiKeyRequest))]
[JsonSerializable(typeof(ApiKeyInfo))]
[JsonSerializable(typeof(List<ApiKeyInfo>))]
[JsonSerializable(typeof(ApiKeyIssued))]
public sealed partial class AdminJsonContext : JsonSerializerContext;
