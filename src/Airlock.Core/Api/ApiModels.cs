using System.Text.Json;
using System.Text.Json.Serialization;
using Airlock.Core.Sandboxes;

namespace Airlock.Core.Api;

// REST control API contracts. Field names follow E2B's public OpenAPI (NewSandbox, Sandbox, SandboxDetail,
// ListedSandbox, Error) so E2B SDKs work unchanged; Airlock's own fields are additive.

/// <summary>POST /sandboxes body.</summary>
public sealed record NewSandboxRequest
{
    [JsonPropertyName("templateID")] public string? TemplateId { get; init; }
    /// <summary>Seconds until the sandbox times out (default 300).</summary>
    [JsonPropertyName("timeout")] public int? Timeout { get; init; }
    [JsonPropertyName("metadata")] public Dictionary<string, string>? Metadata { get; init; }
    [JsonPropertyName("envVars")] public Dictionary<string, string>? EnvVars { get; init; }
    /// <summary>E2B field; accepted. Airlock sandboxes have no internet route regardless (egress is a later issue).</summary>
    [JsonPropertyName("allow_internet_access")] public bool? AllowInternetAccess { get; init; }
    [JsonPropertyName("autoPause")] public bool? AutoPause { get; init; }
    [JsonPropertyName("secure")] public bool? Secure { get; init; }
    /// <summary>Airlock: risk class (low|medium|high); default high.</summary>
    [JsonPropertyName("risk")] public string? Risk { get; init; }
    /// <summary>Airlock: explicit boundary (process|container|microvm); must not be weaker than the risk implies unless allowDowngrade.</summary>
    [JsonPropertyName("boundary")] public string? Boundary { get; init; }
    /// <summary>Airlock: caller consents to a weaker boundary than asked for if the asked one is unavailable.</summary>
    [JsonPropertyName("allowDowngrade")] public bool? AllowDowngrade { get; init; }
    [JsonPropertyName("memoryMB")] public int? MemoryMB { get; init; }
    [JsonPropertyName("cpuCount")] public int? CpuCount { get; init; }
    /// <summary>Airlock: size of the sandbox's writable disk in MiB (process and container: the quota of its writable layer).</summary>
    [JsonPropertyName("diskMB")] public int? DiskMB { get; init; }
    /// <summary>Airlock: microvm only — boot the guest kernel instead of restoring the template's pre-booted snapshot.</summary>
    [JsonPropertyName("cold")] public bool? Cold { get; init; }
}

/// <summary>POST /sandboxes/{id}/resume and /connect body (E2B ResumedSandbox / ConnectSandbox).</summary>
public sealed record ResumeRequest
{
    [JsonPropertyName("timeout")] public int? Timeout { get; init; }
    [JsonPropertyName("autoPause")] public bool? AutoPause { get; init; }
}

/// <summary>GET /usage: metered usage of the caller's tenant, in total and per sandbox.</summary>
public sealed record UsageReport
{
    [JsonPropertyName("tenantID")] public required string TenantId { get; init; }
    [JsonPropertyName("at")] public required DateTimeOffset At { get; init; }
    [JsonPropertyName("total")] public required SandboxUsage Total { get; init; }
    [JsonPropertyName("sandboxes")] public required List<SandboxUsageItem> Sandboxes { get; init; }
}

public sealed record SandboxUsageItem
{
    [JsonPropertyName("sandboxID")] public required string SandboxId { get; init; }
    [JsonPropertyName("state")] public required string State { get; init; }
    [JsonPropertyName("boundary")] public required string Boundary { get; init; }
    [JsonPropertyName("usage")] public required SandboxUsage Usage { get; init; }
}

/// <summary>Response of POST /sandboxes (E2B "Sandbox").</summary>
public sealed record SandboxCreated
{
    [JsonPropertyName("sandboxID")] public required string SandboxId { get; init; }
    [JsonPropertyName("templateID")] public required string TemplateId { get; init; }
    [JsonPropertyName("clientID")] public string ClientId { get; init; } = "airlock";
    [JsonPropertyName("envdVersion")] public required string EnvdVersion { get; init; }
    [JsonPropertyName("envdAccessToken")] public required string EnvdAccessToken { get; init; }
    [JsonPropertyName("trafficAccessToken")] public string? TrafficAccessToken { get; init; }
    [JsonPropertyName("domain")] public string? Domain { get; init; }
    [JsonPropertyName("boundary")] public required BoundaryReport Boundary { get; init; }
}

/// <summary>GET /sandboxes/{id} (E2B "SandboxDetail") and list items (E2B "ListedSandbox").</summary>
public sealed record SandboxDetail
{
    [JsonPropertyName("sandboxID")] public required string SandboxId { get; init; }
    [JsonPropertyName("templateID")] public required string TemplateId { get; init; }
    [JsonPropertyName("clientID")] public string ClientId { get; init; } = "airlock";
    [JsonPropertyName("alias")] public string? Alias { get; init; }
    [JsonPropertyName("startedAt")] public required DateTimeOffset StartedAt { get; init; }
    [JsonPropertyName("endAt")] public required DateTimeOffset EndAt { get; init; }
    [JsonPropertyName("cpuCount")] public int CpuCount { get; init; }
    [JsonPropertyName("memoryMB")] public int MemoryMB { get; init; }
    [JsonPropertyName("diskSizeMB")] public int DiskSizeMB { get; init; }
    [JsonPropertyName("envdVersion")] public required string EnvdVersion { get; init; }
    [JsonPropertyName("envdAccessToken")] public string? EnvdAccessToken { get; init; }
    [JsonPropertyName("domain")] public string? Domain { get; init; }
    [JsonPropertyName("metadata")] public IReadOnlyDictionary<string, string>? Metadata { get; init; }
    /// <summary>E2B states are running|paused; Airlock adds its own lifecycle states.</summary>
    [JsonPropertyName("state")] public required string State { get; init; }
    [JsonPropertyName("failureReason")] public string? FailureReason { get; init; }
    [JsonPropertyName("boundary")] public BoundaryReport? Boundary { get; init; }
    /// <summary>Airlock: when the sandbox was paused (paused sandboxes only).</summary>
    [JsonPropertyName("pausedAt")] public DateTimeOffset? PausedAt { get; init; }
}

/// <summary>POST /sandboxes/{id}/timeout body.</summary>
public sealed record TimeoutRequest
{
    [JsonPropertyName("timeout")] public int? Timeout { get; init; }
}

/// <summary>Error body: { code, message } with the HTTP status as code (E2B), plus a stable machine-readable error_code.</summary>
public sealed record ApiError
{
    [JsonPropertyName("code")] public required int Code { get; init; }
    [JsonPropertyName("message")] public required string Message { get; init; }
    [JsonPropertyName("error_code")] public string? ErrorCode { get; init; }
}

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(NewSandboxRequest))]
[JsonSerializable(typeof(SandboxCreated))]
[JsonSerializable(typeof(SandboxDetail))]
[JsonSerializable(typeof(List<SandboxDetail>))]
[JsonSerializable(typeof(TimeoutRequest))]
[JsonSerializable(typeof(ResumeRequest))]
[JsonSerializable(typeof(UsageReport))]
[JsonSerializable(typeof(ApiError))]
[JsonSerializable(typeof(BoundaryReport))]
[JsonSerializable(typeof(SandboxLimits))]
[JsonSerializable(typeof(SandboxNetwork))]
[JsonSerializable(typeof(Dictionary<string, string>))]
public sealed partial class ApiJsonContext : JsonSerializerContext;
