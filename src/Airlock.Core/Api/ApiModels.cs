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
    /// <summary>E2B: onTimeout pause (the SDK's <c>lifecycle.onTimeout: 'pause'</c>).</summary>
    [JsonPropertyName("autoPause")] public bool? AutoPause { get; init; }
    /// <summary>E2B: whether the timeout pause keeps memory (<c>onTimeout: { action: 'pause', keepMemory }</c>).</summary>
    [JsonPropertyName("autoPauseMemory")] public bool? AutoPauseMemory { get; init; }
    /// <summary>E2B: <c>{ "enabled": bool }</c>, resume a paused sandbox on traffic (stored; acted on by the ingress door).</summary>
    [JsonPropertyName("autoResume")] public AutoResumeSetting? AutoResume { get; init; }
    /// <summary>Airlock's own form of the lifecycle: <c>{ onTimeout: kill|pause, keepMemory, autoResume }</c>.</summary>
    [JsonPropertyName("lifecycle")] public LifecycleRequest? Lifecycle { get; init; }
    /// <summary>E2B: egress and ingress wishes. Only what deny-all allows is granted in this version; anything more is refused.</summary>
    [JsonPropertyName("network")] public NetworkRequest? Network { get; init; }
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
    /// <summary>E2B 2.51 (<c>onResume: 'reboot'</c>): accepted; a sandbox paused with memory is restored with it.</summary>
    [JsonPropertyName("memory")] public bool? Memory { get; init; }
}

/// <summary>POST /sandboxes/{id}/pause body: <c>{ "memory": false }</c> keeps only the files.</summary>
public sealed record PauseRequest
{
    [JsonPropertyName("memory")] public bool? Memory { get; init; }
}

public sealed record AutoResumeSetting
{
    [JsonPropertyName("enabled")] public bool Enabled { get; init; }
}

public sealed record LifecycleRequest
{
    /// <summary>kill or pause.</summary>
    [JsonPropertyName("onTimeout")] public string? OnTimeout { get; init; }
    [JsonPropertyName("keepMemory")] public bool? KeepMemory { get; init; }
    [JsonPropertyName("autoResume")] public bool? AutoResume { get; init; }
}

/// <summary>E2B's sandbox network settings (create and getInfo).</summary>
public sealed record NetworkRequest
{
    [JsonPropertyName("allowOut")] public List<string>? AllowOut { get; init; }
    [JsonPropertyName("denyOut")] public List<string>? DenyOut { get; init; }
    [JsonPropertyName("allowPublicTraffic")] public bool? AllowPublicTraffic { get; init; }
}

/// <summary>getInfo's <c>lifecycle</c>.</summary>
public sealed record LifecycleInfo
{
    [JsonPropertyName("onTimeout")] public required string OnTimeout { get; init; }
    [JsonPropertyName("autoResume")] public bool AutoResume { get; init; }
    /// <summary>Airlock: whether a pause keeps memory.</summary>
    [JsonPropertyName("keepMemory")] public bool KeepMemory { get; init; }
}

/// <summary>One entry of GET /sandboxes/{id}/metrics (E2B SandboxMetric).</summary>
public sealed record SandboxMetricItem
{
    [JsonPropertyName("timestamp")] public required DateTimeOffset Timestamp { get; init; }
    [JsonPropertyName("timestampUnix")] public long TimestampUnix { get; init; }
    [JsonPropertyName("cpuCount")] public int CpuCount { get; init; }
    [JsonPropertyName("cpuUsedPct")] public double CpuUsedPct { get; init; }
    [JsonPropertyName("memUsed")] public long MemUsed { get; init; }
    [JsonPropertyName("memTotal")] public long MemTotal { get; init; }
    [JsonPropertyName("memCache")] public long MemCache { get; init; }
    [JsonPropertyName("diskUsed")] public long DiskUsed { get; init; }
    [JsonPropertyName("diskTotal")] public long DiskTotal { get; init; }
}

/// <summary>GET /sandboxes/{id}/logs (E2B SandboxLogs).</summary>
public sealed record SandboxLogs
{
    [JsonPropertyName("logs")] public required List<SandboxLogItem> Logs { get; init; }
    [JsonPropertyName("logEntries")] public required List<SandboxLogEntry> LogEntries { get; init; }
}

public sealed record SandboxLogItem
{
    [JsonPropertyName("timestamp")] public required DateTimeOffset Timestamp { get; init; }
    [JsonPropertyName("line")] public required string Line { get; init; }
}

public sealed record SandboxLogEntry
{
    [JsonPropertyName("timestamp")] public required DateTimeOffset Timestamp { get; init; }
    [JsonPropertyName("level")] public required string Level { get; init; }
    [JsonPropertyName("message")] public required string Message { get; init; }
    [JsonPropertyName("fields")] public Dictionary<string, string> Fields { get; init; } = [];
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
    /// <summary>
    /// Airlock: <c>unresponsive</c> when the agent of a running sandbox missed its health checks (the reason is in
    /// <see cref="FailureReason"/>), <c>ok</c> for a running sandbox that answers. <see cref="State"/> stays
    /// <c>running</c> then: E2B's Python SDK refuses a state outside its enum, for every sandbox of a list.
    /// </summary>
    [JsonPropertyName("health")] public string? Health { get; init; }
    [JsonPropertyName("failureReason")] public string? FailureReason { get; init; }
    [JsonPropertyName("boundary")] public BoundaryReport? Boundary { get; init; }
    /// <summary>Airlock: when the sandbox was paused (paused sandboxes only).</summary>
    [JsonPropertyName("pausedAt")] public DateTimeOffset? PausedAt { get; init; }
    [JsonPropertyName("lifecycle")] public LifecycleInfo? Lifecycle { get; init; }
    /// <summary>E2B: always false here (egress is deny-all unless a policy allows more).</summary>
    [JsonPropertyName("allowInternetAccess")] public bool AllowInternetAccess { get; init; }
    [JsonPropertyName("network")] public NetworkRequest? Network { get; init; }
    [JsonPropertyName("volumeMounts")] public List<string> VolumeMounts { get; init; } = [];
    /// <summary>Airlock: the node that runs the sandbox.</summary>
    [JsonPropertyName("node")] public string? Node { get; init; }
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
[JsonSerializable(typeof(PauseRequest))]
[JsonSerializable(typeof(List<SandboxMetricItem>))]
[JsonSerializable(typeof(SandboxLogs))]
[JsonSerializable(typeof(UsageReport))]
[JsonSerializable(typeof(ApiError))]
[JsonSerializable(typeof(BoundaryReport))]
[JsonSerializable(typeof(SandboxLimits))]
[JsonSerializable(typeof(SandboxNetwork))]
[JsonSerializable(typeof(Dictionary<string, string>))]
public sealed partial class ApiJsonContext : JsonSerializerContext;
