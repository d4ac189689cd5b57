using Airlock.Core.Storage;
using Microsoft.AspNetCore.Http;

namespace Airlock.Server.Auth;

/// <summary>Who is calling: the API key that authenticated the request, its tenant and its scope.</summary>
public sealed record ApiCaller(string KeyId, string TenantId, ApiKeyScope Scope)
{
    private const string Item = "airlock.caller";
    private static readonly AsyncLocal<RequestScope?> Ambient = new();

    /// <summary>
    /// The caller of the request this code runs for, flowing with the execution context from the authentication step
    /// to wherever an audit record is appended (so lifecycle signatures need not carry it). Only while that request
    /// runs: a timer or watcher it armed (a sandbox's timeout, its exit watcher) captures the execution context too,
    /// but what those do later is airlockd's own doing, and they see null.
    /// </summary>
    public static ApiCaller? Current => Ambient.Value is { Ended: false } scope ? scope.Caller : null;

    public bool IsAdmin => Scope == ApiKeyScope.Admin;

    /// <summary>Makes <paramref name="caller"/> current for the rest of this async flow, until the returned scope is disposed.</summary>
    internal static IDisposable Enter(ApiCaller caller)
    {
        var scope = new RequestScope(caller);
        Ambient.Value = scope;
        return scope;
    }

    public static ApiCaller Of(HttpContext context) =>
        context.Items.TryGetValue(Item, out var value) && value is ApiCaller caller ? caller : throw new InvalidOperationException("the request was not authenticated");

    internal void AttachTo(HttpContext context) => context.Items[Item] = this;

    private sealed class RequestScope(ApiCaller caller) : IDisposable
    {
        private volatile bool _ended;

        public ApiCaller Caller { get; } = caller;

        public bool Ended => _ended;

        public void Dispose() => _ended = true;
    }
}
