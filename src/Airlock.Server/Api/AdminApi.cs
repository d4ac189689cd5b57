using Airlock.Core.Api;
using Airlock.Core.Auditing;
using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;
using Airlock.Sandboxes;
using Airlock.Server.Auth;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Airlock.Server.Api;

/// <summary>
/// Tenants and API keys. <c>/tenants</c> needs an admin key (a tenant key may read its own tenant). A tenant key
/// manages its own tenant's keys of scope tenant or read-only; an admin key manages every key. A key of another
/// tenant answers 404, as another tenant's sandbox does. Secrets are returned once (create, rotate) and stored as
/// SHA-256 only; every change is audited with the caller's key id, never a secret.
/// </summary>
internal static class AdminApi
{
    private const int MaxNameLength = 100;
    private const long MaxTtlSeconds = 10L * 366 * 24 * 3600;

    // A tenant with one of these cannot be deleted: kill its sandboxes first (deleting never kills implicitly).
    private static readonly SandboxState[] LiveStates = [SandboxState.Creating, SandboxState.Running, SandboxState.Unresponsive, SandboxState.Pausing, SandboxState.Paused, SandboxState.Resuming];

    /// <summary>The admin API's services (the tenant store is the same SQLite store) and its JSON contracts.</summary>
    public static void AddServices(IServiceCollection services)
    {
        services.AddSingleton<ITenantStore>(sp => (ITenantStore)sp.GetRequiredService<IStore>());
        services.ConfigureHttpJsonOptions(j => j.SerializerOptions.TypeInfoResolverChain.Add(AdminJsonContext.Default));
    }

    /// <summary>Gives the quota ledger every live tenant's stored quotas (at start; PATCH keeps it current after).</summary>
    public static async Task LoadQuotasAsync(IServiceProvider services, CancellationToken cancellationToken)
    {
        var ledger = services.GetRequiredService<SandboxLifecycle>().Quota;
        foreach (var tenant in await services.GetRequiredService<IStore>().ListTenantsAsync(cancellationToken))
        {
            ledger.SetTenantQuotas(tenant.TenantId, tenant.DeletedAt is null ? tenant.Quotas : null);
        }
    }

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/tenants", CreateTenantAsync).WithName("CreateTenant").WithTags("tenants")
            .Accepts<NewTenantRequest>("application/json")
            .Produces<TenantInfo>(StatusCodes.Status201Created)
            .Produces<ApiError>(StatusCodes.Status400BadRequest)
            .Produces<ApiError>(StatusCodes.Status403Forbidden);
        app.MapGet("/tenants", ListTenantsAsync).WithName("ListTenants").WithTags("tenants")
            .Produces<List<TenantInfo>>()
            .Produces<ApiError>(StatusCodes.Status403Forbidden);
        app.MapGet("/tenants/{tenantID}", GetTenantAsync).WithName("GetTenant").WithTags("tenants")
            .Produces<TenantInfo>()
            .Produces<ApiError>(StatusCodes.Status404NotFound);
        app.MapPatch("/tenants/{tenantID}", UpdateTenantAsync).WithName("UpdateTenant").WithTags("tenants")
            .Accepts<UpdateTenantRequest>("application/json")
            .Produces<TenantInfo>()
            .Produces<ApiError>(StatusCodes.Status400BadRequest)
            .Produces<ApiError>(StatusCodes.Status404NotFound);
        app.MapDelete("/tenants/{tenantID}", DeleteTenantAsync).WithName("DeleteTenant").WithTags("tenants")
            .Produces(StatusCodes.Status204NoContent)
            .Produces<ApiError>(StatusCodes.Status404NotFound)
            .Produces<ApiError>(StatusCodes.Status409Conflict);

