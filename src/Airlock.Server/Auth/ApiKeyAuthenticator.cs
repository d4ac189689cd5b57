using System.Collections.Concurrent;
using Airlock.Core.Storage;
using Microsoft.AspNetCore.Http;

namespace Airlock.Server.Auth;

/// <summary>Resolves the tenant of a request from its API key (<c>X-API-Key</c>, or <c>Authorization: Bearer</c>).</summary>
internal sealed class ApiKeyAuthenticator(IStore store)
{
    private readonly ConcurrentDictionary<string, string> _tenantByHash = new(StringComparer.Ordinal);

    public async ValueTask<string?> AuthenticateAsync(HttpRequest request, CancellationToken cancellationToken)
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

        if (string.IsNullOrEmpty(key) || key.Length > 256)
        {
            return null;
        }

        var hash = ApiKeys.Hash(key);
        if (_tenantByHash.TryGetValue(hash, out var tenant))
        {
            return tenant;
        }

        var record = await store.FindApiKeyByHashAsync(hash, cancellationToken);
        if (record is null)
        {
            return null;
        }

        _tenantByHash[hash] = record.TenantId;
        return record.TenantId;
    }
}
