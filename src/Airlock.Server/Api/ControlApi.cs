using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Airlock.Core.Api;
using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;
using Airlock.Envd;
using Airlock.Server.Sandboxes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;

namespace Airlock.Server.Api;

/// <summary>The E2B-shaped REST control API.</summary>
internal static class ControlApi
{
    public const string TenantItem = "airlock.tenant";

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/health", () => Results.Json(new Dictionary<string, string> { ["status"] = "ok" }, ApiJsonContext.Default.DictionaryStringString))
            .WithName("Health").WithTags("system").AllowAnonymous();

        app.MapPost("/sandboxes", CreateAsync)
            .WithName("CreateSandbox").WithTags("sandboxes")
            .Accepts<NewSandboxRequest>("application/json")
            .Produces<SandboxCreated>(StatusCodes.Status201Created)
            .Produces<ApiError>(StatusCodes.Status400BadRequest)
            .Produces<ApiError>(StatusCodes.Status401Unauthorized)
            .Produces<ApiError>(StatusCodes.Status404NotFound)
            .Produces<ApiError>(StatusCodes.Status413PayloadTooLarge)
            .Produces<ApiError>(StatusCodes.Status422UnprocessableEntity);

        app.MapGet("/v2/sandboxes", ListAsync)
            .WithName("ListSandboxesV2").WithTags("sandboxes")
            .Produces<List<SandboxDetail>>()
            .Produces<ApiError>(StatusCodes.Status400BadRequest);

        app.MapGet("/sandboxes", ListRunningAsync)
            .WithName("ListSandboxes").WithTags("sandboxes")
            .Produces<List<SandboxDetail>>();

        app.MapGet("/sandboxes/{sandboxID}", GetAsync)
            .WithName("GetSandbox").WithTags("sandboxes")
            .Produces<SandboxDetail>()
            .Produces<ApiError>(StatusCodes.Status404NotFound);

        app.MapDelete("/sandboxes/{sandboxID}", KillAsync)
            .WithName("KillSandbox").WithTags("sandboxes")
            .Produces(StatusCodes.Status204NoContent)
            .Produces<ApiError>(StatusCodes.Status404NotFound);

        app.MapPost("/sandboxes/{sandboxID}/timeout", SetTimeoutAsync)
            .WithName("SetSandboxTimeout").WithTags("sandboxes")
            .Accepts<TimeoutRequest>("application/json")
            .Produces(StatusCodes.Status204NoContent)
            .Produces<ApiError>(StatusCodes.Status400BadRequest)
            .Produces<ApiError>(StatusCodes.Status404NotFound);

        app.MapPost("/sandboxes/{sandboxID}/pause", PauseAsync)
            .WithName("PauseSandbox").WithTags("sandboxes")
            .Produces(StatusCodes.Status204NoContent)
            .Produces<ApiError>(StatusCodes.Status400BadRequest)
            .Produces<ApiError>(StatusCodes.Status404NotFound)
            .Produces<ApiError>(StatusCodes.Status409Conflict)
            .Produces<ApiError>(StatusCodes.Status507InsufficientStorage);

        app.MapPost("/sandboxes/{sandboxID}/resume", ResumeAsync)
            .WithName("ResumeSandbox").WithTags("sandboxes")
            .Accepts<ResumeRequest>("application/json")
            .Produces<SandboxCreated>(StatusCodes.Status201Created)
            .Produces<ApiError>(StatusCodes.Status404NotFound)
            .Produces<ApiError>(StatusCodes.Status409Conflict);

        app.MapPost("/sandboxes/{sandboxID}/connect", ConnectAsync)
            .WithName("ConnectSandbox").WithTags("sandboxes")
            .Accepts<ResumeRequest>("application/json")
            .Produces<SandboxCreated>(StatusCodes.Status200OK)
            .Produces<SandboxCreated>(StatusCodes.Status201Created)
            .Produces<ApiError>(StatusCodes.Status404NotFound);

        app.MapGet("/usage", UsageAsync)
            .WithName("GetUsage").WithTags("usage")
            .Produces<UsageReport>();

