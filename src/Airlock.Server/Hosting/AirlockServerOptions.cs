using Airlock.Core.Sandboxes;

namespace Airlock.Server;

/// <summary>airlockd configuration. Validated at startup (<see cref="AirlockServerOptionsValidator"/>).</summary>
public sealed record AirlockServerOptions
{
    /// <summary>Address the control API and envd routes listen on.</summary>
    public string Listen { get; init; } = "http://127.0.0.1:8686";
    public string DataDir { get; init; } = "/var/lib/airlock";
    /// <summary>Domain in sandbox URLs: <c>&lt;port&gt;-&lt;sandboxId&gt;.&lt;domain&gt;</c>.</summary>
    public string Domain { get; init; } = "localhost";
    /// <summary>Keep sandboxes running when airlockd stops (re-adopted on the next start) instead of killing them.</summary>
    public bool KeepSandboxesOnShutdown { get; init; }
    public int DefaultTimeoutSeconds { get; init; } = 300;
    public int MaxTimeoutSeconds { get; init; } = 86_400;
    /// <summary>Risk class used when a request names neither risk nor boundary (E2B SDKs cannot name one).</summary>
    public Risk DefaultRisk { get; init; } = Risk.High;
    public string? GuestAgentPath { get; init; }
    public string? TemplatesDir { get; init; }
    public SandboxLimits DefaultLimits { get; init; } = new();
    public int MaxMemoryMiB { get; init; } = 4096;
    public int MaxCpuCount { get; init; } = 2;
    /// <summary>Largest JSON body the control API accepts.</summary>
    public long MaxJsonBodyBytes { get; init; } = 1 << 20;
    /// <summary>Largest file upload through envd routes.</summary>
    public long MaxUploadBytes { get; init; } = 256L << 20;
    public int MaxSandboxesPerTenant { get; init; } = 50;
}
