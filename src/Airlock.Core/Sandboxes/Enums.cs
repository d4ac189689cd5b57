using System.Text.Json.Serialization;

namespace Airlock.Core.Sandboxes;

/// <summary>The risk class a caller names; it maps to a boundary (design.md §1).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<Risk>))]
public enum Risk
{
    [JsonStringEnumMemberName("low")] Low,
    [JsonStringEnumMemberName("medium")] Medium,
    [JsonStringEnumMemberName("high")] High,
}

/// <summary>Isolation classes, ordered weakest to strongest.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<BoundaryKind>))]
public enum BoundaryKind
{
    [JsonStringEnumMemberName("process")] Process = 1,
    [JsonStringEnumMemberName("container")] Container = 2,
    [JsonStringEnumMemberName("microvm")] MicroVm = 3,
}

[JsonConverter(typeof(JsonStringEnumConverter<SandboxState>))]
public enum SandboxState
{
    [JsonStringEnumMemberName("creating")] Creating,
    [JsonStringEnumMemberName("running")] Running,
    [JsonStringEnumMemberName("pausing")] Pausing,
    [JsonStringEnumMemberName("paused")] Paused,
    [JsonStringEnumMemberName("resuming")] Resuming,
    [JsonStringEnumMemberName("killed")] Killed,
    [JsonStringEnumMemberName("failed")] Failed,
    /// <summary>
    /// Running, but its guest agent missed its last health checks (the reason says how): nothing can be started in it
    /// until it answers again, when it goes back to running. It still holds its quota, its timeout still applies, and
    /// it can be killed.
    /// </summary>
    [JsonStringEnumMemberName("unresponsive")] Unresponsive,
}

public static class BoundaryMapping
{
    public static BoundaryKind ForRisk(Risk risk) => risk switch
    {
        Risk.Low => BoundaryKind.Process,
        Risk.Medium => BoundaryKind.Container,
        _ => BoundaryKind.MicroVm,
    };

    public static string Name(this BoundaryKind kind) => kind switch
    {
        BoundaryKind.Process => "process",
        BoundaryKind.Container => "container",
        BoundaryKind.MicroVm => "microvm",
        _ => kind.ToString(),
    };

    public static bool TryParse(string? value, out BoundaryKind kind)
    {
        switch (value?.Trim().ToLowerInvariant())
        {
            case "process": kind = BoundaryKind.Process; return true;
            case "container": kind = BoundaryKind.Container; return true;
            case "microvm": kind = BoundaryKind.MicroVm; return true;
            default: kind = default; return false;
        }
    }

    public static bool TryParseRisk(string? value, out Risk risk)
    {
        switch (value?.Trim().ToLowerInvariant())
        {
            case "low": risk = Risk.Low; return true;
            case "medium": risk = Risk.Medium; return true;
            case "high": risk = Risk.High; return true;
            default: risk = default; return false;
        }
    }

    public static bool IsTerminal(this SandboxState state) => state is SandboxState.Killed or SandboxState.Failed;
}
