using System.Collections.Concurrent;
using Airlock.Core.Storage;
using Microsoft.AspNetCore.Http;

namespace Airlock.Server.Auth;

/// <summary>
/// Resolves the caller of a request from its API key (<c>X-API-Key</c>, or <c>Authorization: Bearer</c>). There is
/// no cache of positive answers: every request reads the key's row (one indexed lookup by hash) and checks revocation
/// and expiry against now, so a key revoked, rotated or expired — on this node or any other sharing the store — fails
/// on its next request.
/// </summary>
internal sealed class ApiKeyAuthenticator(IStore store, ITenantStore tenants, TimeProvider time)
{
    /// <summary>How stale <c>lastUsedAt</c> may be: at most one write per key per interval, not one per request.</summary>
    public static readonly TimeSpan LastUsedResolution = TimeSpan.FromMinutes(1);

    private readonly ConcurrentDictionary<string, DateTimeOffset> _touched = new(StringComparer.Ordinal);

    public static string? PresentedKey(HttpRequest request)
    {
        var key = request.Headers["X-API-Key"].ToString();
        if (string.IsNullOrEmpty(key))
        {
            var authorization = request.Headers.Authorization.ToString();
            if (authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            {
                key = authorization["Bearer ".Length..].Trim();
            }
        }

        return string.IsNullOrEmpty(key) || key.Length > 256 ? null : key;
    }

    public async ValueTask<ApiCaller?> AuthenticateAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        var key = PresentedKey(request);
        return key is null ? null : await AuthenticateAsync(key, cancellationToken);
    }

    public async ValueTask<ApiCaller?> AuthenticateAsync(string key, CancellationToken cancellationToken)
    {
        var record = await store.FindApiKeyByHashAsync(ApiKeys.Hash(key), cancellationToken);
        var now = time.GetUtcNow();
        if (record is null || !record.IsValidAt(now))
        {
            return null;
        }

        if (!_touched.TryGetValue(record.KeyId, out var last) || now - last >= LastUsedResolution)
        {
            _touched[record.KeyId] = now;
            await tenants.TouchApiKeyAsync(record.KeyId, now, cancellationToken);
        }

        return new ApiCaller(record.KeyId, record.TenantId, record.Scope);
    }
}
