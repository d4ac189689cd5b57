using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Airlock.Core.Api;
using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;
using Airlock.Envd;
using Airlock.Sandboxes;
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

        app.MapPost("/v2/sandboxes", CreateAsync)
            .WithName("CreateSandboxV2").WithTags("sandboxes")
            .Accepts<NewSandboxRequest>("application/json")
            .Produces<SandboxCreated>(StatusCodes.Status201Created)
            .Produces<ApiError>(StatusCodes.Status400BadRequest)
            .Produces<ApiError>(StatusCodes.Status422UnprocessableEntity)
            .Produces<ApiError>(StatusCodes.Status429TooManyRequests);

        app.MapPost("/v2/sandboxes/{sandboxID}/connect", ConnectAsync)
            .WithName("ConnectSandboxV2").WithTags("sandboxes")
            .Accepts<ResumeRequest>("application/json")
            .Produces<SandboxCreated>(StatusCodes.Status200OK)
            .Produces<SandboxCreated>(StatusCodes.Status201Created)
            .Produces<ApiError>(StatusCodes.Status404NotFound);

        app.MapGet("/sandboxes/{sandboxID}/metrics", MetricsAsync)
            .WithName("GetSandboxMetrics").WithTags("sandboxes")
            .Produces<List<SandboxMetricItem>>()
            .Produces<ApiError>(StatusCodes.Status404NotFound)
            .Produces<ApiError>(StatusCodes.Status409Conflict);

        app.MapGet("/sandboxes/{sandboxID}/logs", LogsAsync)
            .WithName("GetSandboxLogs").WithTags("sandboxes")
            .Produces<SandboxLogs>()
            .Produces<ApiError>(StatusCodes.Status404NotFound);

        app.MapGet("/v2/sandboxes/{sandboxID}/logs", LogsAsync)
            .WithName("GetSandboxLogsV2").WithTags("sandboxes")
            .Produces<SandboxLogs>()
            .Produces<ApiError>(StatusCodes.Status404NotFound);

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
            .Accepts<PauseRequest>("application/json")
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

    private static async Task<IResult> CreateAsync(HttpContext context, SandboxLifecycle lifecycle, AirlockServerOptions options)
    {
        var request = await ReadJsonAsync(context, ApiJsonContext.Default.NewSandboxRequest, options.MaxJsonBodyBytes);
        var created = await lifecycle.CreateAsync(WireMapping.ToSpec(Tenant(context), request), context.RequestAborted);
        return Results.Json(WireMapping.ToCreated(created, options), ApiJsonContext.Default.SandboxCreated, statusCode: StatusCodes.Status201Created);
    }

    /// <summary>
    /// E2B's paginated list: <c>state</c> (comma-joined; default running and paused), <c>metadata</c> (a form-encoded
    /// filter), <c>order</c> (desc by start time unless asc), <c>limit</c>, <c>nextToken</c>; the next page's token
    /// comes back in the <c>X-Next-Token</c> header.
    /// </summary>
    private static async Task<IResult> ListAsync(HttpContext context, SandboxLifecycle lifecycle, AirlockServerOptions options)
    {
        var query = context.Request.Query;
        var states = new List<SandboxState>();
        foreach (var value in query["state"])
        {
            foreach (var part in (value ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                states.Add(WireMapping.ParseState(part));
            }
        }

        var metadata = WireMapping.ParseMetadataFilter(query["metadata"]);
        var limit = 1000;
        if (query.TryGetValue("limit", out var limitValue) && (!int.TryParse(limitValue, out limit) || limit is < 1 or > 1000))
        {
            throw ApiProblem.BadRequest("invalid_limit", "limit must be between 1 and 1000.");
        }

        var descending = query["order"].ToString() is not "asc";
        if (query["order"].ToString() is { Length: > 0 } order && order is not ("asc" or "desc"))
        {
            throw ApiProblem.BadRequest("invalid_order", "order must be asc or desc.");
        }

        var records = await lifecycle.ListAsync(Tenant(context), states.Count == 0 ? [SandboxState.Running, SandboxState.Paused] : states, metadata, context.RequestAborted);
        var page = Pagination.Page(records, descending, query["nextToken"].ToString(), limit, out var next);
        if (next is not null)
        {
            context.Response.Headers["X-Next-Token"] = next;
        }

        return Results.Json(page.Select(r => WireMapping.ToDetail(r, options, includeToken: false)).ToList(), ApiJsonContext.Default.ListSandboxDetail);
    }

    private static async Task<IResult> ListRunningAsync(HttpContext context, SandboxLifecycle lifecycle, AirlockServerOptions options)
    {
        var metadata = WireMapping.ParseMetadataFilter(context.Request.Query["metadata"]);
        var records = await lifecycle.ListAsync(Tenant(context), [SandboxState.Running], metadata, context.RequestAborted);
        return Results.Json(records.Select(r => WireMapping.ToDetail(r, options, includeToken: false)).ToList(), ApiJsonContext.Default.ListSandboxDetail);
    }

    private static async Task<IResult> GetAsync(HttpContext context, string sandboxID, SandboxLifecycle lifecycle, AirlockServerOptions options)
    {
        var record = await lifecycle.GetAsync(Tenant(context), sandboxID, context.RequestAborted);
        return Results.Json(WireMapping.ToDetail(record, options, includeToken: !Auth.AuthenticationStep.HidesAccessToken(context)), ApiJsonContext.Default.SandboxDetail);
    }

    private static async Task<IResult> KillAsync(HttpContext context, string sandboxID, SandboxLifecycle lifecycle)
    {
        await lifecycle.KillAsync(Tenant(context), sandboxID, context.RequestAborted);
        return Results.NoContent();
    }

    private static async Task<IResult> SetTimeoutAsync(HttpContext context, string sandboxID, SandboxLifecycle lifecycle, AirlockServerOptions options)
    {
        var request = await ReadJsonAsync(context, ApiJsonContext.Default.TimeoutRequest, options.MaxJsonBodyBytes);
        if (request.Timeout is not { } seconds)
        {
            throw ApiProblem.BadRequest("invalid_timeout", "timeout (seconds) is required.");
        }

        await lifecycle.SetTimeoutAsync(Tenant(context), sandboxID, seconds, context.RequestAborted);
        return Results.NoContent();
    }

    /// <summary>
    /// E2B's pause: body <c>{ "memory": false }</c> keeps only the files. Airlock's older <c>?mode=disk|memory</c> still
    /// works. 409 when already paused (the SDK reports false).
    /// </summary>
    private static async Task<IResult> PauseAsync(HttpContext context, string sandboxID, string? mode, SandboxLifecycle lifecycle, AirlockServerOptions options)
    {
        if (mode is not (null or "memory" or "disk"))
        {
            throw ApiProblem.BadRequest("invalid_mode", $"mode must be 'memory' or 'disk', got '{mode}'.");
        }

        var request = await ReadOptionalJsonAsync(context, ApiJsonContext.Default.PauseRequest, options.MaxJsonBodyBytes) ?? new PauseRequest();
        var keepMemory = request.Memory ?? mode switch { "disk" => false, "memory" => true, _ => (bool?)null };
        await lifecycle.PauseAsync(Tenant(context), sandboxID, new PauseSpec { KeepMemory = keepMemory }, context.RequestAborted);
        return Results.NoContent();
    }

    /// <summary>E2B's resume: 201 with the sandbox when it was paused, 409 when it is already running.</summary>
    private static async Task<IResult> ResumeAsync(HttpContext context, string sandboxID, SandboxLifecycle lifecycle, AirlockServerOptions options)
    {
        var request = await ReadOptionalJsonAsync(context, ApiJsonContext.Default.ResumeRequest, options.MaxJsonBodyBytes) ?? new ResumeRequest();
        var handle = await lifecycle.ResumeAsync(Tenant(context), sandboxID, new ResumeSpec { TimeoutSeconds = request.Timeout, AutoPause = request.AutoPause }, context.RequestAborted);
        return handle.Resumed
            ? Results.Json(WireMapping.ToCreated(handle, options), ApiJsonContext.Default.SandboxCreated, statusCode: StatusCodes.Status201Created)
            : throw new ApiProblem(409, "sandbox_running", $"Sandbox {sandboxID} is already running.");
    }

    /// <summary>E2B's connect (v1 and v2): 200 when the sandbox is running (its timeout only ever extended), 201 when it had to be resumed.</summary>
    private static async Task<IResult> ConnectAsync(HttpContext context, string sandboxID, SandboxLifecycle lifecycle, AirlockServerOptions options)
    {
        var request = await ReadOptionalJsonAsync(context, ApiJsonContext.Default.ResumeRequest, options.MaxJsonBodyBytes) ?? new ResumeRequest();
        var handle = await lifecycle.ResumeAsync(Tenant(context), sandboxID, new ResumeSpec { TimeoutSeconds = request.Timeout ?? options.DefaultTimeoutSeconds, AutoPause = request.AutoPause, ExtendOnly = true }, context.RequestAborted);
        return Results.Json(WireMapping.ToCreated(handle, options), ApiJsonContext.Default.SandboxCreated, statusCode: handle.Resumed ? StatusCodes.Status201Created : StatusCodes.Status200OK);
    }

    /// <summary>E2B's metrics: <c>start</c>/<c>end</c> in unix seconds; 409 for a paused sandbox, 404 for an ended one.</summary>
    private static async Task<IResult> MetricsAsync(HttpContext context, string sandboxID, SandboxLifecycle lifecycle)
    {
        var from = WireMapping.UnixSeconds(context.Request.Query["start"], "start");
        var to = WireMapping.UnixSeconds(context.Request.Query["end"], "end");
        var metrics = await lifecycle.MetricsAsync(Tenant(context), sandboxID, from, to, context.RequestAborted);
        return Results.Json(metrics.Select(WireMapping.ToMetric).ToList(), ApiJsonContext.Default.ListSandboxMetricItem);
    }

    /// <summary>E2B's logs: <c>start</c> in unix milliseconds, <c>limit</c> (default 1000).</summary>
    private static async Task<IResult> LogsAsync(HttpContext context, string sandboxID, SandboxLifecycle lifecycle)
    {
        DateTimeOffset? from = null;
        if (context.Request.Query["start"].ToString() is { Length: > 0 } start)
        {
            from = long.TryParse(start, out var ms) && ms >= 0 ? DateTimeOffset.FromUnixTimeMilliseconds(ms) : throw ApiProblem.BadRequest("invalid_start", "start must be unix milliseconds.");
        }

        var limit = 1000;
        if (context.Request.Query.TryGetValue("limit", out var limitValue) && (!int.TryParse(limitValue, out limit) || limit is < 1 or > 1000))
        {
            throw ApiProblem.BadRequest("invalid_limit", "limit must be between 1 and 1000.");
        }

        var lines = await lifecycle.LogsAsync(Tenant(context), sandboxID, from, limit, context.RequestAborted);
        return Results.Json(WireMapping.ToLogs(lines), ApiJsonContext.Default.SandboxLogs);
    }

    private static async Task<IResult> UsageAsync(HttpContext context, SandboxLifecycle lifecycle)
    {
        var (at, sandboxes) = await lifecycle.UsageAsync(Tenant(context), context.RequestAborted);
        return Results.Json(WireMapping.ToUsage(Tenant(context), at, sandboxes), ApiJsonContext.Default.UsageReport);
    }

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
        catch (IOException ex) when (ex is not BadHttpRequestException && !context.RequestAborted.IsCancellationRequested)
        {
            // Broken framing Kestrel reports as a plain IOException (a chunk size that overflows): the client's fault.
            throw ApiProblem.BadRequest("invalid_body", $"Request body cannot be read: {ex.Message}");
        }
    }
}