        app.MapPost("/keys", CreateKeyAsync).WithName("CreateApiKey").WithTags("keys")
            .Accepts<NewApiKeyRequest>("application/json")
            .Produces<ApiKeyIssued>(StatusCodes.Status201Created)
            .Produces<ApiError>(StatusCodes.Status400BadRequest)
            .Produces<ApiError>(StatusCodes.Status403Forbidden)
            .Produces<ApiError>(StatusCodes.Status404NotFound);
        app.MapGet("/keys", ListKeysAsync).WithName("ListApiKeys").WithTags("keys")
            .Produces<List<ApiKeyInfo>>()
            .Produces<ApiError>(StatusCodes.Status403Forbidden);
        app.MapDelete("/keys/{keyID}", RevokeKeyAsync).WithName("RevokeApiKey").WithTags("keys")
            .Produces(StatusCodes.Status204NoContent)
            .Produces<ApiError>(StatusCodes.Status404NotFound);
        app.MapPost("/keys/{keyID}/rotate", RotateKeyAsync).WithName("RotateApiKey").WithTags("keys")
            .Produces<ApiKeyIssued>()
            .Produces<ApiError>(StatusCodes.Status404NotFound)
            .Produces<ApiError>(StatusCodes.Status409Conflict);
    }

    private static async Task<IResult> CreateTenantAsync(HttpContext context, ITenantStore tenants, IAuditLog audit, SandboxLifecycle lifecycle, AirlockServerOptions options)
    {
        var request = await ControlApi.ReadJsonAsync(context, AdminJsonContext.Default.NewTenantRequest, options.MaxJsonBodyBytes);
        var name = Name(request.Name);
        var quotas = Quotas(request.Quotas);
        var tenant = await tenants.CreateTenantAsync(name, quotas, context.RequestAborted);
        lifecycle.Quota.SetTenantQuotas(tenant.TenantId, quotas);
        await audit.AppendAsync(new AuditEntry(AuditKinds.TenantCreated, tenant.TenantId, null, AuditJson.Object(("tenantId", tenant.TenantId), ("name", name), Quota(quotas))), context.RequestAborted);
        return Results.Json(ToInfo(tenant, lifecycle), AdminJsonContext.Default.TenantInfo, statusCode: StatusCodes.Status201Created);
    }

    private static async Task<IResult> ListTenantsAsync(IStore store, SandboxLifecycle lifecycle, CancellationToken cancellationToken)
    {
        var tenants = await store.ListTenantsAsync(cancellationToken);
        return Results.Json(tenants.Where(t => t.DeletedAt is null).Select(t => ToInfo(t, lifecycle)).ToList(), AdminJsonContext.Default.ListTenantInfo);
    }

    private static async Task<IResult> GetTenantAsync(string tenantID, ITenantStore tenants, SandboxLifecycle lifecycle, CancellationToken cancellationToken) =>
        Results.Json(ToInfo(await LiveTenantAsync(tenants, tenantID, cancellationToken), lifecycle), AdminJsonContext.Default.TenantInfo);

    private static async Task<IResult> UpdateTenantAsync(HttpContext context, string tenantID, ITenantStore tenants, IAuditLog audit, SandboxLifecycle lifecycle, AirlockServerOptions options)
    {
        var request = await ControlApi.ReadJsonAsync(context, AdminJsonContext.Default.UpdateTenantRequest, options.MaxJsonBodyBytes);
        var quotas = request.Quotas is null ? throw ApiProblem.BadRequest("invalid_quotas", "quotas is required: { maxSandboxes, maxMemoryMB, maxVCpus } (a field left out uses the server default).") : Quotas(request.Quotas);
        if (!await tenants.SetTenantQuotasAsync(tenantID, quotas, context.RequestAborted))
        {
            throw TenantNotFound(tenantID);
        }

        lifecycle.Quota.SetTenantQuotas(tenantID, quotas);
        await audit.AppendAsync(new AuditEntry(AuditKinds.TenantUpdated, tenantID, null, AuditJson.Object(("tenantId", tenantID), Quota(quotas))), context.RequestAborted);
        return Results.Json(ToInfo(await LiveTenantAsync(tenants, tenantID, context.RequestAborted), lifecycle), AdminJsonContext.Default.TenantInfo);
    }

    private static async Task<IResult> DeleteTenantAsync(HttpContext context, string tenantID, ITenantStore tenants, IStore store, IAuditLog audit, SandboxLifecycle lifecycle, TimeProvider time)
    {
        var tenant = await LiveTenantAsync(tenants, tenantID, context.RequestAborted);
        if (tenant.TenantId == ApiCaller.Of(context).TenantId)
        {
            throw ApiProblem.Conflict("own_tenant", "A key cannot delete its own tenant (it would lock itself out); use an admin key of another tenant.");
        }

        var live = await store.ListSandboxesAsync(tenantID, LiveStates, context.RequestAborted);
        if (live.Count > 0)
        {
            throw ApiProblem.Conflict("tenant_has_sandboxes", $"Tenant {tenantID} still has {live.Count} sandboxes running or paused ({string.Join(", ", live.Take(5).Select(s => s.SandboxId))}); kill them first.");
        }

        if (!await tenants.DeleteTenantAsync(tenantID, time.GetUtcNow(), context.RequestAborted))
        {
            throw TenantNotFound(tenantID);
        }

        lifecycle.Quota.SetTenantQuotas(tenantID, null);
        await audit.AppendAsync(new AuditEntry(AuditKinds.TenantDeleted, tenantID, null, AuditJson.Object(("tenantId", tenantID), ("name", tenant.Name))), context.RequestAborted);
        return Results.NoContent();
    }

    private static async Task<IResult> CreateKeyAsync(HttpContext context, ITenantStore tenants, IStore store, IAuditLog audit, TimeProvider time, AirlockServerOptions options)
    {
        var caller = ApiCaller.Of(context);
        var request = await ControlApi.ReadJsonAsync(context, AdminJsonContext.Default.NewApiKeyRequest, options.MaxJsonBodyBytes);
        var name = Name(request.Name);
        var scope = ApiKeyScope.Tenant;
        if (request.Scope is not null && !ApiKeyScopes.TryParse(request.Scope, out scope))
        {
            throw ApiProblem.BadRequest("invalid_scope", $"scope must be admin, tenant or read-only, got '{request.Scope}'.");
        }

        var now = time.GetUtcNow();
        var expires = Expiry(request, now);
        var tenantId = string.IsNullOrEmpty(request.TenantId) ? caller.TenantId : request.TenantId;
        if (!caller.IsAdmin && (tenantId != caller.TenantId || scope > caller.Scope))
        {
            throw Forbidden(tenantId != caller.TenantId ? "A tenant key may create keys for its own tenant only." : $"A {caller.Scope.Name()} key may not create a stronger ({scope.Name()}) key.");
        }

        await LiveTenantAsync(tenants, tenantId, context.RequestAborted);
        var secret = ApiKeys.NewApiKey();
        var record = new ApiKeyRecord(ApiKeys.NewId(), tenantId, ApiKeys.Hash(secret), name, now) { Scope = scope, ExpiresAt = expires };
        await store.AddApiKeyAsync(record, context.RequestAborted);
        await audit.AppendAsync(new AuditEntry(AuditKinds.ApiKeyCreated, tenantId, null, AuditJson.Object(
            ("keyId", record.KeyId), ("tenantId", tenantId), ("name", name), ("scope", scope.Name()), ("expiresAt", expires))), context.RequestAborted);
        return Results.Json(new ApiKeyIssued { Key = secret, ApiKey = ToInfo(record) }, AdminJsonContext.Default.ApiKeyIssued, statusCode: StatusCodes.Status201Created);
    }

    private static async Task<IResult> ListKeysAsync(HttpContext context, ITenantStore tenants)
    {
        var caller = ApiCaller.Of(context);
        var asked = context.Request.Query["tenantId"].ToString() is { Length: > 0 } q ? q : context.Request.Query["tenantID"].ToString();
        string? tenantId = asked.Length > 0 ? asked : caller.IsAdmin ? null : caller.TenantId;
        if (!caller.IsAdmin && tenantId != caller.TenantId)
        {
            throw Forbidden("A tenant key may list its own tenant's keys only.");
        }

        var keys = await tenants.ListApiKeysAsync(tenantId, context.RequestAborted);
        return Results.Json(keys.Select(ToInfo).ToList(), AdminJsonContext.Default.ListApiKeyInfo);
    }

    private static async Task<IResult> RevokeKeyAsync(HttpContext context, string keyID, ITenantStore tenants, IAuditLog audit, TimeProvider time)
    {
        var key = await ManagedKeyAsync(context, tenants, keyID);
        if (await tenants.RevokeApiKeyAsync(keyID, time.GetUtcNow(), context.RequestAborted))
        {
            await audit.AppendAsync(new AuditEntry(AuditKinds.ApiKeyRevoked, key.TenantId, null, AuditJson.Object(("keyId", keyID), ("tenantId", key.TenantId), ("name", key.Name))), context.RequestAborted);
        }

        return Results.NoContent();
    }

    private static async Task<IResult> RotateKeyAsync(HttpContext context, string keyID, ITenantStore tenants, IAuditLog audit)
    {
        var key = await ManagedKeyAsync(context, tenants, keyID);
        var secret = ApiKeys.NewApiKey();
        var hash = ApiKeys.Hash(secret);
        if (key.RevokedAt is not null || !await tenants.RotateApiKeyAsync(keyID, hash, context.RequestAborted))
        {
            throw ApiProblem.Conflict("key_revoked", $"API key {keyID} is revoked; create a new one.");
        }

        await audit.AppendAsync(new AuditEntry(AuditKinds.ApiKeyRotated, key.TenantId, null, AuditJson.Object(("keyId", keyID), ("tenantId", key.TenantId), ("name", key.Name))), context.RequestAborted);
        return Results.Json(new ApiKeyIssued { Key = secret, ApiKey = ToInfo(key with { KeyHash = hash, LastUsedAt = null }) }, AdminJsonContext.Default.ApiKeyIssued);
    }

    /// <summary>A key the caller may revoke or rotate: any for an admin; for a tenant key, its tenant's keys no stronger than itself.</summary>
    private static async Task<ApiKeyRecord> ManagedKeyAsync(HttpContext context, ITenantStore tenants, string keyID)
    {
        var caller = ApiCaller.Of(context);
        var key = await tenants.GetApiKeyAsync(keyID, context.RequestAborted);
        if (key is null || (!caller.IsAdmin && key.TenantId != caller.TenantId))
        {
            throw ApiProblem.NotFound("key_not_found", $"API key {keyID} not found.");
        }

        return !caller.IsAdmin && key.Scope > caller.Scope
            ? throw Forbidden($"A {caller.Scope.Name()} key may not manage a stronger ({key.Scope.Name()}) key.")
            : key;
    }

    private static async Task<Tenant> LiveTenantAsync(ITenantStore tenants, string tenantId, CancellationToken cancellationToken) =>
        await tenants.GetTenantAsync(tenantId, cancellationToken) is { DeletedAt: null } tenant ? tenant : throw TenantNotFound(tenantId);

    private static ApiProblem TenantNotFound(string tenantId) => ApiProblem.NotFound("tenant_not_found", $"Tenant {tenantId} not found.");

    private static ApiProblem Forbidden(string message) => new(StatusCodes.Status403Forbidden, "forbidden", message);

    private static string Name(string? name)
    {
        var trimmed = name?.Trim() ?? "";
        return trimmed.Length is 0 or > MaxNameLength || trimmed.Any(char.IsControl)
            ? throw ApiProblem.BadRequest("invalid_name", $"name is required: 1 to {MaxNameLength} characters, no control characters.")
            : trimmed;
    }

    private static TenantQuotas Quotas(QuotaSettings? settings)
    {
        if (settings is null)
        {
            return TenantQuotas.None;
        }

        foreach (var (field, value) in new[] { ("maxSandboxes", settings.MaxSandboxes), ("maxMemoryMB", settings.MaxMemoryMB), ("maxVCpus", settings.MaxVCpus) })
        {
            if (value is < 0 or > 1_000_000)
            {
                throw ApiProblem.BadRequest("invalid_quotas", $"quotas.{field} must be between 0 and 1000000, got {value}.");
            }
        }

        return new TenantQuotas { MaxSandboxes = settings.MaxSandboxes, MaxMemoryMiB = settings.MaxMemoryMB, MaxVCpus = settings.MaxVCpus };
    }

    private static DateTimeOffset? Expiry(NewApiKeyRequest request, DateTimeOffset now)
    {
        if (request.ExpiresAt is not null && request.Ttl is not null)
        {
            throw ApiProblem.BadRequest("invalid_expiry", "Give expiresAt or ttl, not both.");
        }

        if (request.Ttl is { } ttl)
        {
            return ttl is < 1 or > MaxTtlSeconds ? throw ApiProblem.BadRequest("invalid_expiry", $"ttl must be between 1 and {MaxTtlSeconds} seconds, got {ttl}.") : now.AddSeconds(ttl);
        }

        return request.ExpiresAt is { } at && at <= now ? throw ApiProblem.BadRequest("invalid_expiry", "expiresAt must be in the future.") : request.ExpiresAt;
    }

    private static (string, object?) Quota(TenantQuotas quotas) =>
        ("quotas", new AuditJson.RawJson(AuditJson.Object(("maxSandboxes", quotas.MaxSandboxes), ("maxMemoryMB", quotas.MaxMemoryMiB), ("maxVCpus", quotas.MaxVCpus))));

    private static TenantInfo ToInfo(Tenant tenant, SandboxLifecycle lifecycle)
    {
        var (sandboxes, memory, cpus) = lifecycle.Quota.LimitsOf(tenant.TenantId);
        return new TenantInfo
        {
            TenantId = tenant.TenantId,
            Name = tenant.Name,
            CreatedAt = tenant.CreatedAt,
            Quotas = new QuotaSettings { MaxSandboxes = tenant.Quotas.MaxSandboxes, MaxMemoryMB = tenant.Quotas.MaxMemoryMiB, MaxVCpus = tenant.Quotas.MaxVCpus },
            EffectiveQuotas = new QuotaSettings { MaxSandboxes = sandboxes, MaxMemoryMB = memory, MaxVCpus = cpus },
        };
    }

    private static ApiKeyInfo ToInfo(ApiKeyRecord key) => new()
    {
        KeyId = key.KeyId,
        TenantId = key.TenantId,
        Name = key.Name,
        Scope = key.Scope.Name(),
        CreatedAt = key.CreatedAt,
        ExpiresAt = key.ExpiresAt,
        LastUsedAt = key.LastUsedAt,
        RevokedAt = key.RevokedAt,
    };
}
