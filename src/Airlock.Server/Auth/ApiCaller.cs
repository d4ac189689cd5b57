using Airlock.Core.Storage;
using Microsoft.AspNetCore.Http;

namespace Airlock.Server.Auth;

/// <summary>Who is calling: the API key that authenticated the request, its tenant and its scope.</summary>
public sealed record ApiCaller(string KeyId, string TenantId, ApiKeyScope Scope)
{
    private const string Item = "airlock.caller";
    private static readonly AsyncLocal<ApiCaller?> Ambient = new();

    /// <summary>
    /// The caller of the request this code runs for, flowing with the execution context from the authentication step
    /// to wherever an audit record is appended (so lifecycle signatures need not carry it). Work a request starts and
    /// that outlives it (a boot finishing in the background) still names that request's caller.
    /// </summary>
    public static ApiCaller? Current
    {
        get => Ambient.Value;
        internal set => Ambient.Value = value;
    }

    public bool IsAdmin => Scope == ApiKeyScope.Admin;

    public static ApiCaller Of(HttpContext context) =>
        context.Items.TryGetValue(Item, out var value) && value is ApiCaller caller ? caller : throw new InvalidOperationException("the request was not authenticated");

    internal void AttachTo(HttpContext context) => context.Items[Item] = this;
}
