using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes;

/// <summary>The lifecycle's configuration (airlockd maps its own options onto it).</summary>
public sealed record SandboxOptions
{
    public required string DataDir { get; init; }
    /// <summary>This node's name, recorded in every sandbox it runs.</summary>
    public string NodeId { get; init; } = "local";
    public string Domain { get; init; } = "localhost";
    public bool KeepSandboxesOnShutdown { get; init; }
    public int DefaultTimeoutSeconds { get; init; } = 300;
    public int MaxTimeoutSeconds { get; init; } = 86_400;
    public Risk DefaultRisk { get; init; } = Risk.High;
    public SandboxLimits DefaultLimits { get; init; } = new();
    public int MaxMemoryMiB { get; init; } = 4096;
    public int MaxCpuCount { get; init; } = 2;
    public int MaxDiskMiB { get; init; } = 16_384;
    public int MaxSandboxesPerTenant { get; init; } = 50;
    public int MaxTenantMemoryMiB { get; init; } = 16_384;
    public int MaxTenantVCpus { get; init; } = 8;
    public TimeSpan PausedRetention { get; init; } = TimeSpan.FromHours(8);
    public TimeSpan ReaperInterval { get; init; } = TimeSpan.FromMinutes(1);
    /// <summary>How long a timeout pause waits for envd requests in flight (a running command) to finish first.</summary>
    public TimeSpan TimeoutPauseGrace { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>How long the agent of a new or resumed sandbox has to answer.</summary>
    public TimeSpan AgentReadyTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>How often every running sandbox's agent is health-checked (<see cref="TimeSpan.Zero"/>: never).</summary>
    public TimeSpan HealthInterval { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>How long one health check waits for the agent's answer.</summary>
    public TimeSpan HealthTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Consecutive missed health checks after which a sandbox is marked unresponsive.</summary>
    public int HealthMisses { get; init; } = 3;

    public string SandboxesDir => Path.Combine(DataDir, "sandboxes");

    public string StateDir(string sandboxId) => Path.Combine(SandboxesDir, sandboxId);
}
