using Airlock.Server.Api;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Airlock.Server.Auth;

/// <summary>The authentication and scope step of airlockd's pipeline, for the control API and for envd routes.</summary>
internal static class AuthenticationStep
{
    /// <summary>Control API: 401 without a valid key, 403 outside the key's scope; otherwise the caller rides along (items and <see cref="ApiCaller.Current"/>).</summary>
    public static async Task ControlAsync(HttpContext context, Func<Task> next)
    {
        var path = context.Request.Path;
        if (path == "/health" || path.StartsWithSegments("/openapi"))
        {
            await next();
            return;
        }

        var caller = await context.RequestServices.GetRequiredService<ApiKeyAuthenticator>().AuthenticateAsync(context.Request, context.RequestAborted);
        if (caller is null)
        {
            await ApiProblem.WriteAsync(context, 401, "unauthorized", "Missing, invalid, expired or revoked API key (send it as X-API-Key).");
            return;
        }

        if (ScopeRules.DenyControl(caller, context.Request) is { } reason)
        {
            await ApiProblem.WriteAsync(context, 403, "forbidden", reason);
            return;
        }

        context.Items[ControlApi.TenantItem] = caller.TenantId;
        caller.AttachTo(context);
        using (ApiCaller.Enter(caller))
        {
            await next();
        }
    }

    /// <summary>
    /// envd routes authenticate with the sandbox's access token, not an API key. An API key sent along anyway only
    /// narrows: a read-only key's envd call that writes is refused (403) here, and read-only keys are never shown an
    /// access token (<see cref="HidesAccessToken"/>). Returns whether the request was answered.
    /// </summary>
    public static async Task<bool> DeniedEnvdAsync(HttpContext context)
    {
        if (ApiKeyAuthenticator.PresentedKey(context.Request) is not { } key
            || await context.RequestServices.GetRequiredService<ApiKeyAuthenticator>().AuthenticateAsync(key, context.RequestAborted) is not { } caller
            || ScopeRules.DenyEnvd(caller, context.Request) is not { } reason)
        {
            return false;
        }

        await ApiProblem.WriteAsync(context, 403, "forbidden", reason);
        return true;
    }

    /// <summary>Whether sandbox details for this caller leave out the envd access token (read-only keys: the token would let them write).</summary>
    public static bool HidesAccessToken(HttpContext context) => ApiCaller.Of(context).Scope == Core.Storage.ApiKeyScope.ReadOnly;
}
