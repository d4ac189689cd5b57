using Airlock.Core.Storage;
using Microsoft.AspNetCore.Http;

namespace Airlock.Server.Auth;

/// <summary>
/// What each scope may call, decided once at the edge before any endpoint runs: read-only keys only read (GET and
/// HEAD on the control API, the reading RPCs of envd), and <c>/tenants</c> is for admin keys. Finer rules (which
/// tenant's keys a tenant key may manage) live in the admin API.
/// </summary>
internal static class ScopeRules
{
    // envd calls that only read: Connect RPCs are all POST, so the method alone does not tell.
    private static readonly HashSet<string> EnvdReads = new(StringComparer.Ordinal)
    {
        "/filesystem.Filesystem/Stat",
        "/filesystem.Filesystem/ListDir",
        "/filesystem.Filesystem/WatchDir",
        "/filesystem.Filesystem/CreateWatcher",
        "/filesystem.Filesystem/GetWatcherEvents",
        "/filesystem.Filesystem/RemoveWatcher",
        "/process.Process/List",
        "/process.Process/Connect",
    };

    /// <summary>Why <paramref name="caller"/> may not make this control-API request, or null if it may.</summary>
    public static string? DenyControl(ApiCaller caller, HttpRequest request)
    {
        var path = request.Path;
        if (caller.Scope == ApiKeyScope.ReadOnly && !(HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method)))
        {
            return $"A read-only API key may not {request.Method} {path}.";
        }

        if (caller.Scope == ApiKeyScope.ReadOnly && path.StartsWithSegments("/keys"))
        {
            return "A read-only API key may not list API keys.";
        }

        return path.StartsWithSegments("/tenants") && !caller.IsAdmin && !IsOwnTenant(caller, request)
            ? "Managing tenants needs an admin API key."
            : null;
    }

    /// <summary>Why <paramref name="caller"/> may not make this envd request, or null if it may.</summary>
    public static string? DenyEnvd(ApiCaller caller, HttpRequest request) =>
        caller.Scope == ApiKeyScope.ReadOnly && !(HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method) || EnvdReads.Contains(request.Path.Value ?? ""))
            ? $"A read-only API key may not call {request.Path} in a sandbox."
            : null;

    // GET /tenants/{its own id}: a tenant key may read its own tenant (its quotas).
    private static bool IsOwnTenant(ApiCaller caller, HttpRequest request) =>
        HttpMethods.IsGet(request.Method) && request.Path.Value is { } value && value == "/tenants/" + caller.TenantId;
}