        app.MapGet("/audit", AuditAsync)
            .WithName("ReadAudit").WithTags("audit")
            .Produces(StatusCodes.Status200OK, contentType: "application/x-ndjson");
    }

    private static string Tenant(HttpContext context) => (string)context.Items[TenantItem]!;

    private static async Task<IResult> CreateAsync(HttpContext context, SandboxManager manager, AirlockServerOptions options)
    {
        var request = await ReadJsonAsync(context, ApiJsonContext.Default.NewSandboxRequest, options.MaxJsonBodyBytes);
        var created = await manager.CreateAsync(Tenant(context), request, context.RequestAborted);
        return Results.Json(created, ApiJsonContext.Default.SandboxCreated, statusCode: StatusCodes.Status201Created);
    }

    private static async Task<IResult> ListAsync(HttpContext context, SandboxManager manager, AirlockServerOptions options)
    {
        var states = new List<SandboxState>();
        foreach (var value in context.Request.Query["state"])
        {
            foreach (var part in (value ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                states.Add(ParseState(part));
            }
        }

        var metadata = ParseMetadataFilter(context.Request.Query["metadata"]);
        var limit = 1000;
        if (context.Request.Query.TryGetValue("limit", out var limitValue) && (!int.TryParse(limitValue, out limit) || limit is < 1 or > 1000))
        {
            throw ApiProblem.BadRequest("invalid_limit", "limit must be between 1 and 1000.");
        }

        var records = await manager.ListAsync(Tenant(context), states.Count == 0 ? null : states, metadata, context.RequestAborted);
        return Results.Json(records.Take(limit).Select(r => ToDetail(r, options, includeToken: false)).ToList(), ApiJsonContext.Default.ListSandboxDetail);
    }

    private static async Task<IResult> ListRunningAsync(HttpContext context, SandboxManager manager, AirlockServerOptions options)
    {
        var metadata = ParseMetadataFilter(context.Request.Query["metadata"]);
        var records = await manager.ListAsync(Tenant(context), [SandboxState.Running], metadata, context.RequestAborted);
        return Results.Json(records.Select(r => ToDetail(r, options, includeToken: false)).ToList(), ApiJsonContext.Default.ListSandboxDetail);
    }

    private static async Task<IResult> GetAsync(HttpContext context, string sandboxID, SandboxManager manager, AirlockServerOptions options)
    {
        var record = await manager.GetAsync(Tenant(context), sandboxID, context.RequestAborted);
        return Results.Json(ToDetail(record, options, includeToken: true), ApiJsonContext.Default.SandboxDetail);
    }

    private static async Task<IResult> KillAsync(HttpContext context, string sandboxID, SandboxManager manager)
    {
        await manager.KillAsync(Tenant(context), sandboxID, context.RequestAborted);
        return Results.NoContent();
    }

    private static async Task<IResult> SetTimeoutAsync(HttpContext context, string sandboxID, SandboxManager manager, AirlockServerOptions options)
    {
        var request = await ReadJsonAsync(context, ApiJsonContext.Default.TimeoutRequest, options.MaxJsonBodyBytes);
        if (request.Timeout is not { } seconds)
        {
            throw ApiProblem.BadRequest("invalid_timeout", "timeout (seconds) is required.");
        }

        await manager.SetTimeoutAsync(Tenant(context), sandboxID, seconds, context.RequestAborted);
        return Results.NoContent();
    }

    /// <summary>E2B's pause; Airlock's <c>?mode=disk</c> makes a container keep only its files and free its memory.</summary>
    private static async Task<IResult> PauseAsync(HttpContext context, string sandboxID, string? mode, SandboxManager manager)
    {
        await manager.PauseAsync(Tenant(context), sandboxID, mode, context.RequestAborted);
        return Results.NoContent();
    }

    /// <summary>E2B's resume: 201 with the sandbox when it was paused, 409 when it is already running.</summary>
    private static async Task<IResult> ResumeAsync(HttpContext context, string sandboxID, SandboxManager manager, AirlockServerOptions options)
    {
        var request = await ReadOptionalJsonAsync(context, ApiJsonContext.Default.ResumeRequest, options.MaxJsonBodyBytes) ?? new ResumeRequest();
        var (sandbox, resumed) = await manager.ResumeAsync(Tenant(context), sandboxID, request, context.RequestAborted);
        return resumed
            ? Results.Json(sandbox, ApiJsonContext.Default.SandboxCreated, statusCode: StatusCodes.Status201Created)
            : throw new ApiProblem(409, "sandbox_running", $"Sandbox {sandboxID} is already running.");
    }

    /// <summary>E2B's connect: 200 when the sandbox is running, 201 when it had to be resumed.</summary>
    private static async Task<IResult> ConnectAsync(HttpContext context, string sandboxID, SandboxManager manager, AirlockServerOptions options)
    {
        var request = await ReadOptionalJsonAsync(context, ApiJsonContext.Default.ResumeRequest, options.MaxJsonBodyBytes) ?? new ResumeRequest();
        var (sandbox, resumed) = await manager.ResumeAsync(Tenant(context), sandboxID, request, context.RequestAborted);
        return Results.Json(sandbox, ApiJsonContext.Default.SandboxCreated, statusCode: resumed ? StatusCodes.Status201Created : StatusCodes.Status200OK);
    }

    private static async Task<IResult> UsageAsync(HttpContext context, SandboxManager manager) =>
        Results.Json(await manager.UsageAsync(Tenant(context), context.RequestAborted), ApiJsonContext.Default.UsageReport);

    private static async Task<T?> ReadOptionalJsonAsync<T>(HttpContext context, JsonTypeInfo<T> typeInfo, long maxBytes)
        where T : class =>
        context.Request.ContentLength is 0 || (context.Request.ContentLength is null && !context.Request.HasJsonContentType())
            ? null
            : await ReadJsonAsync(context, typeInfo, maxBytes);

    private static async Task AuditAsync(HttpContext context, IStore store)
    {
        long after = 0;
        if (context.Request.Query.TryGetValue("after", out var afterValue) && (!long.TryParse(afterValue, out after) || after < 0))
        {
            throw ApiProblem.BadRequest("invalid_after", "after must be a non-negative sequence number.");
        }

        context.Response.ContentType = "application/x-ndjson";
        await Airlock.Audit.AuditExport.WriteJsonLinesAsync(store.ReadAuditAsync(after, Tenant(context), context.RequestAborted), context.Response.Body, context.RequestAborted);
    }

    public static SandboxDetail ToDetail(SandboxRecord r, AirlockServerOptions options, bool includeToken) => new()
    {
        SandboxId = r.SandboxId,
        TemplateId = r.TemplateId,
        StartedAt = r.CreatedAt,
        EndAt = r.EndAt,
        CpuCount = r.Limits.VCpus,
        MemoryMB = r.Limits.MemoryMiB,
        DiskSizeMB = 0,
        EnvdVersion = EnvdProtocol.Version,
        EnvdAccessToken = includeToken && r.State == SandboxState.Running ? r.AccessToken : null,
        Domain = options.Domain,
        Metadata = r.Metadata,
        State = r.State.ToString().ToLowerInvariant(),
        FailureReason = r.FailureReason,
        Boundary = r.Report,
        PausedAt = r.PausedAt,
    };

    private static SandboxState ParseState(string value) => value.ToLowerInvariant() switch
    {
        "creating" => SandboxState.Creating,
        "running" => SandboxState.Running,
        "pausing" => SandboxState.Pausing,
        "paused" => SandboxState.Paused,
        "resuming" => SandboxState.Resuming,
        "killed" => SandboxState.Killed,
        "failed" => SandboxState.Failed,
        _ => throw ApiProblem.BadRequest("invalid_state", $"Unknown state '{value}'."),
    };

    /// <summary>E2B's metadata filter: one query value holding a URL-encoded <c>k=v&amp;k2=v2</c>.</summary>
    private static Dictionary<string, string> ParseMetadataFilter(Microsoft.Extensions.Primitives.StringValues values)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var value in values)
        {
            foreach (var pair in (value ?? "").Split('&', StringSplitOptions.RemoveEmptyEntries))
            {
                var eq = pair.IndexOf('=', StringComparison.Ordinal);
                if (eq <= 0)
                {
                    throw ApiProblem.BadRequest("invalid_metadata_filter", $"metadata filter '{pair}' must be key=value.");
                }

                result[Uri.UnescapeDataString(pair[..eq])] = Uri.UnescapeDataString(pair[(eq + 1)..]);
            }
        }

        return result;
    }

    /// <summary>Reads a bounded JSON body: 413 past the limit, 415 for non-JSON, 400 for malformed JSON.</summary>
    public static async Task<T> ReadJsonAsync<T>(HttpContext context, JsonTypeInfo<T> typeInfo, long maxBytes)
    {
        var request = context.Request;
        if (request.ContentLength > maxBytes)
        {
            throw new ApiProblem(StatusCodes.Status413PayloadTooLarge, "body_too_large", $"Request body is {request.ContentLength} bytes; the limit is {maxBytes}.");
        }

        if (request.ContentType is { Length: > 0 } contentType && !contentType.Contains("json", StringComparison.OrdinalIgnoreCase))
        {
            throw new ApiProblem(StatusCodes.Status415UnsupportedMediaType, "unsupported_media_type", $"Expected application/json, got '{contentType}'.");
        }

        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } sizeFeature)
        {
            sizeFeature.MaxRequestBodySize = maxBytes;
        }

        try
        {
            if (request.ContentLength == 0)
            {
                throw ApiProblem.BadRequest("invalid_json", "Request body is empty; expected a JSON object.");
            }

            return await JsonSerializer.DeserializeAsync(request.Body, typeInfo, context.RequestAborted)
                ?? throw ApiProblem.BadRequest("invalid_json", "Request body must be a JSON object, got null.");
        }
        catch (JsonException ex)
        {
            throw ApiProblem.BadRequest("invalid_json", $"Malformed JSON: {ex.Message}");
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            throw new ApiProblem(StatusCodes.Status413PayloadTooLarge, "body_too_large", $"Request body exceeds the limit of {maxBytes} bytes.");
        }
    }
}
